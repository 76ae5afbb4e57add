// LayerNorm over the last axis (optionally of x + residual): argument struct and every ISA variant.
#pragma once

#include <cstdint>

namespace bert::kernels {

struct LayerNormArgs {
  const float* x;         // [rows, cols]
  const float* residual;  // [rows, cols] or nullptr: normalises x + residual
  const float* gamma;     // [cols]
  const float* beta;      // [cols]
  float* y;               // [rows, cols]; may alias x (in place) or residual
  int64_t rows = 0, cols = 0;
  float eps = 1e-12f;
};

// Biased variance like torch.nn.LayerNorm; two-pass (mean, then centred variance) for accuracy.
// The _ref variant accumulates in double and is the specification.
void layernorm_f32_ref(const LayerNormArgs& a);
void layernorm_f32_avx2(const LayerNormArgs& a);
void layernorm_f32_avx512(const LayerNormArgs& a);

}  // namespace bert::kernels
