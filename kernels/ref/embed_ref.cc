// Scalar reference embedding sum + LayerNorm (double accumulation): the specification for the SIMD variants.
#include <cmath>
#include <vector>

#include "kernels/embed.h"

namespace bert::kernels {

void embed_f32_ref(const EmbedArgs& a) {
  const int64_t w = a.width;
  if (w <= 0) return;
  std::vector<double> v(static_cast<size_t>(w));
  for (int64_t t = 0; t < a.tokens; ++t) {
    const float* word = a.word_table + static_cast<int64_t>(a.input_ids[t]) * w;
    const float* pos =
        (a.position_table && a.positions) ? a.position_table + static_cast<int64_t>(a.positions[t]) * w : nullptr;
    const float* type =
        a.type_table ? a.type_table + (a.token_types ? static_cast<int64_t>(a.token_types[t]) : 0) * w : nullptr;
    float* out = a.out + t * w;
    for (int64_t i = 0; i < w; ++i) {
      double s = word[i];
      if (pos) s += pos[i];
      if (type) s += type[i];
      v[i] = s;
    }
    if (!a.gamma) {
      for (int64_t i = 0; i < w; ++i) out[i] = static_cast<float>(v[i]);
      continue;
    }
    double sum = 0.0;
    for (int64_t i = 0; i < w; ++i) sum += v[i];
    const double mean = sum / static_cast<double>(w);
    double sq = 0.0;
    for (int64_t i = 0; i < w; ++i) sq += (v[i] - mean) * (v[i] - mean);
    const double rstd = 1.0 / std::sqrt(sq / static_cast<double>(w) + static_cast<double>(a.eps));
    for (int64_t i = 0; i < w; ++i) out[i] = static_cast<float>((v[i] - mean) * rstd * a.gamma[i] + a.beta[i]);
  }
}

}  // namespace bert::kernels
