// AVX2 training kernels (kernels/train.h): the portable loops of train_portable.h compiled for AVX2 + FMA.
#include "kernels/cpu/train_portable.h"

#ifndef __AVX2__
#error "compile this file with the AVX2 flags (see CMakeLists.txt)"
#endif

namespace bert::kernels {

void layernorm_backward_f32_avx2(const LayerNormBackwardArgs& a) { portable::layernorm_backward(a); }
void softmax_backward_f32_avx2(const SoftmaxBackwardArgs& a) { portable::softmax_backward(a); }
void activation_backward_f32_avx2(const ActivationBackwardArgs& a) { portable::activation_backward(a); }
void embed_backward_f32_avx2(const EmbedBackwardArgs& a) { portable::embed_backward(a); }
void column_sum_f32_avx2(const ColumnSumArgs& a) { portable::column_sum(a); }
LossSum cross_entropy_f32_avx2(const CrossEntropyArgs& a) { return portable::cross_entropy(a); }

}  // namespace bert::kernels
