// LayerNorm over the last axis (optionally of x + residual): argument struct and every ISA variant.
#pragma once

#include <cstdint>

#include "bert/status.h"

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

// What every implementation requires (kernels/checks.cc): x, gamma, beta, y non-null when rows*cols > 0;
// rows, cols >= 0 and rows*cols*4 bytes representable; y equal to x or residual or disjoint from them
// (no partial overlap); y disjoint from gamma and beta. OK, or InvalidArgument naming the field.
Status check(const LayerNormArgs& a);

// Biased variance like torch.nn.LayerNorm; two-pass (mean, then centred variance) for accuracy.
// The _ref variant accumulates in double and is the specification.
void layernorm_f32_ref(const LayerNormArgs& a);
void layernorm_f32_avx2(const LayerNormArgs& a);
void layernorm_f32_avx512(const LayerNormArgs& a);

}  // namespace bert::kernels
