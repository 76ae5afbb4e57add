// Scalar reference masked softmax (double accumulation): the specification the SIMD variants are tested against.
#include <cmath>
#include <limits>

#include "kernels/softmax_masked.h"

namespace bert::kernels {

void softmax_masked_f32_ref(const SoftmaxMaskedArgs& a) {
  const int64_t k_len = a.k_len;
  if (k_len <= 0) return;
  const int64_t rows_per_batch = a.heads * a.q_len;
  for (int64_t b = 0; b < a.batch; ++b) {
    const int32_t* mask = a.key_mask ? a.key_mask + b * k_len : nullptr;
    for (int64_t r = 0; r < rows_per_batch; ++r) {
      float* s = a.scores + (b * rows_per_batch + r) * k_len;
      bool any = false;
      double mx = -std::numeric_limits<double>::infinity();
      for (int64_t k = 0; k < k_len; ++k) {
        if (mask && mask[k] == 0) continue;
        any = true;
        mx = std::fmax(mx, static_cast<double>(s[k]) * a.scale);
      }
      if (!any) {  // every key masked: HF's additive mask makes all scores equal -> uniform
        for (int64_t k = 0; k < k_len; ++k) s[k] = static_cast<float>(1.0 / static_cast<double>(k_len));
        continue;
      }
      double sum = 0.0;
      for (int64_t k = 0; k < k_len; ++k) {
        if (mask && mask[k] == 0) continue;
        sum += std::exp(static_cast<double>(s[k]) * a.scale - mx);
      }
      for (int64_t k = 0; k < k_len; ++k) {
        if (mask && mask[k] == 0) {
          s[k] = 0.f;
        } else {
          s[k] = static_cast<float>(std::exp(static_cast<double>(s[k]) * a.scale - mx) / sum);
        }
      }
    }
  }
}

}  // namespace bert::kernels
