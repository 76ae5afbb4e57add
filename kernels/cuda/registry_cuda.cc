// The CUDA rows of the op registry (kernels/registry.h): every launcher of kernels/cuda that implements a
// registry op, as a Device::kCuda entry of the op's OpTraits<Args>::CudaFn type. Compiled in CUDA builds
// only, into the CUDA plugin (CMakeLists.txt); kernel_registry() merges these rows into the one table. Launchers whose extra
// parameters (a workspace, defaulted) are not part of CudaFn are called through one-line adapters here;
// the fused attention adapter maps the registry's AttentionArgs onto kernels/cuda/attention.h's.
#include "kernels/registry.h"

#include "engine/runtime/cuda/cuda_backend.h"

#include "kernels/cuda/attention.h"
#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/train_kernels.h"

namespace bert::kernels {

namespace {

namespace kc = ::bert::kernels::cuda;

// Type-checked at compile time: the function must be of the op's CudaFn type.
template <class Args>
AnyKernelFn cuda_entry_fn(typename OpTraits<Args>::CudaFn f) {
  return reinterpret_cast<AnyKernelFn>(f);
}

// kernels/cuda/attention.h's limits (it refuses anything else before any CUDA call).
bool attention_cuda_supports(const void* args) {
  const auto& a = *static_cast<const AttentionArgs*>(args);
  return a.head_dim >= 1 && a.head_dim <= 128 && a.heads >= 1 && a.heads <= 65535 && a.batch <= 65535;
}

bool attention_f32_cuda_flash(const AttentionArgs& a, void* stream) {
  kc::AttentionArgs k;
  const int64_t width = a.heads * a.head_dim;
  k.q = a.q, k.k = a.k, k.v = a.v, k.out = a.out;
  k.ld_qkv = a.ld ? a.ld : width;  // 0 means heads*head_dim in kernels/attention.h
  k.ld_out = a.ldo ? a.ldo : width;
  k.key_mask = a.key_mask, k.seq_starts = a.seq_starts;
  k.batch = a.batch, k.seq = a.seq, k.heads = a.heads, k.head_dim = a.head_dim, k.scale = a.scale;
  k.dtype = DType::kF32;
  return kc::attention(k, stream);
}

bool layernorm_backward_f32_cuda(const LayerNormBackwardArgs& a, void* stream) {
  return kc::layernorm_backward_f32(a, stream);
}
bool column_sum_f32_cuda(const ColumnSumArgs& a, void* stream) { return kc::column_sum_f32(a, stream); }
bool embed_backward_f32_cuda(const EmbedBackwardArgs& a, void* stream, const kc::EmbedPadding& padding) {
  return kc::embed_backward_f32(a, stream, {}, padding);
}
bool cross_entropy_f32_cuda(const CrossEntropyArgs& a, void* stream, const kc::LossOptions& o) {
  return kc::cross_entropy_f32(a, o, stream);
}
bool bce_with_logits_f32_cuda(const BceWithLogitsArgs& a, void* stream, const kc::LossOptions& o) {
  return kc::bce_with_logits_f32(a, o, stream);
}
bool mse_f32_cuda(const MseArgs& a, void* stream, const kc::LossOptions& o) { return kc::mse_f32(a, o, stream); }

constexpr Device kCuda = Device::kCuda;
constexpr DType kF32 = DType::kF32;
constexpr CpuIsa kAny = CpuIsa::kScalar;  // no CPU requirement

// The kCuda rows, handed to the engine through the plugin's table (engine/runtime/cuda_plugin.h).
std::span<const KernelEntry> cuda_rows() {
  static const KernelEntry kCudaTable[] = {
      {"layernorm_f32_cuda", Op::kLayerNorm, kCuda, kF32, kAny, "",
       cuda_entry_fn<LayerNormArgs>(kc::layernorm_f32), nullptr},
      {"softmax_masked_f32_cuda", Op::kSoftmaxMasked, kCuda, kF32, kAny, "",
       cuda_entry_fn<SoftmaxMaskedArgs>(kc::softmax_masked_f32), nullptr},
      {"activation_f32_cuda", Op::kActivation, kCuda, kF32, kAny, "",
       cuda_entry_fn<ActivationArgs>(kc::activation_f32), nullptr},
      {"embed_f32_cuda", Op::kEmbed, kCuda, kF32, kAny, "", cuda_entry_fn<EmbedArgs>(kc::embed_f32), nullptr},
      {"attention_f32_cuda_flash", Op::kAttention, kCuda, kF32, kAny, "flash",
       cuda_entry_fn<AttentionArgs>(attention_f32_cuda_flash), attention_cuda_supports},
      {"layernorm_backward_f32_cuda", Op::kLayerNormBackward, kCuda, kF32, kAny, "",
       cuda_entry_fn<LayerNormBackwardArgs>(layernorm_backward_f32_cuda), nullptr},
      {"softmax_backward_f32_cuda", Op::kSoftmaxBackward, kCuda, kF32, kAny, "",
       cuda_entry_fn<SoftmaxBackwardArgs>(kc::softmax_backward_f32), nullptr},
      {"activation_backward_f32_cuda", Op::kActivationBackward, kCuda, kF32, kAny, "",
       cuda_entry_fn<ActivationBackwardArgs>(kc::activation_backward_f32), nullptr},
      {"embed_backward_f32_cuda", Op::kEmbedBackward, kCuda, kF32, kAny, "",
       cuda_entry_fn<EmbedBackwardArgs>(embed_backward_f32_cuda), nullptr},
      {"column_sum_f32_cuda", Op::kColumnSum, kCuda, kF32, kAny, "",
       cuda_entry_fn<ColumnSumArgs>(column_sum_f32_cuda), nullptr},
      {"cross_entropy_f32_cuda", Op::kCrossEntropy, kCuda, kF32, kAny, "",
       cuda_entry_fn<CrossEntropyArgs>(cross_entropy_f32_cuda), nullptr},
      {"bce_with_logits_f32_cuda", Op::kBceWithLogits, kCuda, kF32, kAny, "",
       cuda_entry_fn<BceWithLogitsArgs>(bce_with_logits_f32_cuda), nullptr},
      {"mse_f32_cuda", Op::kMse, kCuda, kF32, kAny, "", cuda_entry_fn<MseArgs>(mse_f32_cuda), nullptr},
      {"dropout_f32_cuda", Op::kDropout, kCuda, kF32, kAny, "", cuda_entry_fn<DropoutArgs>(kc::dropout_f32),
       nullptr},
  };
  return kCudaTable;
}

}  // namespace

}  // namespace bert::kernels

namespace bert::cuda_plugin {

std::span<const kernels::KernelEntry> cuda_kernel_entries() { return kernels::cuda_rows(); }

}  // namespace bert::cuda_plugin
