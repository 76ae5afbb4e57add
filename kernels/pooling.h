// Sentence embeddings from token states (what sentence-transformers' Pooling layer does): CLS, masked
// mean or masked max over the sequence, optionally L2-normalised.
#pragma once

#include <cstdint>

#include "bert/status.h"

namespace bert::kernels {

enum class TokenPooling { kCls, kMean, kMax };

struct PoolArgs {
  const float* hidden;   // [batch, seq, width]
  const int32_t* mask;   // [batch, seq]: nonzero = token; nullptr = every position is a token
  float* out;            // [batch, width]
  int64_t batch = 0, seq = 0, width = 0;
  TokenPooling kind = TokenPooling::kMean;
  bool normalize = false;  // out /= max(||out||_2, 1e-12), as torch.nn.functional.normalize
};

// hidden and out non-null when there is work; sizes >= 0 and representable; out disjoint from hidden and mask.
Status check(const PoolArgs& a);

// kCls: the first position whatever the mask. kMean: sum over tokens / token count. kMax: the
// largest value over tokens. A row without any token pools to zeros (mean and max).
// Accumulates in double; cheap next to the encoder, so this plain loop is the only variant.
void pool_tokens_f32_ref(const PoolArgs& a);

}  // namespace bert::kernels
