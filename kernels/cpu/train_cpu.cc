// The baseline-ISA CPU training kernels (kernels/train.h, the variants without an ISA suffix): the
// portable loops of train_portable.h compiled for plain x86-64, and the portable dropout.
#include <cstring>

#include "kernels/cpu/train_portable.h"

namespace bert::kernels {

void layernorm_backward_f32(const LayerNormBackwardArgs& a) { portable::layernorm_backward(a); }
void softmax_backward_f32(const SoftmaxBackwardArgs& a) { portable::softmax_backward(a); }
void activation_backward_f32(const ActivationBackwardArgs& a) { portable::activation_backward(a); }
void embed_backward_f32(const EmbedBackwardArgs& a) { portable::embed_backward(a); }
void column_sum_f32(const ColumnSumArgs& a) { portable::column_sum(a); }
LossSum cross_entropy_f32(const CrossEntropyArgs& a) { return portable::cross_entropy(a); }

void dropout_f32(const DropoutArgs& a) {
  const float* src = a.src ? a.src : a.x;
  if (a.p <= 0.f) {
    if (src != a.x && a.n > 0) std::memcpy(a.x, src, sizeof(float) * a.n);
    return;
  }
  const double inv_keep = 1.0 / (1.0 - static_cast<double>(a.p));
  float* x = a.x;
#pragma omp parallel for schedule(static) if (a.n >= portable::kParallelMinWork)
  for (int64_t i = 0; i < a.n; ++i) {
    const bool keep = dropout_keep(a.seed, a.offset + static_cast<uint64_t>(i), a.p);
    x[i] = keep ? static_cast<float>(src[i] * inv_keep) : 0.f;
  }
}

}  // namespace bert::kernels
