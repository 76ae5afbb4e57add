// Scalar reference fused attention (double accumulation): the specification the flash-style CPU
// variants are tested against. Straightforward: scores, masked softmax, weighted sum of V, per query.
#include <cmath>
#include <limits>
#include <vector>

#include "kernels/attention.h"

namespace bert::kernels {

void attention_f32_ref(const AttentionArgs& a) {
  const int64_t S = a.seq, dh = a.head_dim, width = a.heads * a.head_dim;
  if (a.batch <= 0 || S <= 0 || a.heads <= 0 || dh <= 0) return;
  const int64_t ld = a.ld ? a.ld : width, ldo = a.ldo ? a.ldo : width;
  std::vector<double> p(static_cast<size_t>(S)), acc(static_cast<size_t>(dh));
  for (int64_t b = 0; b < a.batch; ++b) {
    // Rows [row0, row0 + L) are this sequence's (packed layout: its own length, no mask).
    const int64_t row0 = a.seq_starts ? a.seq_starts[b] : b * S;
    const int64_t L = a.seq_starts ? a.seq_starts[b + 1] - a.seq_starts[b] : S;
    const int32_t* mask = a.key_mask ? a.key_mask + b * S : nullptr;
    bool any = mask == nullptr;
    for (int64_t j = 0; mask && j < L; ++j) any = any || mask[j] != 0;
    for (int64_t h = 0; h < a.heads; ++h) {
      for (int64_t i = 0; i < L; ++i) {
        const float* q = a.q + (row0 + i) * ld + h * dh;
        double mx = -std::numeric_limits<double>::infinity();
        for (int64_t j = 0; j < L; ++j) {
          const float* k = a.k + (row0 + j) * ld + h * dh;
          double dot = 0.0;
          for (int64_t d = 0; d < dh; ++d) dot += static_cast<double>(q[d]) * k[d];
          p[j] = dot * a.scale;
          if (!any || !mask || mask[j] != 0) mx = std::fmax(mx, p[j]);
        }
        double sum = 0.0;
        for (int64_t j = 0; j < L; ++j) {
          if (!any) {
            p[j] = 1.0;  // every key masked: HF's additive mask makes all scores equal -> uniform
          } else if (mask && mask[j] == 0) {
            p[j] = 0.0;
          } else {
            p[j] = std::exp(p[j] - mx);
          }
          sum += p[j];
        }
        for (auto& x : acc) x = 0.0;
        for (int64_t j = 0; j < L; ++j) {
          if (p[j] == 0.0) continue;
          const float* v = a.v + (row0 + j) * ld + h * dh;
          for (int64_t d = 0; d < dh; ++d) acc[d] += p[j] * v[d];
        }
        float* out = a.out + (row0 + i) * ldo + h * dh;
        for (int64_t d = 0; d < dh; ++d) out[d] = static_cast<float>(acc[d] / sum);
      }
    }
  }
}

}  // namespace bert::kernels
