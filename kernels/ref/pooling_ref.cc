// Token pooling for sentence embeddings: the plain implementation (and the spec).
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "kernels/pooling.h"

namespace bert::kernels {

void pool_tokens_f32_ref(const PoolArgs& a) {
  for (int64_t b = 0; b < a.batch; ++b) {
    const float* h = a.hidden + b * a.seq * a.width;
    const int32_t* m = a.mask ? a.mask + b * a.seq : nullptr;
    float* out = a.out + b * a.width;
    int64_t tokens = 0;
    for (int64_t s = 0; s < a.seq; ++s) tokens += !m || m[s] != 0;
    for (int64_t d = 0; d < a.width; ++d) {
      double v = 0;
      if (a.kind == TokenPooling::kCls) {
        v = h[d];
      } else if (tokens > 0) {
        v = a.kind == TokenPooling::kMean ? 0.0 : -std::numeric_limits<double>::infinity();
        for (int64_t s = 0; s < a.seq; ++s) {
          if (m && m[s] == 0) continue;
          const double x = h[s * a.width + d];
          v = a.kind == TokenPooling::kMean ? v + x : std::max(v, x);
        }
        if (a.kind == TokenPooling::kMean) v /= static_cast<double>(tokens);
      }
      out[d] = static_cast<float>(v);
    }
    if (a.normalize) {
      double norm = 0;
      for (int64_t d = 0; d < a.width; ++d) norm += double(out[d]) * out[d];
      const double scale = 1.0 / std::max(std::sqrt(norm), 1e-12);
      for (int64_t d = 0; d < a.width; ++d) out[d] = static_cast<float>(out[d] * scale);
    }
  }
}

}  // namespace bert::kernels
