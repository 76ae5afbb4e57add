// Symmetric int8 quantization on the CPU: the per-channel weight quantizer and the scalar references of
// the CUDA device's int8 ops (kernels/quantize.h). Rounding is half-to-even computed explicitly, so it
// does not depend on the floating-point environment.
#include "kernels/quantize.h"

#include <algorithm>
#include <cmath>

namespace bert::kernels {
namespace {

// round_half_even(v) clamped to [-127, 127]; NaN -> 0 (as the GPU's __float2int_rn gives).
int8_t round_to_i8(float v) {
  if (std::isnan(v)) return 0;
  v = std::clamp(v, -127.f, 127.f);
  float r = std::round(v);  // halves away from zero
  // An exact half (v - trunc(v) is exact for |v| <= 127): take the even neighbour instead.
  if (std::fabs(v - std::trunc(v)) == 0.5f) r = 2.f * std::round(v * 0.5f);
  return static_cast<int8_t>(r);
}

}  // namespace

void quantize_weights_per_channel_i8(const float* w, int64_t N, int64_t K, int8_t* q, float* scales, int qmax) {
  const float top = static_cast<float>(qmax);
  for (int64_t n = 0; n < N; ++n) {
    const float* row = w + n * K;
    float amax = 0.f;
    for (int64_t k = 0; k < K; ++k) amax = std::max(amax, std::fabs(row[k]));
    const float scale = amax > 0.f ? amax / top : 1.f;
    scales[n] = scale;
    for (int64_t k = 0; k < K; ++k) q[n * K + k] = round_to_i8(std::clamp(row[k] / scale, -top, top));
  }
}

float absmax_f32_ref(const float* x, int64_t rows, int64_t cols, int64_t ldx) {
  float amax = 0.f;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) amax = std::max(amax, std::fabs(x[r * ldx + c]));  // NaN: kept out
  return amax;
}

void quantize_i8_ref(const float* x, int64_t rows, int64_t cols, int64_t ldx, float scale, int8_t* q) {
  if (!(scale > 0.f)) scale = 1.f;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) q[r * cols + c] = round_to_i8(x[r * ldx + c] / scale);
}

void dequantize_i32_ref(const int32_t* acc, int64_t rows, int64_t cols, float x_scale, const float* w_scales,
                        const float* bias, Activation act, float* y, int64_t ldy) {
  for (int64_t r = 0; r < rows; ++r) {
    float* out = y + r * ldy;
    for (int64_t c = 0; c < cols; ++c) {
      float v = static_cast<float>(acc[r * cols + c]) * x_scale;
      v = v * w_scales[c];
      if (bias) v = v + bias[c];
      out[c] = v;
    }
    activation_f32_ref({out, cols, act});
  }
}

void matmul_i8_ref(const int8_t* x, const int8_t* w, int32_t* acc, int64_t M, int64_t N, int64_t K) {
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n) {
      int64_t s = 0;
      for (int64_t k = 0; k < K; ++k) s += int64_t(x[m * K + k]) * int64_t(w[n * K + k]);
      acc[m * N + n] = static_cast<int32_t>(s);
    }
}

}  // namespace bert::kernels
