// Scaled, key-masked softmax over the last axis of attention scores: argument struct and every ISA variant.
#pragma once

#include <cstdint>

#include "bert/status.h"

namespace bert::kernels {

struct SoftmaxMaskedArgs {
  float* scores;            // [batch, heads, q_len, k_len] softmax over the last axis, in place
  const int32_t* key_mask;  // [batch, k_len]: nonzero = attend; nullptr = attend to all
  int64_t batch = 0, heads = 0, q_len = 0, k_len = 0;
  float scale = 1.f;  // scores are multiplied by scale before the softmax
};

// scores non-null when there is work; every size >= 0 with the element count representable in bytes;
// key_mask disjoint from scores.
Status check(const SoftmaxMaskedArgs& a);

// Masked keys get probability exactly 0; a row whose keys are ALL masked gets the uniform
// distribution 1/k_len over all keys (what HF's additive finfo.min mask gives).
void softmax_masked_f32_ref(const SoftmaxMaskedArgs& a);
void softmax_masked_f32_avx2(const SoftmaxMaskedArgs& a);
void softmax_masked_f32_avx512(const SoftmaxMaskedArgs& a);

}  // namespace bert::kernels
