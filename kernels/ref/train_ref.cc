// Scalar reference training kernels (double accumulation): backward passes, losses, dropout and
// column sums. The specification the OpenMP variants in kernels/cpu/train_cpu.cc are tested against.
#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "kernels/train.h"

namespace bert::kernels {
namespace {

constexpr double kInvSqrt2 = 0.70710678118654752440;
constexpr double kInvSqrt2Pi = 0.39894228040143267794;
constexpr double kSqrt2OverPi = 0.79788456080286535588;
constexpr double kGeluTanhCubic = 0.044715;
constexpr double kQuickGeluAlpha = 1.702;
// Beyond this |x| every GELU derivative is exactly 1 (x > 0) or 0 (x < 0) in double; the cut-off
// also keeps +-inf from producing inf * 0.
constexpr double kGeluSaturated = 1e3;

// sigmoid(z) and 1 - sigmoid(z), each without cancellation; exp overflow only yields 1 / inf = 0.
double sigmoid(double z) { return 1.0 / (1.0 + std::exp(-z)); }
double sigmoid_complement(double z) { return 1.0 / (1.0 + std::exp(z)); }

// d/dx of the activations in kernels/activation.h.
double activation_derivative(double x, Activation kind) {
  switch (kind) {
    case Activation::kIdentity:
      return 1.0;
    case Activation::kGeluErf: {  // Phi(x) + x phi(x)
      if (std::fabs(x) > kGeluSaturated) return x > 0 ? 1.0 : 0.0;
      const double cdf = 0.5 * std::erfc(-x * kInvSqrt2);
      const double pdf = kInvSqrt2Pi * std::exp(-0.5 * x * x);
      return cdf + x * pdf;
    }
    case Activation::kGeluTanh: {  // y = x sigmoid(2u): y' = s + x s (1 - s) 2u'
      if (std::fabs(x) > kGeluSaturated) return x > 0 ? 1.0 : 0.0;
      const double u = kSqrt2OverPi * (x + kGeluTanhCubic * x * x * x);
      const double du = kSqrt2OverPi * (1.0 + 3.0 * kGeluTanhCubic * x * x);
      const double s = sigmoid(2.0 * u);
      return s + 2.0 * x * s * sigmoid_complement(2.0 * u) * du;
    }
    case Activation::kGeluQuick: {  // y = x sigmoid(a x): y' = s + a x s (1 - s)
      if (std::fabs(x) > kGeluSaturated) return x > 0 ? 1.0 : 0.0;
      const double z = kQuickGeluAlpha * x;
      const double s = sigmoid(z);
      return s + z * s * sigmoid_complement(z);
    }
    case Activation::kRelu:
      return x > 0 ? 1.0 : 0.0;
    case Activation::kTanh: {  // 1 - tanh^2 = 1 / cosh^2, accurate where tanh rounds to +-1
      const double c = std::cosh(x);
      return 1.0 / (c * c);
    }
  }
  return 1.0;
}

// SplitMix64's finaliser: a bijective 64-bit mix with good avalanche.
uint64_t splitmix64(uint64_t z) {
  z += 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// table[row(t)] += d_out[t] for every token, summing each row's tokens in double (in token order)
// before the single add. rows == nullptr sends every token to row 0.
void scatter_add_rows(const int32_t* rows, const float* d_out, float* table, int64_t tokens, int64_t width) {
  std::vector<int64_t> order(static_cast<size_t>(tokens));
  std::iota(order.begin(), order.end(), int64_t{0});
  auto row_of = [&](int64_t t) { return rows ? static_cast<int64_t>(rows[t]) : int64_t{0}; };
  std::stable_sort(order.begin(), order.end(), [&](int64_t l, int64_t r) { return row_of(l) < row_of(r); });
  std::vector<double> acc(static_cast<size_t>(width));
  for (size_t begin = 0; begin < order.size();) {
    const int64_t row = row_of(order[begin]);
    size_t end = begin;
    std::fill(acc.begin(), acc.end(), 0.0);
    for (; end < order.size() && row_of(order[end]) == row; ++end) {
      const float* g = d_out + order[end] * width;
      for (int64_t c = 0; c < width; ++c) acc[c] += g[c];
    }
    float* dst = table + row * width;
    for (int64_t c = 0; c < width; ++c) dst[c] = static_cast<float>(dst[c] + acc[c]);
    begin = end;
  }
}

}  // namespace

void layernorm_backward_f32_ref(const LayerNormBackwardArgs& a) {
  const int64_t cols = a.cols;
  if (cols <= 0 || a.rows <= 0) return;
  std::vector<double> dgamma_acc(static_cast<size_t>(cols), 0.0), dbeta_acc(static_cast<size_t>(cols), 0.0);
  std::vector<double> xhat(static_cast<size_t>(cols));
  for (int64_t r = 0; r < a.rows; ++r) {
    const float* s = a.s + r * cols;
    const float* dy = a.dy + r * cols;
    float* ds = a.ds + r * cols;
    double sum = 0.0;
    for (int64_t c = 0; c < cols; ++c) sum += s[c];
    const double mean = sum / static_cast<double>(cols);
    double sq = 0.0;
    for (int64_t c = 0; c < cols; ++c) sq += (s[c] - mean) * (s[c] - mean);
    const double rstd = 1.0 / std::sqrt(sq / static_cast<double>(cols) + static_cast<double>(a.eps));
    double sum_g = 0.0, sum_g_xhat = 0.0;
    for (int64_t c = 0; c < cols; ++c) {
      xhat[c] = (s[c] - mean) * rstd;
      const double g = static_cast<double>(dy[c]) * a.gamma[c];
      sum_g += g;
      sum_g_xhat += g * xhat[c];
      dgamma_acc[c] += dy[c] * xhat[c];
      dbeta_acc[c] += dy[c];
    }
    const double mean_g = sum_g / static_cast<double>(cols);
    const double mean_g_xhat = sum_g_xhat / static_cast<double>(cols);
    // dy[c] is read before ds[c] is written, so ds may alias dy.
    for (int64_t c = 0; c < cols; ++c) {
      const double g = static_cast<double>(dy[c]) * a.gamma[c];
      ds[c] = static_cast<float>(rstd * (g - mean_g - xhat[c] * mean_g_xhat));
    }
  }
  for (int64_t c = 0; c < cols; ++c) {
    if (a.dgamma) a.dgamma[c] = static_cast<float>(a.dgamma[c] + dgamma_acc[c]);
    if (a.dbeta) a.dbeta[c] = static_cast<float>(a.dbeta[c] + dbeta_acc[c]);
  }
}

void softmax_backward_f32_ref(const SoftmaxBackwardArgs& a) {
  const int64_t k_len = a.k_len;
  if (k_len <= 0) return;
  const int64_t rows = a.batch * a.heads * a.q_len;
  for (int64_t r = 0; r < rows; ++r) {
    const float* p = a.probs + r * k_len;
    const float* d = a.dropped ? a.dropped + r * k_len : p;
    float* g = a.grad + r * k_len;
    double dot = 0.0;
    for (int64_t k = 0; k < k_len; ++k) dot += static_cast<double>(g[k]) * d[k];
    for (int64_t k = 0; k < k_len; ++k) g[k] = static_cast<float>(a.scale * (static_cast<double>(d[k]) * g[k] - p[k] * dot));
  }
}

void activation_backward_f32_ref(const ActivationBackwardArgs& a) {
  for (int64_t i = 0; i < a.n; ++i) {
    if (a.kind == Activation::kRelu) {  // a select, like torch: masked gradients are 0 even if NaN
      a.grad[i] = a.x[i] > 0.f ? a.grad[i] : 0.f;
      continue;
    }
    a.grad[i] = static_cast<float>(a.grad[i] * activation_derivative(a.x[i], a.kind));
  }
}

void embed_backward_f32_ref(const EmbedBackwardArgs& a) {
  if (a.tokens <= 0 || a.width <= 0) return;
  if (a.d_word && a.input_ids) scatter_add_rows(a.input_ids, a.d_out, a.d_word, a.tokens, a.width);
  if (a.d_position && a.positions) scatter_add_rows(a.positions, a.d_out, a.d_position, a.tokens, a.width);
  if (a.d_type) scatter_add_rows(a.token_types, a.d_out, a.d_type, a.tokens, a.width);
}

void column_sum_f32_ref(const ColumnSumArgs& a) {
  const int64_t ld = a.ld ? a.ld : a.cols;
  for (int64_t c = 0; c < a.cols; ++c) {
    double sum = 0.0;
    for (int64_t r = 0; r < a.rows; ++r) sum += a.x[r * ld + c];
    a.out[c] = static_cast<float>(a.out[c] + sum);
  }
}

LossSum cross_entropy_f32_ref(const CrossEntropyArgs& a) {
  LossSum total;
  const int64_t classes = a.classes;
  if (classes <= 0) return total;
  const int64_t ld = a.ld ? a.ld : classes;
  for (int64_t r = 0; r < a.rows; ++r) {
    const float* x = a.logits + r * ld;
    float* d = a.dlogits ? a.dlogits + r * ld : nullptr;
    const int32_t target = a.targets[r];
    if (target == a.ignore_index) {
      if (d) std::fill(d, d + classes, 0.f);
      continue;
    }
    double mx = x[0];
    for (int64_t c = 1; c < classes; ++c) mx = std::max(mx, static_cast<double>(x[c]));
    double sum = 0.0;
    for (int64_t c = 0; c < classes; ++c) sum += std::exp(x[c] - mx);
    total.sum += std::log(sum) + mx - x[target];
    ++total.count;
    if (!d) continue;
    // x[c] is read before d[c] is written and the loss above is already taken: d may alias x.
    for (int64_t c = 0; c < classes; ++c) {
      const double prob = std::exp(x[c] - mx) / sum;
      d[c] = static_cast<float>((prob - (c == target ? 1.0 : 0.0)) * a.grad_scale);
    }
  }
  return total;
}

LossSum bce_with_logits_f32_ref(const BceWithLogitsArgs& a) {
  LossSum total;
  for (int64_t i = 0; i < a.n; ++i) {
    const bool counted = !a.mask || a.mask[i] != 0;
    if (!counted) {
      if (a.dlogits) a.dlogits[i] = 0.f;
      continue;
    }
    const double x = a.logits[i];
    const double t = a.targets[i];
    // max(x, 0) - x t + log(1 + exp(-|x|)): torch's stable form.
    total.sum += std::max(x, 0.0) - x * t + std::log1p(std::exp(-std::fabs(x)));
    ++total.count;
    if (a.dlogits) {
      const double prob = x >= 0 ? sigmoid(x) : std::exp(x) / (1.0 + std::exp(x));
      a.dlogits[i] = static_cast<float>((prob - t) * a.grad_scale);
    }
  }
  return total;
}

LossSum mse_f32_ref(const MseArgs& a) {
  LossSum total;
  for (int64_t i = 0; i < a.n; ++i) {
    const double diff = static_cast<double>(a.pred[i]) - a.target[i];
    total.sum += diff * diff;
    if (a.dpred) a.dpred[i] = static_cast<float>(2.0 * diff * a.grad_scale);
  }
  total.count = a.n > 0 ? a.n : 0;
  return total;
}

bool dropout_keep(uint64_t seed, uint64_t index, float p) {
  const uint64_t hash = splitmix64(seed ^ (0x9E3779B97F4A7C15ull * (index + 1)));
  const float uniform = static_cast<float>(hash >> 40) * 0x1p-24f;  // 24 bits: exact in [0, 1)
  return uniform >= p;
}

void dropout_f32_ref(const DropoutArgs& a) {
  const float* src = a.src ? a.src : a.x;
  if (a.p <= 0.f) {
    if (src != a.x) std::copy(src, src + a.n, a.x);
    return;
  }
  const double inv_keep = 1.0 / (1.0 - static_cast<double>(a.p));
  for (int64_t i = 0; i < a.n; ++i) {
    const bool keep = dropout_keep(a.seed, a.offset + static_cast<uint64_t>(i), a.p);
    a.x[i] = keep ? static_cast<float>(src[i] * inv_keep) : 0.f;
  }
}

}  // namespace bert::kernels
