// The op registry: ONE table of every kernel implementation, keyed by (op, device, dtype) with the CPU
// ISA it needs and an optional supports(args) predicate. Lookups resolve an op to the best entry the
// CPU can run once (the engine at model load, cpu_kernels() in kernels/cpu/dispatch.cc); the same list
// drives the kernel tests (every entry against its reference) and the per-kernel benchmarks.
//
// Entry names are <op>_<dtype>_<device>[_<variant>], where <device> is "ref", "cpu" (portable OpenMP
// code), the ISA for CPU code compiled for one ("avx2", "avx512"), or "cuda":
//   layernorm_f32_avx512, attention_f32_avx2_flash, layernorm_backward_f32_cpu, convert_to_f32_bf16_ref,
//   layernorm_f32_cuda, attention_f32_cuda_flash.
// CPU and reference entries are host functions of OpTraits<Args>::Fn (resolve<Args>, checked_call);
// CUDA entries (CUDA builds only: kernels/cuda/registry_cuda.cc) take device pointers and a stream and
// are of OpTraits<Args>::CudaFn (resolve_cuda<Args>, resolve_cuda_kernels).
// For the conversions the dtype is the 16-bit side (convert_to_f32: f16|bf16 -> f32; convert_from_f32:
// f32 -> f16|bf16).
// Adding an op: its header (argument struct + check()), a ref, the variants, one Op value + name, and
// its rows in the table in kernels/registry.cc (plus a test and a bench case).
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "bert/dtype.h"
#include "bert/status.h"
#include "kernels/activation.h"
#include "kernels/attention.h"
#include "kernels/convert.h"
#include "kernels/embed.h"
#include "kernels/isa.h"
#include "kernels/layernorm.h"
#include "kernels/pooling.h"
#include "kernels/softmax_masked.h"
#include "kernels/train.h"

