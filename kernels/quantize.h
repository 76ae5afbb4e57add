// Symmetric int8 quantization on the CPU (zero point 0): the host-side per-output-channel weight quantizer,
// and the references of the CUDA device's int8 ops (kernels/cuda/precision.h), which the CUDA tests and the
// engine's CPU-side simulation of the int8 model use. Scalar code (kernels/ref/quantize_ref.cc).
#pragma once

#include <cstdint>

#include "kernels/activation.h"

namespace bert::kernels {

// Symmetric per-output-channel int8 weights: scales[n] = max_k |w[n, k]| / 127 (1 when the row is all zero),
// q[n, k] = clamp(round_half_even(w[n, k] / scales[n]), -127, 127). w is [N, K] row-major; weights are finite.
void quantize_weights_per_channel_i8(const float* w, int64_t N, int64_t K, int8_t* q, float* scales);

// q[r, c] = clamp(round_half_even(x[r, c] / scale), -127, 127) with one IEEE fp32 division per element
// (a scale <= 0 or NaN is treated as 1; a NaN x gives 0); q dense [rows, cols], x with row stride ldx.
// Bit-exact with cuda::quantize_i8.
void quantize_i8_ref(const float* x, int64_t rows, int64_t cols, int64_t ldx, float scale, int8_t* q);

// y[r, c] = act(acc[r, c] * x_scale * w_scales[c] + bias[c]) in fp32, evaluated left to right with each
// operation rounded (no FMA); bias may be null; act through activation_f32_ref on each row. acc dense
// int32 [rows, cols], y with row stride ldy.
void dequantize_i32_ref(const int32_t* acc, int64_t rows, int64_t cols, float x_scale, const float* w_scales,
                        const float* bias, Activation act, float* y, int64_t ldy);

// acc[m, n] = sum_k x[m, k] * w[n, k] in int32 (x [M, K], w [N, K] int8, dense): the int8 GEMM's reference.
// Exact while |acc| < 2^31 (always for K <= 131071).
void matmul_i8_ref(const int8_t* x, const int8_t* w, int32_t* acc, int64_t M, int64_t N, int64_t K);

}  // namespace bert::kernels
