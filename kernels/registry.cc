// The op registry's table (every kernel implementation, one row each) and its lookups.
#include "kernels/registry.h"

#include <algorithm>
#include <atomic>
#include <string>
#include <vector>

#ifdef BERT_HAVE_CUDA
#include "engine/runtime/cuda_plugin.h"
#endif

namespace bert::kernels {

namespace {

template <class F>
AnyKernelFn any(F f) {
  return reinterpret_cast<AnyKernelFn>(f);
}

bool attention_flash_supports(const void* args) {
  const auto& a = *static_cast<const AttentionArgs*>(args);
  return a.head_dim <= kAttentionMaxHeadDim;
}

constexpr CpuIsa kAny = CpuIsa::kScalar;
constexpr CpuIsa kAvx2 = CpuIsa::kAvx2;
constexpr CpuIsa kAvx512 = CpuIsa::kAvx512;
constexpr Device kRef = Device::kRef;
constexpr Device kCpu = Device::kCpu;
constexpr DType kF32 = DType::kF32;
constexpr DType kF16 = DType::kF16;
constexpr DType kBF16 = DType::kBF16;

// The host rows. Refs first within an op, then by ascending ISA (resolve_kernel does not depend on this
// order except for ties, but the tests and benches list entries in it). Inside a function so that it
// is initialised on first use, whatever the order of static initialisation.
std::span<const KernelEntry> host_table() {
  static const KernelEntry kTable[] = {
    // name                          op                      device dtype isa    variant fn
    {"layernorm_f32_ref", Op::kLayerNorm, kRef, kF32, kAny, "", any(layernorm_f32_ref), nullptr},
    {"layernorm_f32_avx2", Op::kLayerNorm, kCpu, kF32, kAvx2, "", any(layernorm_f32_avx2), nullptr},
    {"layernorm_f32_avx512", Op::kLayerNorm, kCpu, kF32, kAvx512, "", any(layernorm_f32_avx512), nullptr},

    {"softmax_masked_f32_ref", Op::kSoftmaxMasked, kRef, kF32, kAny, "", any(softmax_masked_f32_ref), nullptr},
    {"softmax_masked_f32_avx2", Op::kSoftmaxMasked, kCpu, kF32, kAvx2, "", any(softmax_masked_f32_avx2), nullptr},
    {"softmax_masked_f32_avx512", Op::kSoftmaxMasked, kCpu, kF32, kAvx512, "", any(softmax_masked_f32_avx512),
     nullptr},

    {"activation_f32_ref", Op::kActivation, kRef, kF32, kAny, "", any(activation_f32_ref), nullptr},
    {"activation_f32_avx2", Op::kActivation, kCpu, kF32, kAvx2, "", any(activation_f32_avx2), nullptr},
    {"activation_f32_avx512", Op::kActivation, kCpu, kF32, kAvx512, "", any(activation_f32_avx512), nullptr},

    {"embed_f32_ref", Op::kEmbed, kRef, kF32, kAny, "", any(embed_f32_ref), nullptr},
    {"embed_f32_avx2", Op::kEmbed, kCpu, kF32, kAvx2, "", any(embed_f32_avx2), nullptr},
    {"embed_f32_avx512", Op::kEmbed, kCpu, kF32, kAvx512, "", any(embed_f32_avx512), nullptr},

    {"convert_to_f32_f16_ref", Op::kConvertToF32, kRef, kF16, kAny, "", any(convert_f16_to_f32_ref), nullptr},
    {"convert_to_f32_f16_avx2", Op::kConvertToF32, kCpu, kF16, kAvx2, "", any(convert_f16_to_f32_avx2), nullptr},
    {"convert_to_f32_f16_avx512", Op::kConvertToF32, kCpu, kF16, kAvx512, "", any(convert_f16_to_f32_avx512),
     nullptr},
    {"convert_to_f32_bf16_ref", Op::kConvertToF32, kRef, kBF16, kAny, "", any(convert_bf16_to_f32_ref), nullptr},
    {"convert_to_f32_bf16_avx2", Op::kConvertToF32, kCpu, kBF16, kAvx2, "", any(convert_bf16_to_f32_avx2), nullptr},
    {"convert_to_f32_bf16_avx512", Op::kConvertToF32, kCpu, kBF16, kAvx512, "", any(convert_bf16_to_f32_avx512),
     nullptr},
    {"convert_from_f32_f16_ref", Op::kConvertFromF32, kRef, kF16, kAny, "", any(convert_f32_to_f16_ref), nullptr},
    {"convert_from_f32_f16_avx2", Op::kConvertFromF32, kCpu, kF16, kAvx2, "", any(convert_f32_to_f16_avx2),
     nullptr},
    {"convert_from_f32_f16_avx512", Op::kConvertFromF32, kCpu, kF16, kAvx512, "", any(convert_f32_to_f16_avx512),
     nullptr},
    {"convert_from_f32_bf16_ref", Op::kConvertFromF32, kRef, kBF16, kAny, "", any(convert_f32_to_bf16_ref), nullptr},
    {"convert_from_f32_bf16_avx2", Op::kConvertFromF32, kCpu, kBF16, kAvx2, "", any(convert_f32_to_bf16_avx2),
     nullptr},
    {"convert_from_f32_bf16_avx512", Op::kConvertFromF32, kCpu, kBF16, kAvx512, "", any(convert_f32_to_bf16_avx512),
     nullptr},

    {"pool_tokens_f32_ref", Op::kPoolTokens, kRef, kF32, kAny, "", any(pool_tokens_f32_ref), nullptr},

    {"attention_f32_ref", Op::kAttention, kRef, kF32, kAny, "", any(attention_f32_ref), nullptr},
    {"attention_f32_avx2_flash", Op::kAttention, kCpu, kF32, kAvx2, "flash", any(attention_f32_avx2_flash),
     attention_flash_supports},
    {"attention_f32_avx512_flash", Op::kAttention, kCpu, kF32, kAvx512, "flash", any(attention_f32_avx512_flash),
     attention_flash_supports},

    // Training (kernels/train.h): the CPU variants are portable OpenMP code compiled per ISA
    // (kernels/cpu/train_portable.h), plus AVX-512 dropout and erf-GELU backward (train_avx512.cc).
    {"layernorm_backward_f32_ref", Op::kLayerNormBackward, kRef, kF32, kAny, "", any(layernorm_backward_f32_ref),
     nullptr},
    {"layernorm_backward_f32_cpu", Op::kLayerNormBackward, kCpu, kF32, kAny, "", any(layernorm_backward_f32),
     nullptr},
    {"layernorm_backward_f32_avx2", Op::kLayerNormBackward, kCpu, kF32, kAvx2, "", any(layernorm_backward_f32_avx2),
     nullptr},
    {"layernorm_backward_f32_avx512", Op::kLayerNormBackward, kCpu, kF32, kAvx512, "",
     any(layernorm_backward_f32_avx512), nullptr},
    {"softmax_backward_f32_ref", Op::kSoftmaxBackward, kRef, kF32, kAny, "", any(softmax_backward_f32_ref), nullptr},
    {"softmax_backward_f32_cpu", Op::kSoftmaxBackward, kCpu, kF32, kAny, "", any(softmax_backward_f32), nullptr},
    {"softmax_backward_f32_avx2", Op::kSoftmaxBackward, kCpu, kF32, kAvx2, "", any(softmax_backward_f32_avx2),
     nullptr},
    {"softmax_backward_f32_avx512", Op::kSoftmaxBackward, kCpu, kF32, kAvx512, "", any(softmax_backward_f32_avx512),
     nullptr},
    {"activation_backward_f32_ref", Op::kActivationBackward, kRef, kF32, kAny, "", any(activation_backward_f32_ref),
     nullptr},
    {"activation_backward_f32_cpu", Op::kActivationBackward, kCpu, kF32, kAny, "", any(activation_backward_f32),
     nullptr},
    {"activation_backward_f32_avx2", Op::kActivationBackward, kCpu, kF32, kAvx2, "",
     any(activation_backward_f32_avx2), nullptr},
    {"activation_backward_f32_avx512", Op::kActivationBackward, kCpu, kF32, kAvx512, "",
     any(activation_backward_f32_avx512), nullptr},
    {"embed_backward_f32_ref", Op::kEmbedBackward, kRef, kF32, kAny, "", any(embed_backward_f32_ref), nullptr},
    {"embed_backward_f32_cpu", Op::kEmbedBackward, kCpu, kF32, kAny, "", any(embed_backward_f32), nullptr},
    {"embed_backward_f32_avx2", Op::kEmbedBackward, kCpu, kF32, kAvx2, "", any(embed_backward_f32_avx2), nullptr},
    {"embed_backward_f32_avx512", Op::kEmbedBackward, kCpu, kF32, kAvx512, "", any(embed_backward_f32_avx512),
     nullptr},
    {"column_sum_f32_ref", Op::kColumnSum, kRef, kF32, kAny, "", any(column_sum_f32_ref), nullptr},
    {"column_sum_f32_cpu", Op::kColumnSum, kCpu, kF32, kAny, "", any(column_sum_f32), nullptr},
    {"column_sum_f32_avx2", Op::kColumnSum, kCpu, kF32, kAvx2, "", any(column_sum_f32_avx2), nullptr},
    {"column_sum_f32_avx512", Op::kColumnSum, kCpu, kF32, kAvx512, "", any(column_sum_f32_avx512), nullptr},
    {"cross_entropy_f32_ref", Op::kCrossEntropy, kRef, kF32, kAny, "", any(cross_entropy_f32_ref), nullptr},
    {"cross_entropy_f32_cpu", Op::kCrossEntropy, kCpu, kF32, kAny, "", any(cross_entropy_f32), nullptr},
    {"cross_entropy_f32_avx2", Op::kCrossEntropy, kCpu, kF32, kAvx2, "", any(cross_entropy_f32_avx2), nullptr},
    {"cross_entropy_f32_avx512", Op::kCrossEntropy, kCpu, kF32, kAvx512, "", any(cross_entropy_f32_avx512),
     nullptr},
    {"bce_with_logits_f32_ref", Op::kBceWithLogits, kRef, kF32, kAny, "", any(bce_with_logits_f32_ref), nullptr},
    {"mse_f32_ref", Op::kMse, kRef, kF32, kAny, "", any(mse_f32_ref), nullptr},
    {"dropout_f32_ref", Op::kDropout, kRef, kF32, kAny, "", any(dropout_f32_ref), nullptr},
    {"dropout_f32_cpu", Op::kDropout, kCpu, kF32, kAny, "", any(dropout_f32), nullptr},
    {"dropout_f32_avx512", Op::kDropout, kCpu, kF32, kAvx512, "", any(dropout_f32_avx512), nullptr},
  };
  return kTable;
}

// Rows with each op's rows together, keeping their order within an op.
std::vector<KernelEntry> grouped(std::span<const KernelEntry> host, std::span<const KernelEntry> cuda) {
  std::vector<KernelEntry> t(host.begin(), host.end());
  t.insert(t.end(), cuda.begin(), cuda.end());
  std::stable_sort(t.begin(), t.end(), [](const KernelEntry& a, const KernelEntry& b) {
    return static_cast<int>(a.op) < static_cast<int>(b.op);
  });
  return t;
}

// The host rows alone. Built once.
std::span<const KernelEntry> host_rows() {
  static const std::vector<KernelEntry> t = grouped(host_table(), {});
  return t;
}

#ifdef BERT_HAVE_CUDA
// CUDA builds: the host rows and the CUDA plugin's kCuda rows (host rows first within an op), built on
// the first request for CUDA rows, which loads the plugin (engine/runtime/cuda_plugin.h); until then
// the table is the host rows, so a process that never asks for CUDA maps no CUDA library. Never freed:
// entries found before the merge stay valid (they are then other objects than the merged table's).
std::atomic<const std::vector<KernelEntry>*> g_merged{nullptr};

std::span<const KernelEntry> merged_rows() {
  static const std::vector<KernelEntry>* t = [] {
    auto* all = new std::vector<KernelEntry>(grouped(host_table(), detail::cuda_kernel_entries()));
    g_merged.store(all, std::memory_order_release);
    return all;
  }();
  return *t;
}
#endif

// The one table as far as it is loaded; with_cuda: with the CUDA rows (CUDA builds: loading them).
std::span<const KernelEntry> table(bool with_cuda = false) {
#ifdef BERT_HAVE_CUDA
  if (with_cuda) return merged_rows();
  if (const std::vector<KernelEntry>* all = g_merged.load(std::memory_order_acquire)) return *all;
#else
  (void)with_cuda;
#endif
  return host_rows();
}

std::string needs_tag(const KernelEntry& e) {
  if (e.device == Device::kCuda) return "device cuda";
  return std::string("needs ") + (e.isa == CpuIsa::kScalar ? "any" : cpu_isa_name(e.isa));
}

// The entries registered for an op, for error messages: "name (needs avx2), name (device cuda)".
std::string registered_for(Op op) {
  std::string have;
  for (const KernelEntry& e : table()) {
    if (e.op != op) continue;
    have += have.empty() ? "" : ", ";
    have += e.name;
    have += " (" + needs_tag(e) + ")";
  }
  return have.empty() ? std::string("none") : have;
}

Result<const KernelEntry*> resolve_impl(Op op, Device device, DType dtype, CpuIsa max_isa, const void* args) {
  const KernelEntry* best = nullptr;
  const KernelEntry* ref = nullptr;
  for (const KernelEntry& e : table(device == Device::kCuda)) {
    if (e.op != op || e.dtype != dtype) continue;
    if (args && e.supports && !e.supports(args)) continue;
    if (device == Device::kCpu && e.device == Device::kRef && !ref) ref = &e;
    if (e.device != device || static_cast<int>(e.isa) > static_cast<int>(max_isa)) continue;
    if (!best || static_cast<int>(e.isa) > static_cast<int>(best->isa)) best = &e;
  }
  if (!best) best = ref;
  if (best) return best;
  std::string limits;
  if (device != Device::kCuda) limits = std::string("CPU ISA up to ") + cpu_isa_name(max_isa);
#ifndef BERT_HAVE_CUDA
  if (device == Device::kCuda) limits = "this build has no CUDA";
#else
  if (device == Device::kCuda) {
    if (auto plugin = runtime::cuda_plugin(); !plugin.ok()) limits = plugin.status().message();
  }
#endif
  if (args) limits += limits.empty() ? "for these arguments" : ", for these arguments";
  return not_found(std::string("no kernel for op '") + op_name(op) + "' on device '" + device_name(device) +
                   "' with dtype '" + kernel_dtype_name(dtype) + "'" + (limits.empty() ? "" : " (" + limits + ")") +
                   "; registered for this op: " + registered_for(op));
}

template <class Args>
Status resolve_into(DType dtype, typename OpTraits<Args>::CudaFn* out) {
  auto fn = resolve_cuda<Args>(dtype);
  if (!fn.ok()) return fn.status();
  *out = *fn;
  return Status::Ok();
}

constexpr Op kCudaBackendOps[] = {
    Op::kLayerNorm,         Op::kSoftmaxMasked,  Op::kActivation,         Op::kEmbed,
    Op::kAttention,         Op::kLayerNormBackward, Op::kSoftmaxBackward, Op::kActivationBackward,
    Op::kEmbedBackward,     Op::kColumnSum,      Op::kDropout,            Op::kCrossEntropy,
    Op::kBceWithLogits,     Op::kMse,
};

}  // namespace

const char* op_name(Op op) {
  switch (op) {
    case Op::kLayerNorm: return "layernorm";
    case Op::kSoftmaxMasked: return "softmax_masked";
    case Op::kActivation: return "activation";
    case Op::kEmbed: return "embed";
    case Op::kConvertToF32: return "convert_to_f32";
    case Op::kConvertFromF32: return "convert_from_f32";
    case Op::kPoolTokens: return "pool_tokens";
    case Op::kAttention: return "attention";
    case Op::kLayerNormBackward: return "layernorm_backward";
    case Op::kSoftmaxBackward: return "softmax_backward";
    case Op::kActivationBackward: return "activation_backward";
    case Op::kEmbedBackward: return "embed_backward";
    case Op::kColumnSum: return "column_sum";
    case Op::kCrossEntropy: return "cross_entropy";
    case Op::kBceWithLogits: return "bce_with_logits";
    case Op::kMse: return "mse";
    case Op::kDropout: return "dropout";
  }
  return "unknown_op";
}

const char* device_name(Device device) {
  switch (device) {
    case Device::kRef: return "ref";
    case Device::kCpu: return "cpu";
    case Device::kCuda: return "cuda";
  }
  return "unknown_device";
}

const char* kernel_dtype_name(DType t) {
  switch (t) {
    case DType::kF32: return "f32";
    case DType::kF16: return "f16";
    case DType::kBF16: return "bf16";
    case DType::kF64: return "f64";
    case DType::kI64: return "i64";
    case DType::kI32: return "i32";
    case DType::kI16: return "i16";
    case DType::kI8: return "i8";
    case DType::kU8: return "u8";
    case DType::kBool: return "bool";
  }
  return "unknown_dtype";
}

std::span<const KernelEntry> kernel_registry() { return table(true); }

const KernelEntry* find_kernel(std::string_view name) {
  for (const KernelEntry& e : table(true)) {
    if (name == e.name) return &e;
  }
  return nullptr;
}

bool cpu_has_isa(CpuIsa isa) { return static_cast<int>(cpu_isa_supported()) >= static_cast<int>(isa); }

Result<const KernelEntry*> resolve_kernel(Op op, Device device, DType dtype, CpuIsa max_isa) {
  return resolve_impl(op, device, dtype, max_isa, nullptr);
}

Result<const KernelEntry*> resolve_kernel(Op op, Device device, DType dtype) {
  return resolve_impl(op, device, dtype, detect_cpu_isa(), nullptr);
}

Result<const KernelEntry*> resolve_kernel_for(Op op, Device device, DType dtype, CpuIsa max_isa, const void* args) {
  return resolve_impl(op, device, dtype, max_isa, args);
}

const KernelEntry* reference_of(const KernelEntry& e) {
  for (const KernelEntry& r : table()) {
    if (r.op == e.op && r.dtype == e.dtype && r.device == Device::kRef) return &r;
  }
  return nullptr;
}

Result<const KernelEntry*> resolve_cuda_kernel(Op op, DType dtype, const void* args) {
  return resolve_impl(op, Device::kCuda, dtype, CpuIsa::kScalar, args);
}

Status host_only_error(Op op, Device device, DType dtype) {
  return not_found(std::string("no host-callable kernel for op '") + op_name(op) + "' on device '" +
                   device_name(device) + "' with dtype '" + kernel_dtype_name(dtype) +
                   "': its entries take device pointers and a stream (use resolve_cuda)");
}

std::span<const Op> cuda_backend_ops() { return kCudaBackendOps; }

Result<CudaKernels> resolve_cuda_kernels(DType dtype) {
  CudaKernels k;
  k.dtype = dtype;
  for (Status st : {resolve_into<LayerNormArgs>(dtype, &k.layernorm),
                    resolve_into<SoftmaxMaskedArgs>(dtype, &k.softmax_masked),
                    resolve_into<ActivationArgs>(dtype, &k.activation), resolve_into<EmbedArgs>(dtype, &k.embed),
                    resolve_into<AttentionArgs>(dtype, &k.attention),
                    resolve_into<LayerNormBackwardArgs>(dtype, &k.layernorm_backward),
                    resolve_into<SoftmaxBackwardArgs>(dtype, &k.softmax_backward),
                    resolve_into<ActivationBackwardArgs>(dtype, &k.activation_backward),
                    resolve_into<EmbedBackwardArgs>(dtype, &k.embed_backward),
                    resolve_into<ColumnSumArgs>(dtype, &k.column_sum), resolve_into<DropoutArgs>(dtype, &k.dropout),
                    resolve_into<CrossEntropyArgs>(dtype, &k.cross_entropy),
                    resolve_into<BceWithLogitsArgs>(dtype, &k.bce_with_logits), resolve_into<MseArgs>(dtype, &k.mse)}) {
    if (!st.ok()) return st;
  }
  return k;
}

}  // namespace bert::kernels