namespace bert::kernels {

enum class Op {
  kLayerNorm,
  kSoftmaxMasked,
  kActivation,
  kEmbed,
  kConvertToF32,    // fn: void(const uint16_t*, float*, int64_t)
  kConvertFromF32,  // fn: void(const float*, uint16_t*, int64_t)
  kPoolTokens,
  kAttention,
  kLayerNormBackward,
  kSoftmaxBackward,
  kActivationBackward,
  kEmbedBackward,
  kColumnSum,
  kCrossEntropy,   // fn: LossSum(const CrossEntropyArgs&)
  kBceWithLogits,  // fn: LossSum(const BceWithLogitsArgs&)
  kMse,            // fn: LossSum(const MseArgs&)
  kDropout,
};
inline constexpr int kNumOps = static_cast<int>(Op::kDropout) + 1;

// kRef: the scalar double-accumulating spec (runs on any CPU); kCpu: fast CPU code; kCuda: GPU kernels
// (registered in CUDA builds only; in other builds a CUDA lookup is a named NotFound error).
enum class Device { kRef, kCpu, kCuda };
// Whether entries of this device are host functions (OpTraits<Args>::Fn); kCuda entries are not.
constexpr bool host_callable(Device d) { return d != Device::kCuda; }

const char* op_name(Op op);              // "layernorm", "softmax_masked", ..., "attention"
const char* device_name(Device device);  // "ref", "cpu", "cuda"
const char* kernel_dtype_name(DType t);  // "f32", "f16", "bf16", ... (lower case, as in entry names)

using AnyKernelFn = void (*)();

struct KernelEntry {
  const char* name;      // <op>_<dtype>_<device>[_<variant>]
  Op op;
  Device device;
  DType dtype;
  CpuIsa isa;            // what the CPU must support to run it (kScalar: any x86-64; CUDA entries: kScalar)
  const char* variant;   // "" or a short tag ("flash")
  AnyKernelFn fn;        // the function, of the op's signature: OpTraits<Args>::Fn for kRef / kCpu,
                         // OpTraits<Args>::CudaFn for kCuda; use fn_as<F>() or cuda_fn<Args>()
  bool (*supports)(const void* args);  // nullptr: every args check() accepts; else takes the op's Args*
  template <class F>
  F fn_as() const {
    return reinterpret_cast<F>(fn);
  }
};

// Every registered entry, in table order: grouped by op; within an op refs first, then CPU entries by
// ascending ISA, then (CUDA builds) the CUDA entries. In CUDA builds this (like find_kernel and any
// lookup for Device::kCuda) loads the CUDA plugin (engine/runtime/cuda_plugin.h) for its rows; host
// lookups never do.
std::span<const KernelEntry> kernel_registry();
// The entry with this exact name, or nullptr.
const KernelEntry* find_kernel(std::string_view name);
// True when the CPU (not lowered by BERT_CPU_ISA) can run code needing `isa`.
bool cpu_has_isa(CpuIsa isa);

// The best entry for (op, device, dtype) whose ISA is <= max_isa: the highest ISA wins, the first
// registered among equals. Device::kCpu falls back to the kRef entry (a reference runs on every CPU).
// A missing combination is NotFound naming op, device, dtype and the ISA limit, and listing the
// entries the op has. Pure: callers resolve once and keep the pointer.
Result<const KernelEntry*> resolve_kernel(Op op, Device device, DType dtype, CpuIsa max_isa);
// Same with max_isa = detect_cpu_isa() (BERT_CPU_ISA honoured).
Result<const KernelEntry*> resolve_kernel(Op op, Device device, DType dtype);
// As resolve_kernel, but skipping entries whose supports(args) is false (args: the op's argument struct).
Result<const KernelEntry*> resolve_kernel_for(Op op, Device device, DType dtype, CpuIsa max_isa, const void* args);

// The reference entry an entry is tested against: (op, kRef, dtype); nullptr if none.
const KernelEntry* reference_of(const KernelEntry& e);

// The best Device::kCuda entry for (op, dtype) (with args: the first whose supports(args) accepts
// them). No CPU ISA applies and there is no fallback to a reference (it runs on the host). A missing
// combination is NotFound naming op, device 'cuda' and dtype, listing the entries the op has.
Result<const KernelEntry*> resolve_cuda_kernel(Op op, DType dtype, const void* args = nullptr);

namespace detail {
// The kCuda rows (kernels/cuda/registry_cuda.cc, in the CUDA plugin of CUDA builds), through the
// plugin (engine/runtime/cuda_loader: loading it; empty when it does not load); kernel_registry()
// merges them into the one table. Not for callers: use kernel_registry() / the resolvers.
std::span<const KernelEntry> cuda_kernel_entries();
}  // namespace detail

// ---- typed access: the op and the function types of each argument struct ---------------------------
// The CUDA launchers' options (kernels/cuda/train_kernels.h); only named here, so this header needs no
// CUDA header: callers of those entries include train_kernels.h.
namespace cuda {
struct EmbedPadding;
struct LossOptions;
}  // namespace cuda

// Fn: a host entry (kRef, kCpu). CudaFn: a kCuda entry, every pointer in the args a device pointer,
// `stream` a cudaStream_t or nullptr; it returns false when the launch failed (cuda_last_error() in
// kernels/cuda/cuda_kernels.h says why). Ops with CUDA-only options take them after the stream:
// the embedding backward its padding rows, the losses their LossOptions (result on the device, mean).
template <class Args>
struct OpTraits;
#define BERT_KERNEL_OP_TRAITS(ARGS, OP, RET, ...)                              \
  template <>                                                                 \
  struct OpTraits<ARGS> {                                                     \
    static constexpr Op op = OP;                                              \
    using Fn = RET (*)(const ARGS&);                                          \
    using CudaFn = bool (*)(const ARGS&, void* stream __VA_OPT__(, ) __VA_ARGS__); \
  };
BERT_KERNEL_OP_TRAITS(LayerNormArgs, Op::kLayerNorm, void)
BERT_KERNEL_OP_TRAITS(SoftmaxMaskedArgs, Op::kSoftmaxMasked, void)
BERT_KERNEL_OP_TRAITS(ActivationArgs, Op::kActivation, void)
BERT_KERNEL_OP_TRAITS(EmbedArgs, Op::kEmbed, void)
BERT_KERNEL_OP_TRAITS(PoolArgs, Op::kPoolTokens, void)
BERT_KERNEL_OP_TRAITS(AttentionArgs, Op::kAttention, void)
BERT_KERNEL_OP_TRAITS(LayerNormBackwardArgs, Op::kLayerNormBackward, void)
BERT_KERNEL_OP_TRAITS(SoftmaxBackwardArgs, Op::kSoftmaxBackward, void)
BERT_KERNEL_OP_TRAITS(ActivationBackwardArgs, Op::kActivationBackward, void)
BERT_KERNEL_OP_TRAITS(EmbedBackwardArgs, Op::kEmbedBackward, void, const cuda::EmbedPadding& padding)
BERT_KERNEL_OP_TRAITS(ColumnSumArgs, Op::kColumnSum, void)
BERT_KERNEL_OP_TRAITS(CrossEntropyArgs, Op::kCrossEntropy, LossSum, const cuda::LossOptions& options)
BERT_KERNEL_OP_TRAITS(BceWithLogitsArgs, Op::kBceWithLogits, LossSum, const cuda::LossOptions& options)
BERT_KERNEL_OP_TRAITS(MseArgs, Op::kMse, LossSum, const cuda::LossOptions& options)
BERT_KERNEL_OP_TRAITS(DropoutArgs, Op::kDropout, void)
#undef BERT_KERNEL_OP_TRAITS
using ConvertToF32Fn = void (*)(const uint16_t*, float*, int64_t);
using ConvertFromF32Fn = void (*)(const float*, uint16_t*, int64_t);

// What resolve<Args> and checked_call return for a device whose entries are not host functions.
Status host_only_error(Op op, Device device, DType dtype);

// The function of the best entry for this argument struct's op (resolved per call: resolve once and
// keep the function on hot paths).
// Host devices only: Device::kCuda is NotFound here (its entries are of another type: resolve_cuda).
template <class Args>
Result<typename OpTraits<Args>::Fn> resolve(Device device, DType dtype, CpuIsa max_isa) {
  if (!host_callable(device)) return host_only_error(OpTraits<Args>::op, device, dtype);
  auto e = resolve_kernel(OpTraits<Args>::op, device, dtype, max_isa);
  if (!e.ok()) return e.status();
  return (*e)->template fn_as<typename OpTraits<Args>::Fn>();
}

// The launcher of the best kCuda entry for this argument struct's op (resolve once, keep the pointer).
template <class Args>
Result<typename OpTraits<Args>::CudaFn> resolve_cuda(DType dtype) {
  auto e = resolve_cuda_kernel(OpTraits<Args>::op, dtype);
  if (!e.ok()) return e.status();
  return (*e)->template fn_as<typename OpTraits<Args>::CudaFn>();
}

// The launcher of a kCuda entry of Args's op, or nullptr when `e` is not one (wrong device or op).
template <class Args>
typename OpTraits<Args>::CudaFn cuda_fn(const KernelEntry& e) {
  if (e.device != Device::kCuda || e.op != OpTraits<Args>::op) return nullptr;
  return e.template fn_as<typename OpTraits<Args>::CudaFn>();
}

// Every CUDA kernel a device backend calls (engine/runtime/cuda/cuda_backend.cc), resolved once
// from the registry for one dtype: the CUDA counterpart of CpuKernels (kernels/cpu/dispatch.h).
// GEMMs (kernels/cuda/cuda_gemm.h), memory, copies and the fused training attention are not
// registry ops and stay direct calls.
struct CudaKernels {
  DType dtype = DType::kF32;
  OpTraits<LayerNormArgs>::CudaFn layernorm = nullptr;
  OpTraits<SoftmaxMaskedArgs>::CudaFn softmax_masked = nullptr;
  OpTraits<ActivationArgs>::CudaFn activation = nullptr;
  OpTraits<EmbedArgs>::CudaFn embed = nullptr;
  OpTraits<AttentionArgs>::CudaFn attention = nullptr;
  OpTraits<LayerNormBackwardArgs>::CudaFn layernorm_backward = nullptr;
  OpTraits<SoftmaxBackwardArgs>::CudaFn softmax_backward = nullptr;
  OpTraits<ActivationBackwardArgs>::CudaFn activation_backward = nullptr;
  OpTraits<EmbedBackwardArgs>::CudaFn embed_backward = nullptr;
  OpTraits<ColumnSumArgs>::CudaFn column_sum = nullptr;
  OpTraits<DropoutArgs>::CudaFn dropout = nullptr;
  OpTraits<CrossEntropyArgs>::CudaFn cross_entropy = nullptr;
  OpTraits<BceWithLogitsArgs>::CudaFn bce_with_logits = nullptr;
  OpTraits<MseArgs>::CudaFn mse = nullptr;
};
// The ops CudaKernels holds, in field order (what a CUDA backend needs of the registry).
std::span<const Op> cuda_backend_ops();
// Every field of CudaKernels resolved with resolve_cuda_kernel(op, dtype); the first op without a
// kCuda entry is the NotFound error (naming op, device and dtype). Always that error in builds
// without CUDA (no kCuda entries).
Result<CudaKernels> resolve_cuda_kernels(DType dtype);

// check(args), then the best entry that supports these args, then the call: for callers off the hot
// path (tools, tests). Returns check()'s or the lookup's error, or OK. Host devices only (a kCuda
// entry takes device pointers and a stream): Device::kCuda is NotFound.
template <class Args>
Status checked_call(const Args& args, Device device = Device::kCpu, DType dtype = DType::kF32) {
  if (Status st = check(args); !st.ok()) return st;
  if (!host_callable(device)) return host_only_error(OpTraits<Args>::op, device, dtype);
  auto e = resolve_kernel_for(OpTraits<Args>::op, device, dtype, detect_cpu_isa(), &args);
  if (!e.ok()) return e.status();
  (*e)->template fn_as<typename OpTraits<Args>::Fn>()(args);
  return Status::Ok();
}

}  // namespace bert::kernels
