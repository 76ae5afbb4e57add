// Scalar reference LayerNorm (double accumulation): the specification the SIMD variants are tested against.
#include <cmath>

#include "kernels/layernorm.h"

namespace bert::kernels {

void layernorm_f32_ref(const LayerNormArgs& a) {
  const int64_t cols = a.cols;
  if (cols <= 0) return;
  for (int64_t r = 0; r < a.rows; ++r) {
    const float* x = a.x + r * cols;
    const float* res = a.residual ? a.residual + r * cols : nullptr;
    float* y = a.y + r * cols;
    auto value = [&](int64_t i) {
      double v = x[i];
      if (res) v += res[i];
      return v;
    };
    double sum = 0.0;
    for (int64_t i = 0; i < cols; ++i) sum += value(i);
    const double mean = sum / static_cast<double>(cols);
    double sq = 0.0;
    for (int64_t i = 0; i < cols; ++i) {
      const double d = value(i) - mean;
      sq += d * d;
    }
    const double var = sq / static_cast<double>(cols);
    const double rstd = 1.0 / std::sqrt(var + static_cast<double>(a.eps));
    // Element i is read before it is written, so y may alias x or residual.
    for (int64_t i = 0; i < cols; ++i) {
      const double v = value(i);
      y[i] = static_cast<float>((v - mean) * rstd * a.gamma[i] + a.beta[i]);
    }
  }
}

}  // namespace bert::kernels
