// Symmetric int8 quantization (zero point 0): the host-side per-output-channel weight quantizer, the
// activation quantizer of the CPU's int8 linear layers (absmax + quantize: references and AVX2 / AVX-512
// variants, kernels/cpu/quantize_*.cc) and the references of the CUDA device's int8 ops
// (kernels/cuda/precision.h). References: kernels/ref/quantize_ref.cc.
#pragma once

#include <cstdint>

#include "kernels/activation.h"

namespace bert::kernels {

// Symmetric per-output-channel int8 weights: scales[n] = max_k |w[n, k]| / qmax (1 when the row is all zero),
// q[n, k] = clamp(round_half_even(w[n, k] / scales[n]), -qmax, qmax). w is [N, K] row-major; weights are
// finite. qmax 127 is 8-bit; 63 is the 7-bit form for CPUs without VNNI, whose u8 x s8 pair products
// (vpmaddubsw) saturate int16 at 2 x 255 x 127 but not at 2 x 255 x 63.
void quantize_weights_per_channel_i8(const float* w, int64_t N, int64_t K, int8_t* q, float* scales,
                                     int qmax = 127);

// max |x[r, c]| over rows x cols (row stride ldx); NaN entries are ignored; 0 when empty.
float absmax_f32_ref(const float* x, int64_t rows, int64_t cols, int64_t ldx);
float absmax_f32_avx2(const float* x, int64_t rows, int64_t cols, int64_t ldx);
float absmax_f32_avx512(const float* x, int64_t rows, int64_t cols, int64_t ldx);

// q[r, c] = clamp(round_half_even(x[r, c] / scale), -127, 127) with one IEEE fp32 division per element
// (a scale <= 0 or NaN is treated as 1; a NaN x gives 0); q dense [rows, cols], x with row stride ldx.
// Bit-exact with cuda::quantize_i8.
void quantize_i8_ref(const float* x, int64_t rows, int64_t cols, int64_t ldx, float scale, int8_t* q);
// The same, bit-exact (IEEE division, round half to even, NaN -> 0), OpenMP over rows.
void quantize_i8_avx2(const float* x, int64_t rows, int64_t cols, int64_t ldx, float scale, int8_t* q);
void quantize_i8_avx512(const float* x, int64_t rows, int64_t cols, int64_t ldx, float scale, int8_t* q);

// y[r, c] = act(acc[r, c] * x_scale * w_scales[c] + bias[c]) in fp32, evaluated left to right with each
// operation rounded (no FMA); bias may be null; act through activation_f32_ref on each row. acc dense
// int32 [rows, cols], y with row stride ldy.
void dequantize_i32_ref(const int32_t* acc, int64_t rows, int64_t cols, float x_scale, const float* w_scales,
                        const float* bias, Activation act, float* y, int64_t ldy);

// acc[m, n] = sum_k x[m, k] * w[n, k] in int32 (x [M, K], w [N, K] int8, dense): the int8 GEMM's reference.
// Exact while |acc| < 2^31 (always for K <= 131071).
void matmul_i8_ref(const int8_t* x, const int8_t* w, int32_t* acc, int64_t M, int64_t N, int64_t K);

}  // namespace bert::kernels
