// Mixed-precision, int8 and padding-removal ops of the CUDA device (kernels/cuda/precision.cu), callable
// from plain C++ (no CUDA types here): fp32 <-> fp16 conversion, LayerNorm / embedding / bias+activation
// on tensors of either element type (fp16 storage, fp32 math), row gather / scatter for removing and
// restoring padding, and symmetric int8 quantization (calibration absmax, quantize, dequantize of the
// int32 GEMM accumulator). Every pointer is a device pointer; `stream` is a cudaStream_t or nullptr.
// Launchers return false on bad arguments or a failed launch (cuda_last_error() says why); nothing here
// synchronizes with the host. CPU references: kernels/layernorm.h, kernels/embed.h, kernels/activation.h,
// kernels/convert.h, kernels/quantize.h.
// Compiled for sm_80 / sm_90a; tests/cuda_precision_test.cc skips without a GPU.
#pragma once

#include <cstdint>

#include "kernels/activation.h"
#include "kernels/cuda/device_types.h"

namespace bert::kernels::cuda {

// y[i] = x[i] converted (fp32 <-> fp16, round to nearest even; same-type = copy). n elements.
// Bit-exact with convert_f32_to_f16_ref / convert_f16_to_f32_ref, NaN payloads included.
bool convert(const void* x, DType from, void* y, DType to, int64_t n, void* stream = nullptr);

// LayerNorm of x (+ residual) over cols, like kernels/layernorm.h, with every tensor (x, residual, gamma, beta, y)
// of element type `dtype`; statistics in fp32 (two-pass, like the CPU). y may alias x or residual.
struct LayerNormDev {
  const void* x = nullptr;
  const void* residual = nullptr;
  const void* gamma = nullptr;
  const void* beta = nullptr;
  void* y = nullptr;
  int64_t rows = 0, cols = 0;
  float eps = 1e-12f;
  DType dtype = DType::kF32;
};
bool layernorm(const LayerNormDev& a, void* stream = nullptr);

// Embedding gather + sum + LayerNorm like kernels/embed.h (same argument meanings: positions / token_types /
// position_table / type_table / gamma may be null as there), tables, gamma, beta and out of element type `dtype`.
// The sum is formed in fp32 (not rounded to fp16 before the LayerNorm). ids are validated by the caller.
struct EmbedDev {
  const int32_t* input_ids = nullptr;
  const int32_t* positions = nullptr;
  const int32_t* token_types = nullptr;
  const void* word_table = nullptr;
  const void* position_table = nullptr;
  const void* type_table = nullptr;
  const void* gamma = nullptr;
  const void* beta = nullptr;
  void* out = nullptr;
  int64_t tokens = 0, width = 0;
  float eps = 1e-12f;
  DType dtype = DType::kF32;
};
bool embed(const EmbedDev& a, void* stream = nullptr);

// y[r, c] = act(y[r, c] + bias[c]) for r < rows, c < cols, row stride ld; bias (same dtype) may be null.
// Math in fp32. Activations as in kernels/activation.h (kIdentity allowed).
bool bias_activation(void* y, const void* bias, int64_t rows, int64_t cols, int64_t ld, Activation act, DType dtype,
                     void* stream = nullptr);

// Padding removal. gather: dst[i, :width] = src[index[i], :width]; scatter: dst[index[i], :width] = src[i, :width]
// (rows of dst not named by index are left alone). index is a device int32 array of `rows` entries. Strides in elements.
// Indices are not checked on the device (the caller builds them); scatter indices must be distinct.
bool gather_rows(const void* src, int64_t src_ld, void* dst, int64_t dst_ld, const int32_t* index, int64_t rows,
                 int64_t width, DType dtype, void* stream = nullptr);
bool scatter_rows(const void* src, int64_t src_ld, void* dst, int64_t dst_ld, const int32_t* index, int64_t rows,
                  int64_t width, DType dtype, void* stream = nullptr);

// int8 (symmetric, zero point 0). Calibration: *running_absmax = max(*running_absmax, max |x|) over the [rows, cols]
// block (row stride ld); running_absmax is ONE device float (atomicMax on the bits of a non-negative float works).
// NaNs in x are ignored; start *running_absmax at 0.
bool absmax_update(const void* x, int64_t rows, int64_t cols, int64_t ld, DType dtype, float* running_absmax,
                   void* stream = nullptr);
// q[r, c] = clamp(round_half_even(x[r, c] / *scale), -127, 127), q dense [rows, cols]; scale is ONE device float
// (the real value of one int8 step; a scale <= 0 (or NaN) is treated as 1). NaN -> 0. The division is IEEE
// (not a reciprocal multiply), so the result is bit-exact with quantize_i8_ref.
bool quantize_i8(const void* x, int64_t rows, int64_t cols, int64_t ldx, DType dtype, const float* scale, int8_t* q,
                 void* stream = nullptr);
// y[r, c] = act(acc[r, c] * (*x_scale) * w_scales[c] + bias[c]); acc dense int32 [rows, cols]; x_scale one device float,
// w_scales device [cols], bias device fp32 [cols] or null; y of element type `dtype` with row stride ldy.
// The products are evaluated left to right, each rounded (no FMA), as dequantize_i32_ref does.
bool dequantize_i32(const int32_t* acc, int64_t rows, int64_t cols, const float* x_scale, const float* w_scales,
                    const float* bias, Activation act, void* y, int64_t ldy, DType dtype, void* stream = nullptr);

}  // namespace bert::kernels::cuda
