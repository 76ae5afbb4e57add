// The portable OpenMP training kernels (kernels/train.h), as plain loops the compiler vectorises,
// compiled once per instruction set: train_cpu.cc (the baseline x86-64), train_avx2.cc and
// train_avx512.cc include this file and export them under their ISA's names (every definition here
// has internal linkage, so each includes its own copy). Parallel over rows or column chunks so that
// every output element is produced by one thread in a fixed order, hence the same bits whatever the
// thread count; sums use kLanes interleaved partial sums combined in a fixed order. The ISA copies are
// compiled without FMA contraction (CMakeLists.txt), so they round as the baseline copy does.
#pragma once

#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/train.h"

namespace bert::kernels::portable {
namespace {

constexpr int kLanes = 16;
// Columns per task of the column-parallel passes (dgamma/dbeta, embedding scatter, column sum).
constexpr int64_t kColumnChunk = 64;
// Below this many elements the parallel region costs more than it saves.
constexpr int64_t kParallelMinWork = int64_t{1} << 15;

constexpr float kInvSqrt2 = 0.70710678118654752440f;
constexpr float kInvSqrt2Pi = 0.39894228040143267794f;
constexpr float kSqrt2OverPi = 0.79788456080286535588f;
constexpr float kGeluTanhCubic = 0.044715f;
constexpr float kQuickGeluAlpha = 1.702f;
constexpr float kGeluSaturated = 1e3f;  // beyond it the GELU derivatives are 1 (x > 0) or 0

int64_t chunk_count(int64_t n, int64_t chunk) { return (n + chunk - 1) / chunk; }

// Sum of term(0..n-1) accumulated in Acc: kLanes partial sums (vectorisable), combined in order.
template <class Acc, class Term>
inline Acc fixed_order_sum(int64_t n, Term&& term) {
  Acc lanes[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int l = 0; l < kLanes; ++l) lanes[l] += static_cast<Acc>(term(i + l));
  Acc total = 0;
  for (int l = 0; l < kLanes; ++l) total += lanes[l];
  for (; i < n; ++i) total += static_cast<Acc>(term(i));
  return total;
}

inline float fixed_order_max(const float* x, int64_t n) {
  float lanes[kLanes];
  for (int l = 0; l < kLanes; ++l) lanes[l] = x[0];
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int l = 0; l < kLanes; ++l) lanes[l] = lanes[l] < x[i + l] ? x[i + l] : lanes[l];
  float mx = lanes[0];
  for (int l = 1; l < kLanes; ++l) mx = mx < lanes[l] ? lanes[l] : mx;
  for (; i < n; ++i) mx = mx < x[i] ? x[i] : mx;
  return mx;
}

inline float sigmoid(float z) { return 1.f / (1.f + std::exp(-z)); }
inline float sigmoid_complement(float z) { return 1.f / (1.f + std::exp(z)); }

// The float counterparts of the derivatives in kernels/ref/train_ref.cc.
inline float gelu_erf_derivative(float x) {
  if (std::fabs(x) > kGeluSaturated) return x > 0 ? 1.f : 0.f;
  return 0.5f * std::erfc(-x * kInvSqrt2) + x * kInvSqrt2Pi * std::exp(-0.5f * x * x);
}

inline float gelu_tanh_derivative(float x) {
  if (std::fabs(x) > kGeluSaturated) return x > 0 ? 1.f : 0.f;
  const float u2 = 2.f * kSqrt2OverPi * (x + kGeluTanhCubic * x * x * x);
  const float du = kSqrt2OverPi * (1.f + 3.f * kGeluTanhCubic * x * x);
  const float s = sigmoid(u2);
  return s + 2.f * x * s * sigmoid_complement(u2) * du;
}

inline float gelu_quick_derivative(float x) {
  if (std::fabs(x) > kGeluSaturated) return x > 0 ? 1.f : 0.f;
  const float z = kQuickGeluAlpha * x;
  const float s = sigmoid(z);
  return s + z * s * sigmoid_complement(z);
}

inline float tanh_derivative(float x) {
  const float c = std::cosh(x);
  return 1.f / (c * c);
}

template <class Derivative>
void scale_by_derivative(const float* x, float* grad, int64_t n, Derivative&& derivative) {
#pragma omp parallel for schedule(static) if (n >= kParallelMinWork)
  for (int64_t i = 0; i < n; ++i) grad[i] *= derivative(x[i]);
}

// table[row(t)] += d_out[t] for every token; tasks are column chunks, tokens in order within each.
// rows == nullptr sends every token to row 0.
void scatter_add_rows(const int32_t* rows, const float* d_out, float* table, int64_t tokens, int64_t width) {
  const int64_t chunks = chunk_count(width, kColumnChunk);
#pragma omp parallel for schedule(static) if (tokens * width >= kParallelMinWork)
  for (int64_t chunk = 0; chunk < chunks; ++chunk) {
    const int64_t c0 = chunk * kColumnChunk;
    const int64_t c1 = std::min(width, c0 + kColumnChunk);
    for (int64_t t = 0; t < tokens; ++t) {
      const int64_t row = rows ? rows[t] : 0;
      float* __restrict dst = table + row * width;
      const float* __restrict src = d_out + t * width;
      for (int64_t c = c0; c < c1; ++c) dst[c] += src[c];
    }
  }
}


// Rows per block of the LayerNorm backward's dgamma / dbeta partial sums: fixed, so that the bits do
// not depend on the thread count.
constexpr int64_t kLayerNormRowBlock = 32;

// One pass over s and dy (each row is then in L1 for the row's own passes): per row the mean and rstd
// (two-pass, double accumulation), the two means of g = dy * gamma, the block's dgamma / dbeta partial
// sums, and ds. The partial sums of each block of rows are then added in block order.
void layernorm_backward(const LayerNormBackwardArgs& a) {
  const int64_t rows = a.rows, cols = a.cols;
  if (cols <= 0 || rows <= 0) return;
  const bool parallel = rows * cols >= kParallelMinWork;
  const bool params = a.dgamma || a.dbeta;
  const int64_t blocks = chunk_count(rows, kLayerNormRowBlock);
  std::vector<double> partial(params ? static_cast<size_t>(2 * blocks * cols) : 0);  // per block: dgamma, dbeta
  const float inv_cols = 1.f / static_cast<float>(cols);
#pragma omp parallel for schedule(static) if (parallel)
  for (int64_t b = 0; b < blocks; ++b) {
    double* __restrict pg = params ? partial.data() + 2 * b * cols : nullptr;
    double* __restrict pb = params ? pg + cols : nullptr;
    if (params) std::fill(pg, pg + 2 * cols, 0.0);
    const int64_t r1 = std::min(rows, (b + 1) * kLayerNormRowBlock);
    for (int64_t r = b * kLayerNormRowBlock; r < r1; ++r) {
      const float* __restrict s = a.s + r * cols;
      const float* dy = a.dy + r * cols;
      const float* __restrict gamma = a.gamma;
      float* ds = a.ds + r * cols;
      const double mean_d = fixed_order_sum<double>(cols, [&](int64_t c) { return s[c]; }) / static_cast<double>(cols);
      const float mean = static_cast<float>(mean_d);
      const double sq = fixed_order_sum<double>(cols, [&](int64_t c) {
        const float d = s[c] - mean;
        return d * d;
      });
      const float rstd = static_cast<float>(1.0 / std::sqrt(sq / static_cast<double>(cols) + static_cast<double>(a.eps)));
      const float mean_g = fixed_order_sum<float>(cols, [&](int64_t c) { return dy[c] * gamma[c]; }) * inv_cols;
      const float mean_g_xhat =
          fixed_order_sum<float>(cols, [&](int64_t c) { return dy[c] * gamma[c] * ((s[c] - mean) * rstd); }) * inv_cols;
      if (params) {  // before ds, which may overwrite dy
        for (int64_t c = 0; c < cols; ++c) {
          pg[c] += static_cast<double>(dy[c] * ((s[c] - mean) * rstd));
          pb[c] += static_cast<double>(dy[c]);
        }
      }
      // rstd * (g - mean(g) - xhat * mean(g * xhat)); dy[c] is read before ds[c] is written.
      for (int64_t c = 0; c < cols; ++c) {
        const float xhat = (s[c] - mean) * rstd;
        ds[c] = rstd * (dy[c] * gamma[c] - mean_g - xhat * mean_g_xhat);
      }
    }
  }
  if (!params) return;
  const int64_t chunks = chunk_count(cols, kColumnChunk);
#pragma omp parallel for schedule(static) if (parallel)
  for (int64_t chunk = 0; chunk < chunks; ++chunk) {
    const int64_t c0 = chunk * kColumnChunk, c1 = std::min(cols, c0 + kColumnChunk);
    double dgamma_acc[kColumnChunk] = {}, dbeta_acc[kColumnChunk] = {};
    for (int64_t b = 0; b < blocks; ++b) {
      const double* pg = partial.data() + 2 * b * cols;
      const double* pb = pg + cols;
      for (int64_t c = c0; c < c1; ++c) dgamma_acc[c - c0] += pg[c], dbeta_acc[c - c0] += pb[c];
    }
    for (int64_t c = c0; c < c1; ++c) {
      if (a.dgamma) a.dgamma[c] = static_cast<float>(a.dgamma[c] + dgamma_acc[c - c0]);
      if (a.dbeta) a.dbeta[c] = static_cast<float>(a.dbeta[c] + dbeta_acc[c - c0]);
    }
  }
}

void softmax_backward(const SoftmaxBackwardArgs& a) {
  const int64_t k_len = a.k_len;
  if (k_len <= 0) return;
  const int64_t rows = a.batch * a.heads * a.q_len;
  const float scale = a.scale;
#pragma omp parallel for schedule(static) if (rows * k_len >= kParallelMinWork)
  for (int64_t r = 0; r < rows; ++r) {
    const float* p = a.probs + r * k_len;
    float* g = a.grad + r * k_len;
    if (const float* d = a.dropped ? a.dropped + r * k_len : nullptr) {  // dropout's backward folded in
      const float dot = fixed_order_sum<float>(k_len, [&](int64_t k) { return g[k] * d[k]; });
      for (int64_t k = 0; k < k_len; ++k) g[k] = scale * (d[k] * g[k] - p[k] * dot);
      continue;
    }
    const float dot = fixed_order_sum<float>(k_len, [&](int64_t k) { return g[k] * p[k]; });
    for (int64_t k = 0; k < k_len; ++k) g[k] = scale * p[k] * (g[k] - dot);
  }
}

void activation_backward(const ActivationBackwardArgs& a) {
  const float* x = a.x;
  float* grad = a.grad;
  const int64_t n = a.n;
  switch (a.kind) {
    case Activation::kIdentity:
      return;
    case Activation::kGeluErf:
      scale_by_derivative(x, grad, n, gelu_erf_derivative);
      return;
    case Activation::kGeluTanh:
      scale_by_derivative(x, grad, n, gelu_tanh_derivative);
      return;
    case Activation::kGeluQuick:
      scale_by_derivative(x, grad, n, gelu_quick_derivative);
      return;
    case Activation::kRelu:  // a select, like torch: masked gradients are 0 even if NaN
#pragma omp parallel for schedule(static) if (n >= kParallelMinWork)
      for (int64_t i = 0; i < n; ++i) grad[i] = x[i] > 0.f ? grad[i] : 0.f;
      return;
    case Activation::kTanh:
      scale_by_derivative(x, grad, n, tanh_derivative);
      return;
  }
}

void embed_backward(const EmbedBackwardArgs& a) {
  if (a.tokens <= 0 || a.width <= 0) return;
  if (a.d_word && a.input_ids) scatter_add_rows(a.input_ids, a.d_out, a.d_word, a.tokens, a.width);
  if (a.d_position && a.positions) scatter_add_rows(a.positions, a.d_out, a.d_position, a.tokens, a.width);
  if (a.d_type) scatter_add_rows(a.token_types, a.d_out, a.d_type, a.tokens, a.width);
}

void column_sum(const ColumnSumArgs& a) {
  const int64_t rows = a.rows, cols = a.cols;
  if (cols <= 0) return;
  const int64_t ld = a.ld ? a.ld : cols;
  const int64_t chunks = chunk_count(cols, kColumnChunk);
#pragma omp parallel for schedule(static) if (rows * cols >= kParallelMinWork)
  for (int64_t chunk = 0; chunk < chunks; ++chunk) {
    const int64_t c0 = chunk * kColumnChunk;
    const int64_t width = std::min(cols, c0 + kColumnChunk) - c0;
    double acc[kColumnChunk] = {};
    for (int64_t r = 0; r < rows; ++r) {
      const float* x = a.x + r * ld + c0;
      for (int64_t c = 0; c < width; ++c) acc[c] += static_cast<double>(x[c]);
    }
    for (int64_t c = 0; c < width; ++c) a.out[c0 + c] = static_cast<float>(a.out[c0 + c] + acc[c]);
  }
}

LossSum cross_entropy(const CrossEntropyArgs& a) {
  LossSum total;
  const int64_t rows = a.rows, classes = a.classes;
  if (classes <= 0 || rows <= 0) return total;
  const int64_t ld = a.ld ? a.ld : classes;
  const float grad_scale = a.grad_scale;
  std::vector<double> row_loss(static_cast<size_t>(rows), 0.0);
#pragma omp parallel for schedule(static) if (rows * classes >= kParallelMinWork)
  for (int64_t r = 0; r < rows; ++r) {
    const float* x = a.logits + r * ld;
    float* d = a.dlogits ? a.dlogits + r * ld : nullptr;
    const int32_t target = a.targets[r];
    if (target == a.ignore_index) {
      if (d) std::fill(d, d + classes, 0.f);
      continue;
    }
    const float mx = fixed_order_max(x, classes);
    const float target_logit = x[target];  // read before d (which may alias x) is written
    double sum;
    if (d) {  // keep exp(x - max) in d, then scale it into the gradient
      for (int64_t c = 0; c < classes; ++c) d[c] = std::exp(x[c] - mx);
      sum = fixed_order_sum<double>(classes, [&](int64_t c) { return d[c]; });
      const double target_exp = d[target];
      const float prob_scale = static_cast<float>(grad_scale / sum);
      for (int64_t c = 0; c < classes; ++c) d[c] *= prob_scale;
      // (p - 1) in double: in float it cancels when the target's probability is near 1.
      d[target] = static_cast<float>((target_exp / sum - 1.0) * grad_scale);
    } else {
      sum = fixed_order_sum<double>(classes, [&](int64_t c) { return std::exp(x[c] - mx); });
    }
    row_loss[r] = std::log(sum) + static_cast<double>(mx) - static_cast<double>(target_logit);
  }
  for (int64_t r = 0; r < rows; ++r) {  // serial, in row order: the sum does not depend on threads
    if (a.targets[r] == a.ignore_index) continue;
    total.sum += row_loss[r];
    ++total.count;
  }
  return total;
}

}  // namespace
}  // namespace bert::kernels::portable
