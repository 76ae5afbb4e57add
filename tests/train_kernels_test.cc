// Tests of the training kernels (kernels/train.h): every `_ref` against central finite differences of
// the matching forward written here in double, every OpenMP variant against its `_ref` at awkward
// sizes, bit-identical results across thread counts, accumulation into parameter gradients, the loss
// bookkeeping (ignore_index, masks, counts) and the dropout stream; and, driven by the op registry's
// variant list, every registered training entry against its reference entry.
#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <numbers>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "kernels/activation.h"
#include "kernels/registry.h"
#include "kernels/softmax_masked.h"
#include "kernels/train.h"
#include "tests/test_util.h"

namespace bert::kernels {
namespace {

using test::max_abs;
using test::max_abs_diff;
using test::random_floats;
using test::relative_l2;

// ---- helpers ---------------------------------------------------------------------------------------

constexpr double kFiniteDifferenceStep = 1e-5;

// Central differences of objective at x: (f(x + h e_i) - f(x - h e_i)) / 2h, rounded to float.
std::vector<float> numeric_gradient(std::vector<double> x,
                                    const std::function<double(const std::vector<double>&)>& objective) {
  std::vector<float> grad(x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    const double saved = x[i];
    x[i] = saved + kFiniteDifferenceStep;
    const double up = objective(x);
    x[i] = saved - kFiniteDifferenceStep;
    const double down = objective(x);
    x[i] = saved;
    grad[i] = static_cast<float>((up - down) / (2 * kFiniteDifferenceStep));
  }
  return grad;
}

std::vector<double> to_double(const std::vector<float>& v) { return {v.begin(), v.end()}; }

// got matches want to within tol relative to the largest |want| (and in relative L2).
void expect_close(const std::vector<float>& got, const std::vector<float>& want, double tol, const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  const double scale = std::max(max_abs(want.data(), want.size()), 1e-30);
  EXPECT_LE(max_abs_diff(got.data(), want.data(), got.size()), tol * scale) << what;
  EXPECT_LE(relative_l2(got.data(), want.data(), got.size()), tol) << what;
}

// Checks (3): a gradient the op produces must not be all zero.
void expect_nonzero(const std::vector<float>& v, const std::string& what) {
  EXPECT_GT(max_abs(v.data(), v.size()), 0.0) << what << " is all zero";
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

// Runs `produce` (which returns everything the fast variant wrote) with 1, 2, 3 and 8 OpenMP threads
// and expects the same bits every time.
void expect_thread_count_invariant(const std::function<std::vector<float>()>& produce, const std::string& what) {
  const int saved = omp_get_max_threads();
  omp_set_num_threads(1);
  const std::vector<float> single = produce();
  for (int threads : {2, 3, 8}) {
    omp_set_num_threads(threads);
    EXPECT_TRUE(same_bits(produce(), single)) << what << ": " << threads << " threads differ from 1";
  }
  omp_set_num_threads(saved);
  expect_nonzero(single, what);
}

std::vector<int32_t> random_ints(size_t n, uint32_t seed, int32_t lo, int32_t hi) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int32_t> dist(lo, hi);
  std::vector<int32_t> v(n);
  for (auto& x : v) x = dist(rng);
  return v;
}

// "name value name value ..." for failure messages.
template <class... Parts>
std::string describe(const Parts&... parts) {
  std::ostringstream out;
  ((out << parts << ' '), ...);
  return out.str();
}

// Appends b to a (to compare several outputs of one call at once).
std::vector<float> concat(std::vector<float> a, const std::vector<float>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

// ---- LayerNorm backward ----------------------------------------------------------------------------

// sum_{r,c} w[r,c] * LayerNorm(s)[r,c] in double.
double layernorm_objective(const std::vector<double>& s, const std::vector<double>& gamma,
                           const std::vector<double>& beta, const std::vector<double>& w, int64_t rows,
                           int64_t cols, double eps) {
  double total = 0;
  for (int64_t r = 0; r < rows; ++r) {
    double mean = 0, var = 0;
    for (int64_t c = 0; c < cols; ++c) mean += s[r * cols + c];
    mean /= cols;
    for (int64_t c = 0; c < cols; ++c) var += (s[r * cols + c] - mean) * (s[r * cols + c] - mean);
    const double rstd = 1 / std::sqrt(var / cols + eps);
    for (int64_t c = 0; c < cols; ++c)
      total += w[r * cols + c] * ((s[r * cols + c] - mean) * rstd * gamma[c] + beta[c]);
  }
  return total;
}

struct LayerNormCase {
  std::vector<float> s, gamma, dy;
  int64_t rows, cols;
  float eps;
};

LayerNormCase make_layernorm_case(int64_t rows, int64_t cols, uint32_t seed, float eps = 1e-12f) {
  LayerNormCase k{random_floats(rows * cols, seed, -1.f, 1.5f), random_floats(cols, seed + 1, 0.5f, 1.5f),
                  random_floats(rows * cols, seed + 2), rows, cols, eps};
  return k;
}

struct LayerNormGrads {
  std::vector<float> ds, dgamma, dbeta;
};

LayerNormGrads run_layernorm_backward(const LayerNormCase& k, bool fast, float prefill = 0.f) {
  LayerNormGrads g{std::vector<float>(k.rows * k.cols, 0.f), std::vector<float>(k.cols, prefill),
                   std::vector<float>(k.cols, -prefill)};
  LayerNormBackwardArgs a;
  a.s = k.s.data();
  a.gamma = k.gamma.data();
  a.dy = k.dy.data();
  a.ds = g.ds.data();
  a.dgamma = g.dgamma.data();
  a.dbeta = g.dbeta.data();
  a.rows = k.rows;
  a.cols = k.cols;
  a.eps = k.eps;
  fast ? layernorm_backward_f32(a) : layernorm_backward_f32_ref(a);
  return g;
}

TEST(LayerNormBackward, RefMatchesFiniteDifferences) {
  for (float eps : {1e-5f, 1e-12f}) {
    const LayerNormCase k = make_layernorm_case(3, 17, 11, eps);
    const LayerNormGrads g = run_layernorm_backward(k, /*fast=*/false);
    const auto s = to_double(k.s), gamma = to_double(k.gamma), w = to_double(k.dy);
    const std::vector<double> beta(k.cols, 0.1);
    const auto want_ds = numeric_gradient(
        s, [&](const std::vector<double>& v) { return layernorm_objective(v, gamma, beta, w, k.rows, k.cols, eps); });
    const auto want_dgamma = numeric_gradient(
        gamma, [&](const std::vector<double>& v) { return layernorm_objective(s, v, beta, w, k.rows, k.cols, eps); });
    const auto want_dbeta = numeric_gradient(
        beta, [&](const std::vector<double>& v) { return layernorm_objective(s, gamma, v, w, k.rows, k.cols, eps); });
    expect_close(g.ds, want_ds, 1e-5, "ds");
    expect_close(g.dgamma, want_dgamma, 1e-5, "dgamma");
    expect_close(g.dbeta, want_dbeta, 1e-5, "dbeta");
    expect_nonzero(g.ds, "ds");
    expect_nonzero(g.dgamma, "dgamma");
    expect_nonzero(g.dbeta, "dbeta");
  }
}

TEST(LayerNormBackward, FastMatchesRef) {
  for (int64_t rows : {1, 3, 17, 64, 100}) {
    for (int64_t cols : {1, 3, 17, 64, 100, 769}) {
      const std::string what = describe("rows", rows, "cols", cols);
      const LayerNormCase k = make_layernorm_case(rows, cols, static_cast<uint32_t>(rows * 1000 + cols));
      const LayerNormGrads want = run_layernorm_backward(k, false);
      const LayerNormGrads got = run_layernorm_backward(k, true);
      expect_close(got.ds, want.ds, 2e-5, what + " ds");
      expect_close(got.dgamma, want.dgamma, 1e-5, what + " dgamma");
      expect_close(got.dbeta, want.dbeta, 1e-6, what + " dbeta");
      if (cols > 1) {  // one column normalises to 0: ds and dgamma are exactly 0 there
        expect_nonzero(got.ds, what + " ds");
        expect_nonzero(got.dgamma, what + " dgamma");
      }
      expect_nonzero(got.dbeta, what + " dbeta");
    }
  }
}

TEST(LayerNormBackward, DsMayAliasDy) {
  const LayerNormCase k = make_layernorm_case(17, 100, 5);
  for (bool fast : {false, true}) {
    const LayerNormGrads separate = run_layernorm_backward(k, fast);
    std::vector<float> in_place = k.dy, dgamma(k.cols, 0.f), dbeta(k.cols, 0.f);
    LayerNormBackwardArgs a;
    a.s = k.s.data();
    a.gamma = k.gamma.data();
    a.dy = in_place.data();
    a.ds = in_place.data();
    a.dgamma = dgamma.data();
    a.dbeta = dbeta.data();
    a.rows = k.rows;
    a.cols = k.cols;
    a.eps = k.eps;
    fast ? layernorm_backward_f32(a) : layernorm_backward_f32_ref(a);
    EXPECT_TRUE(same_bits(in_place, separate.ds)) << (fast ? "fast" : "ref");
    EXPECT_TRUE(same_bits(dgamma, separate.dgamma)) << (fast ? "fast" : "ref");
    EXPECT_TRUE(same_bits(dbeta, separate.dbeta)) << (fast ? "fast" : "ref");
  }
}

TEST(LayerNormBackward, ParameterGradientsAccumulate) {
  const LayerNormCase k = make_layernorm_case(17, 769, 8);
  for (bool fast : {false, true}) {
    const LayerNormGrads fresh = run_layernorm_backward(k, fast, 0.f);
    const LayerNormGrads accumulated = run_layernorm_backward(k, fast, 0.75f);
    std::vector<float> want_dgamma(k.cols), want_dbeta(k.cols);
    for (int64_t c = 0; c < k.cols; ++c) {
      want_dgamma[c] = 0.75f + fresh.dgamma[c];
      want_dbeta[c] = -0.75f + fresh.dbeta[c];
    }
    expect_close(accumulated.dgamma, want_dgamma, 1e-6, fast ? "fast dgamma" : "ref dgamma");
    expect_close(accumulated.dbeta, want_dbeta, 1e-6, fast ? "fast dbeta" : "ref dbeta");
    EXPECT_TRUE(same_bits(accumulated.ds, fresh.ds));
  }
}

TEST(LayerNormBackward, FastIsThreadCountInvariant) {
  const LayerNormCase k = make_layernorm_case(257, 769, 9);
  expect_thread_count_invariant(
      [&] {
        const LayerNormGrads g = run_layernorm_backward(k, true, 0.5f);
        return concat(concat(g.ds, g.dgamma), g.dbeta);
      },
      "layernorm_backward");
}

// ---- softmax backward ------------------------------------------------------------------------------

// P = masked softmax(scale * S) in double, the forward of softmax_masked (rows with a live key).
std::vector<double> masked_softmax(const std::vector<double>& scores, const std::vector<int32_t>& mask,
                                   int64_t batch, int64_t rows_per_batch, int64_t k_len, double scale) {
  std::vector<double> p(scores.size(), 0.0);
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t r = 0; r < rows_per_batch; ++r) {
      const int64_t row = (b * rows_per_batch + r) * k_len;
      double mx = -std::numeric_limits<double>::infinity(), sum = 0;
      for (int64_t k = 0; k < k_len; ++k)
        if (mask[b * k_len + k]) mx = std::max(mx, scale * scores[row + k]);
      for (int64_t k = 0; k < k_len; ++k)
        if (mask[b * k_len + k]) sum += std::exp(scale * scores[row + k] - mx);
      for (int64_t k = 0; k < k_len; ++k)
        if (mask[b * k_len + k]) p[row + k] = std::exp(scale * scores[row + k] - mx) / sum;
    }
  }
  return p;
}

std::vector<float> run_softmax_backward(const std::vector<float>& probs, const std::vector<float>& dprobs,
                                        int64_t batch, int64_t heads, int64_t q_len, int64_t k_len, float scale,
                                        bool fast) {
  std::vector<float> grad = dprobs;
  SoftmaxBackwardArgs a;
  a.probs = probs.data();
  a.grad = grad.data();
  a.batch = batch;
  a.heads = heads;
  a.q_len = q_len;
  a.k_len = k_len;
  a.scale = scale;
  fast ? softmax_backward_f32(a) : softmax_backward_f32_ref(a);
  return grad;
}

TEST(SoftmaxBackward, RefMatchesFiniteDifferences) {
  const int64_t batch = 2, heads = 2, q_len = 3, k_len = 7;
  const float scale = 0.35f;
  const int64_t n = batch * heads * q_len * k_len;
  std::vector<int32_t> mask(batch * k_len, 1);
  mask[5] = mask[6] = 0;                      // batch 0: the last two keys are padding
  mask[k_len + 0] = mask[k_len + 3] = 0;      // batch 1: keys 0 and 3
  const auto scores = to_double(random_floats(n, 21, -3.f, 3.f));
  const auto weights = to_double(random_floats(n, 22));
  const std::vector<double> p = masked_softmax(scores, mask, batch, heads * q_len, k_len, scale);
  const std::vector<float> probs(p.begin(), p.end());
  const std::vector<float> dprobs(weights.begin(), weights.end());

  const auto got = run_softmax_backward(probs, dprobs, batch, heads, q_len, k_len, scale, false);
  const auto want = numeric_gradient(scores, [&](const std::vector<double>& s) {
    const auto q = masked_softmax(s, mask, batch, heads * q_len, k_len, scale);
    double total = 0;
    for (int64_t i = 0; i < n; ++i) total += weights[i] * q[i];
    return total;
  });
  expect_close(got, want, 1e-5, "dS");
  expect_nonzero(got, "dS");
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t r = 0; r < heads * q_len; ++r)
      for (int64_t k = 0; k < k_len; ++k)
        if (!mask[b * k_len + k]) {
          EXPECT_EQ(got[(b * heads * q_len + r) * k_len + k], 0.f) << "masked key " << k;
        }
}

// Probabilities from the library's forward on random scores, a random key mask (some rows all masked).
std::vector<float> random_probs(int64_t batch, int64_t heads, int64_t q_len, int64_t k_len, float scale,
                                uint32_t seed) {
  std::vector<float> probs = random_floats(batch * heads * q_len * k_len, seed, -4.f, 4.f);
  std::vector<int32_t> mask = random_ints(batch * k_len, seed + 1, 0, 3);
  SoftmaxMaskedArgs f{probs.data(), mask.data(), batch, heads, q_len, k_len, scale};
  softmax_masked_f32_ref(f);
  return probs;
}

TEST(SoftmaxBackward, FastMatchesRef) {
  const float scale = 0.125f;
  for (int64_t batch : {1, 2}) {
    for (int64_t heads : {1, 3}) {
      for (int64_t q_len : {1, 17}) {
        for (int64_t k_len : {1, 7, 33, 100}) {
          const std::string what = describe("batch", batch, "heads", heads, "q_len", q_len, "k_len", k_len);
          const uint32_t seed = static_cast<uint32_t>(batch * 1000 + heads * 100 + q_len * 10 + k_len);
          const auto probs = random_probs(batch, heads, q_len, k_len, scale, seed);
          const auto dprobs = random_floats(probs.size(), seed + 7);
          const auto want = run_softmax_backward(probs, dprobs, batch, heads, q_len, k_len, scale, false);
          const auto got = run_softmax_backward(probs, dprobs, batch, heads, q_len, k_len, scale, true);
          expect_close(got, want, 1e-5, what);
          if (k_len > 1) expect_nonzero(got, what);  // one key: P = 1 and dS = scale (dP - dP) = 0
        }
      }
    }
  }
}

// With the dropped probabilities D = dropout(P), the folded backward equals dropout(dD) (same mask) then
// the plain backward, in the reference and in the CPU kernel, and masked keys still get 0.
TEST(SoftmaxBackward, DroppedProbabilitiesFoldTheDropoutBackwardIn) {
  const int64_t batch = 2, heads = 3, q_len = 5, k_len = 37;
  const float scale = 0.125f, p = 0.25f;
  const auto probs = random_probs(batch, heads, q_len, k_len, scale, 61);
  const int64_t n = static_cast<int64_t>(probs.size());
  std::vector<float> dropped = probs;
  dropout_f32_ref({dropped.data(), n, p, 99, 1234});
  const auto dd = random_floats(probs.size(), 62);
  std::vector<float> want = dd;  // dropout's backward (the same call on the gradient), then the plain backward
  dropout_f32_ref({want.data(), n, p, 99, 1234});
  softmax_backward_f32_ref({probs.data(), want.data(), batch, heads, q_len, k_len, scale});
  for (bool fast : {false, true}) {
    std::vector<float> got = dd;
    SoftmaxBackwardArgs a{probs.data(), got.data(), batch, heads, q_len, k_len, scale, dropped.data()};
    ASSERT_TRUE(check(a).ok());
    fast ? softmax_backward_f32(a) : softmax_backward_f32_ref(a);
    expect_close(got, want, 1e-5, fast ? "cpu" : "ref");
    expect_nonzero(got, fast ? "cpu" : "ref");
    for (int64_t i = 0; i < n; ++i) {
      if (probs[i] == 0.f) {
        EXPECT_EQ(got[i], 0.f) << "masked key at " << i;
      }
    }
  }
  SoftmaxBackwardArgs overlapping{probs.data(), const_cast<float*>(dd.data()), batch, heads, q_len, k_len, scale, dd.data()};
  EXPECT_FALSE(check(overlapping).ok());
}

TEST(SoftmaxBackward, FastIsThreadCountInvariant) {
  const int64_t batch = 2, heads = 12, q_len = 33, k_len = 33;
  const auto probs = random_probs(batch, heads, q_len, k_len, 0.125f, 31);
  const auto dprobs = random_floats(probs.size(), 32);
  expect_thread_count_invariant(
      [&] { return run_softmax_backward(probs, dprobs, batch, heads, q_len, k_len, 0.125f, true); },
      "softmax_backward");
}

// ---- activation backward ---------------------------------------------------------------------------

constexpr Activation kAllActivations[] = {Activation::kIdentity, Activation::kGeluErf, Activation::kGeluTanh,
                                          Activation::kGeluQuick, Activation::kRelu,     Activation::kTanh};

// The activations of kernels/activation.h in double, in their textbook forms.
double activation_forward(double x, Activation kind) {
  switch (kind) {
    case Activation::kIdentity:
      return x;
    case Activation::kGeluErf:
      return 0.5 * x * (1 + std::erf(x / std::sqrt(2.0)));
    case Activation::kGeluTanh:
      return 0.5 * x * (1 + std::tanh(std::sqrt(2 / std::numbers::pi) * (x + 0.044715 * x * x * x)));
    case Activation::kGeluQuick:
      return x / (1 + std::exp(-1.702 * x));
    case Activation::kRelu:
      return x > 0 ? x : 0;
    case Activation::kTanh:
      return std::tanh(x);
  }
  return x;
}

std::vector<float> run_activation_backward(const std::vector<float>& x, const std::vector<float>& dy,
                                           Activation kind, bool fast) {
  std::vector<float> grad = dy;
  ActivationBackwardArgs a;
  a.x = x.data();
  a.grad = grad.data();
  a.n = static_cast<int64_t>(x.size());
  a.kind = kind;
  fast ? activation_backward_f32(a) : activation_backward_f32_ref(a);
  return grad;
}

TEST(ActivationBackward, TestForwardMatchesLibraryForward) {
  const auto x = random_floats(1000, 41, -6.f, 6.f);
  for (Activation kind : kAllActivations) {
    std::vector<float> library = x, mine(x.size());
    ActivationArgs f{library.data(), static_cast<int64_t>(library.size()), kind};
    activation_f32_ref(f);
    for (size_t i = 0; i < x.size(); ++i) mine[i] = static_cast<float>(activation_forward(x[i], kind));
    expect_close(mine, library, 1e-6, activation_name(kind));
  }
}

TEST(ActivationBackward, RefMatchesFiniteDifferences) {
  std::vector<float> x = random_floats(200, 42, -5.f, 5.f);
  for (float& v : x)
    if (std::fabs(v) < 1e-2f) v = 0.5f;  // keep ReLU's kink out of the finite differences
  const auto dy = random_floats(x.size(), 43);
  for (Activation kind : kAllActivations) {
    const auto got = run_activation_backward(x, dy, kind, false);
    std::vector<float> want(x.size());
    for (size_t i = 0; i < x.size(); ++i) {
      const double h = kFiniteDifferenceStep, v = x[i];
      const double slope = (activation_forward(v + h, kind) - activation_forward(v - h, kind)) / (2 * h);
      want[i] = static_cast<float>(dy[i] * slope);
    }
    expect_close(got, want, 1e-6, activation_name(kind));
    expect_nonzero(got, activation_name(kind));
  }
}

TEST(ActivationBackward, ReluHasZeroGradientAtZero) {
  const std::vector<float> x = {-1.f, -0.f, 0.f, 1e-30f, 2.f};
  const std::vector<float> dy(x.size(), 1.f), want = {0.f, 0.f, 0.f, 1.f, 1.f};
  for (bool fast : {false, true}) EXPECT_EQ(run_activation_backward(x, dy, Activation::kRelu, fast), want);
}

TEST(ActivationBackward, LargeInputsStayFinite) {
  const float inf = std::numeric_limits<float>::infinity();
  const std::vector<float> x = {-inf, -1e4f, -1e3f, -999.f, -100.f, -50.f, -20.f, -10.f,
                                10.f,  20.f,  50.f,  100.f,  999.f,  1e3f,  1e4f,  inf};
  const std::vector<float> dy(x.size(), 1.f);
  for (Activation kind : kAllActivations) {
    const auto want = run_activation_backward(x, dy, kind, false);
    const auto got = run_activation_backward(x, dy, kind, true);
    for (size_t i = 0; i < x.size(); ++i) {
      const std::string what = describe(activation_name(kind), "x", x[i]);
      ASSERT_TRUE(std::isfinite(want[i])) << what;
      ASSERT_TRUE(std::isfinite(got[i])) << what;
      float limit = x[i] > 0 ? 1.f : 0.f;  // every GELU and ReLU
      if (kind == Activation::kIdentity) limit = 1.f;
      if (kind == Activation::kTanh) limit = 0.f;
      EXPECT_NEAR(want[i], limit, 1e-5) << what;
      EXPECT_NEAR(got[i], want[i], 1e-6) << what;
    }
  }
}

TEST(ActivationBackward, FastMatchesRef) {
  for (int64_t n : {1, 3, 17, 100, 769, 100003}) {
    const auto x = random_floats(n, static_cast<uint32_t>(n), -6.f, 6.f);
    const auto dy = random_floats(n, static_cast<uint32_t>(n + 1));
    for (Activation kind : kAllActivations) {
      const std::string what = describe(activation_name(kind), "n", n);
      const auto want = run_activation_backward(x, dy, kind, false);
      const auto got = run_activation_backward(x, dy, kind, true);
      // Absolute: |f'| <= 1.13 and |dy| < 1 here, and the float derivative is good to a few ulp.
      EXPECT_LE(max_abs_diff(got.data(), want.data(), n), 2e-6) << what;
      if (n > 1 || kind != Activation::kRelu) expect_nonzero(got, what);  // a lone x may be negative
    }
  }
}

TEST(ActivationBackward, FastIsThreadCountInvariant) {
  const auto x = random_floats(1 << 17, 51, -6.f, 6.f);
  const auto dy = random_floats(x.size(), 52);
  for (Activation kind : kAllActivations)
    expect_thread_count_invariant([&] { return run_activation_backward(x, dy, kind, true); },
                                  activation_name(kind));
}

// ---- embedding backward ----------------------------------------------------------------------------

struct EmbedCase {
  std::vector<int32_t> ids, positions, types;
  std::vector<float> d_out;
  int64_t tokens, width, vocab, max_pos, type_vocab;
};

EmbedCase make_embed_case(int64_t tokens, int64_t width, uint32_t seed) {
  EmbedCase k;
  k.tokens = tokens;
  k.width = width;
  k.vocab = 7;  // small tables: many tokens share a row
  k.max_pos = 33;
  k.type_vocab = 2;
  k.ids = random_ints(tokens, seed, 0, static_cast<int32_t>(k.vocab - 1));
  k.positions = random_ints(tokens, seed + 1, 0, static_cast<int32_t>(k.max_pos - 1));
  k.types = random_ints(tokens, seed + 2, 0, static_cast<int32_t>(k.type_vocab - 1));
  k.d_out = random_floats(tokens * width, seed + 3);
  return k;
}

struct EmbedGrads {
  std::vector<float> d_word, d_position, d_type;
};

// Which optional inputs the call gets.
struct EmbedInputs {
  bool ids = true, positions = true, types = true, d_position = true, d_type = true;
};

EmbedGrads run_embed_backward(const EmbedCase& k, bool fast, EmbedInputs in = {}, float prefill = 0.f) {
  EmbedGrads g{std::vector<float>(k.vocab * k.width, prefill), std::vector<float>(k.max_pos * k.width, prefill),
               std::vector<float>(k.type_vocab * k.width, prefill)};
  EmbedBackwardArgs a;
  a.input_ids = in.ids ? k.ids.data() : nullptr;
  a.positions = in.positions ? k.positions.data() : nullptr;
  a.token_types = in.types ? k.types.data() : nullptr;
  a.d_out = k.d_out.data();
  a.d_word = g.d_word.data();
  a.d_position = in.d_position ? g.d_position.data() : nullptr;
  a.d_type = in.d_type ? g.d_type.data() : nullptr;
  a.tokens = k.tokens;
  a.width = k.width;
  fast ? embed_backward_f32(a) : embed_backward_f32_ref(a);
  return g;
}

// prefill + onehot(rows)^T d_out, as a dense matmul in double (rows == nullptr: every token row 0).
std::vector<float> dense_scatter(const int32_t* rows, const std::vector<float>& d_out, int64_t tokens,
                                 int64_t table_rows, int64_t width, float prefill) {
  std::vector<double> onehot(tokens * table_rows, 0.0);
  for (int64_t t = 0; t < tokens; ++t) onehot[t * table_rows + (rows ? rows[t] : 0)] = 1.0;
  std::vector<float> out(table_rows * width);
  for (int64_t r = 0; r < table_rows; ++r) {
    for (int64_t c = 0; c < width; ++c) {
      double sum = prefill;
      for (int64_t t = 0; t < tokens; ++t) sum += onehot[t * table_rows + r] * d_out[t * width + c];
      out[r * width + c] = static_cast<float>(sum);
    }
  }
  return out;
}

TEST(EmbedBackward, RefMatchesDenseOneHotMatmul) {
  const EmbedCase k = make_embed_case(23, 5, 61);
  const float prefill = 0.25f;
  const EmbedGrads g = run_embed_backward(k, false, {}, prefill);
  expect_close(g.d_word, dense_scatter(k.ids.data(), k.d_out, k.tokens, k.vocab, k.width, prefill), 1e-6, "d_word");
  expect_close(g.d_position, dense_scatter(k.positions.data(), k.d_out, k.tokens, k.max_pos, k.width, prefill),
               1e-6, "d_position");
  expect_close(g.d_type, dense_scatter(k.types.data(), k.d_out, k.tokens, k.type_vocab, k.width, prefill), 1e-6,
               "d_type");
}

TEST(EmbedBackward, NullInputsSkipOrDefault) {
  const EmbedCase k = make_embed_case(23, 5, 62);
  for (bool fast : {false, true}) {
    // No token types: row 0 of d_type gets every token. No positions: d_position is untouched.
    EmbedInputs in;
    in.types = false;
    in.positions = false;
    const EmbedGrads g = run_embed_backward(k, fast, in);
    expect_close(g.d_type, dense_scatter(nullptr, k.d_out, k.tokens, k.type_vocab, k.width, 0.f), 1e-6, "d_type");
    EXPECT_EQ(max_abs(g.d_position.data(), g.d_position.size()), 0.0);
    expect_nonzero(g.d_word, "d_word");
    // No ids: d_word is untouched; null table gradients are skipped.
    EmbedInputs no_ids;
    no_ids.ids = false;
    no_ids.d_position = false;
    no_ids.d_type = false;
    const EmbedGrads h = run_embed_backward(k, fast, no_ids, 0.5f);
    EXPECT_TRUE(same_bits(h.d_word, std::vector<float>(k.vocab * k.width, 0.5f)));
  }
}

TEST(EmbedBackward, FastMatchesRef) {
  for (int64_t tokens : {1, 3, 17, 100, 257}) {
    for (int64_t width : {1, 3, 17, 64, 769}) {
      const std::string what = describe("tokens", tokens, "width", width);
      const EmbedCase k = make_embed_case(tokens, width, static_cast<uint32_t>(tokens * 1000 + width));
      const EmbedGrads want = run_embed_backward(k, false);
      const EmbedGrads got = run_embed_backward(k, true);
      expect_close(got.d_word, want.d_word, 1e-5, what + " d_word");
      expect_close(got.d_position, want.d_position, 1e-5, what + " d_position");
      expect_close(got.d_type, want.d_type, 1e-5, what + " d_type");
      expect_nonzero(got.d_word, what + " d_word");
      expect_nonzero(got.d_position, what + " d_position");
      expect_nonzero(got.d_type, what + " d_type");
    }
  }
}

TEST(EmbedBackward, TableGradientsAccumulate) {
  const EmbedCase k = make_embed_case(100, 769, 63);
  for (bool fast : {false, true}) {
    const EmbedGrads fresh = run_embed_backward(k, fast, {}, 0.f);
    const EmbedGrads accumulated = run_embed_backward(k, fast, {}, -1.5f);
    auto shifted = [](std::vector<float> v) {
      for (float& x : v) x += -1.5f;
      return v;
    };
    expect_close(accumulated.d_word, shifted(fresh.d_word), 1e-6, "d_word");
    expect_close(accumulated.d_position, shifted(fresh.d_position), 1e-6, "d_position");
    expect_close(accumulated.d_type, shifted(fresh.d_type), 1e-6, "d_type");
  }
}

TEST(EmbedBackward, FastIsThreadCountInvariant) {
  const EmbedCase k = make_embed_case(512, 769, 64);
  expect_thread_count_invariant(
      [&] {
        const EmbedGrads g = run_embed_backward(k, true, {}, 0.125f);
        return concat(concat(g.d_word, g.d_position), g.d_type);
      },
      "embed_backward");
}

// ---- column sum ------------------------------------------------------------------------------------

std::vector<float> run_column_sum(const std::vector<float>& x, int64_t rows, int64_t cols, int64_t ld, bool fast,
                                  float prefill = 0.f) {
  std::vector<float> out(cols, prefill);
  ColumnSumArgs a{x.data(), out.data(), rows, cols, ld};
  fast ? column_sum_f32(a) : column_sum_f32_ref(a);
  return out;
}

TEST(ColumnSum, RefMatchesFiniteDifferencesOfBiasAdd) {
  // d/db of sum_{r,c} G[r,c] * (X[r,c] + b[c]) is the column sum of G (stride ld > cols).
  const int64_t rows = 5, cols = 7, ld = 10;
  const auto g = random_floats(rows * ld, 71);
  const auto x = to_double(random_floats(rows * ld, 72));
  const auto got = run_column_sum(g, rows, cols, ld, false);
  const auto want = numeric_gradient(std::vector<double>(cols, 0.3), [&](const std::vector<double>& b) {
    double total = 0;
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c) total += g[r * ld + c] * (x[r * ld + c] + b[c]);
    return total;
  });
  expect_close(got, want, 1e-6, "column_sum");
  expect_nonzero(got, "column_sum");
}

TEST(ColumnSum, FastMatchesRef) {
  for (int64_t rows : {1, 3, 17, 100, 769}) {
    for (int64_t cols : {1, 3, 17, 64, 100, 769}) {
      for (int64_t ld : {int64_t{0}, cols + 5}) {
        const std::string what = describe("rows", rows, "cols", cols, "ld", ld);
        const auto x = random_floats(rows * (ld ? ld : cols), static_cast<uint32_t>(rows * 1000 + cols));
        const auto want = run_column_sum(x, rows, cols, ld, false);
        const auto got = run_column_sum(x, rows, cols, ld, true);
        expect_close(got, want, 1e-6, what);
        expect_nonzero(got, what);
      }
    }
  }
}

TEST(ColumnSum, Accumulates) {
  const int64_t rows = 100, cols = 769;
  const auto x = random_floats(rows * cols, 73);
  for (bool fast : {false, true}) {
    auto want = run_column_sum(x, rows, cols, 0, fast, 0.f);
    for (float& v : want) v += 2.f;
    expect_close(run_column_sum(x, rows, cols, 0, fast, 2.f), want, 1e-6, fast ? "fast" : "ref");
  }
}

TEST(ColumnSum, FastIsThreadCountInvariant) {
  const int64_t rows = 1000, cols = 769;
  const auto x = random_floats(rows * cols, 74);
  expect_thread_count_invariant([&] { return run_column_sum(x, rows, cols, 0, true, 0.5f); }, "column_sum");
}

// ---- cross-entropy ---------------------------------------------------------------------------------

struct CrossEntropyResult {
  LossSum loss;
  std::vector<float> dlogits;
};

CrossEntropyResult run_cross_entropy(const std::vector<float>& logits, const std::vector<int32_t>& targets,
                                     int64_t rows, int64_t classes, int64_t ld, float grad_scale, bool fast,
                                     int32_t ignore_index = -100) {
  CrossEntropyResult res;
  res.dlogits.assign(logits.size(), 7.f);  // sentinel: the padding columns must stay untouched
  CrossEntropyArgs a;
  a.logits = logits.data();
  a.targets = targets.data();
  a.dlogits = res.dlogits.data();
  a.rows = rows;
  a.classes = classes;
  a.ld = ld;
  a.ignore_index = ignore_index;
  a.grad_scale = grad_scale;
  res.loss = fast ? cross_entropy_f32(a) : cross_entropy_f32_ref(a);
  return res;
}

// The summed softmax cross-entropy of the counted rows, in double.
double cross_entropy_loss(const std::vector<double>& logits, const std::vector<int32_t>& targets, int64_t rows,
                          int64_t classes, int64_t ld, int32_t ignore_index) {
  double total = 0;
  for (int64_t r = 0; r < rows; ++r) {
    if (targets[r] == ignore_index) continue;
    double mx = -std::numeric_limits<double>::infinity(), sum = 0;
    for (int64_t c = 0; c < classes; ++c) mx = std::max(mx, logits[r * ld + c]);
    for (int64_t c = 0; c < classes; ++c) sum += std::exp(logits[r * ld + c] - mx);
    total += std::log(sum) + mx - logits[r * ld + targets[r]];
  }
  return total;
}

TEST(CrossEntropy, RefMatchesFiniteDifferences) {
  const int64_t rows = 6, classes = 7, ld = 9;
  const float grad_scale = 0.25f;
  for (int32_t ignore_index : {-100, 2}) {
    const std::vector<int32_t> targets = {0, 3, ignore_index, 6, 1, 5};
    const auto logits = random_floats(rows * ld, 81, -4.f, 4.f);
    const auto res = run_cross_entropy(logits, targets, rows, classes, ld, grad_scale, false, ignore_index);
    const auto x = to_double(logits);
    const int64_t counted = std::count_if(targets.begin(), targets.end(), [&](int32_t t) { return t != ignore_index; });
    EXPECT_EQ(res.loss.count, counted);
    EXPECT_NEAR(res.loss.sum, cross_entropy_loss(x, targets, rows, classes, ld, ignore_index), 1e-12);
    auto want = numeric_gradient(x, [&](const std::vector<double>& v) {
      return grad_scale * cross_entropy_loss(v, targets, rows, classes, ld, ignore_index);
    });
    for (int64_t r = 0; r < rows; ++r)  // the padding columns are no input of the loss
      for (int64_t c = classes; c < ld; ++c) want[r * ld + c] = 7.f;
    expect_close(res.dlogits, want, 1e-5, "dlogits");
    expect_nonzero(res.dlogits, "dlogits");
    for (int64_t c = 0; c < classes; ++c) EXPECT_EQ(res.dlogits[2 * ld + c], 0.f) << "ignored row, class " << c;
  }
}

TEST(CrossEntropy, IgnoredRowsAreNotCounted) {
  const int64_t rows = 4, classes = 5;
  const auto logits = random_floats(rows * classes, 82, -2.f, 2.f);
  for (bool fast : {false, true}) {
    const auto all_ignored = run_cross_entropy(logits, {-100, -100, -100, -100}, rows, classes, 0, 1.f, fast);
    EXPECT_EQ(all_ignored.loss.count, 0);
    EXPECT_EQ(all_ignored.loss.sum, 0.0);
    EXPECT_EQ(max_abs(all_ignored.dlogits.data(), all_ignored.dlogits.size()), 0.0);
    // Ignoring a row drops exactly its loss.
    const auto full = run_cross_entropy(logits, {1, 2, 3, 4}, rows, classes, 0, 1.f, fast);
    const auto partial = run_cross_entropy(logits, {1, -100, 3, 4}, rows, classes, 0, 1.f, fast);
    const auto row1 = run_cross_entropy(
        std::vector<float>(logits.begin() + classes, logits.begin() + 2 * classes), {2}, 1, classes, 0, 1.f, fast);
    EXPECT_EQ(partial.loss.count, 3);
    EXPECT_NEAR(partial.loss.sum + row1.loss.sum, full.loss.sum, 1e-12);
  }
}

TEST(CrossEntropy, FastMatchesRef) {
  struct Shape {
    int64_t rows, classes;
  };
  std::vector<Shape> shapes;
  for (int64_t rows : {1, 3, 17, 100})
    for (int64_t classes : {1, 2, 3, 17, 769}) shapes.push_back({rows, classes});
  shapes.push_back({3, 30522});
  for (const Shape& s : shapes) {
    for (int64_t pad : {0, 3}) {
      const int64_t ld = s.classes + pad;
      const std::string what = describe("rows", s.rows, "classes", s.classes, "ld", ld);
      const uint32_t seed = static_cast<uint32_t>(s.rows * 100000 + s.classes + pad);
      const auto logits = random_floats(s.rows * ld, seed, -8.f, 8.f);
      auto targets = random_ints(s.rows, seed + 1, 0, static_cast<int32_t>(s.classes - 1));
      for (int64_t r = 1; r < s.rows; r += 4) targets[r] = -100;
      const int64_t counted = std::count_if(targets.begin(), targets.end(), [](int32_t t) { return t != -100; });
      const float grad_scale = 1.f / static_cast<float>(std::max<int64_t>(counted, 1));
      const auto want = run_cross_entropy(logits, targets, s.rows, s.classes, ld, grad_scale, false);
      const auto got = run_cross_entropy(logits, targets, s.rows, s.classes, ld, grad_scale, true);
      EXPECT_EQ(got.loss.count, want.loss.count) << what;
      EXPECT_EQ(got.loss.count, counted) << what;
      EXPECT_NEAR(got.loss.sum, want.loss.sum, 1e-6 * std::max(1.0, std::fabs(want.loss.sum))) << what;
      expect_close(got.dlogits, want.dlogits, 1e-5, what);
      if (s.classes > 1) {
        expect_nonzero(got.dlogits, what);
        EXPECT_GT(got.loss.sum, 0.0) << what;
      }
    }
  }
}

TEST(CrossEntropy, FastWithoutGradient) {
  const int64_t rows = 17, classes = 769;
  const auto logits = random_floats(rows * classes, 83, -8.f, 8.f);
  const auto targets = random_ints(rows, 84, 0, classes - 1);
  CrossEntropyArgs a;
  a.logits = logits.data();
  a.targets = targets.data();
  a.rows = rows;
  a.classes = classes;
  const LossSum fast = cross_entropy_f32(a), ref = cross_entropy_f32_ref(a);
  EXPECT_EQ(fast.count, rows);
  EXPECT_NEAR(fast.sum, ref.sum, 1e-6 * ref.sum);
  const auto with_gradient = run_cross_entropy(logits, targets, rows, classes, 0, 1.f, true);
  EXPECT_EQ(with_gradient.loss.sum, fast.sum);
}

TEST(CrossEntropy, FastIsThreadCountInvariant) {
  const int64_t rows = 256, classes = 769;
  const auto logits = random_floats(rows * classes, 85, -8.f, 8.f);
  auto targets = random_ints(rows, 86, 0, classes - 1);
  for (int64_t r = 0; r < rows; r += 5) targets[r] = -100;
  expect_thread_count_invariant(
      [&] {
        const auto res = run_cross_entropy(logits, targets, rows, classes, 0, 1.f / 200, true);
        std::vector<float> sum_bits(2);  // the double sum, bit for bit
        std::memcpy(sum_bits.data(), &res.loss.sum, sizeof(double));
        return concat(res.dlogits, sum_bits);
      },
      "cross_entropy");
}

// ---- BCE with logits and MSE -----------------------------------------------------------------------

double bce_loss(const std::vector<double>& x, const std::vector<float>& t, const std::vector<int32_t>& mask) {
  double total = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    if (!mask[i]) continue;
    const double p = 1 / (1 + std::exp(-x[i]));
    const double target = t[i];
    total += -(target * std::log(p) + (1 - target) * std::log1p(-p));
  }
  return total;
}

TEST(BceWithLogits, RefMatchesFiniteDifferencesAndMask) {
  const int64_t n = 13;
  const float grad_scale = 0.5f;
  const auto logits = random_floats(n, 91, -5.f, 5.f);
  const auto targets = random_floats(n, 92, 0.f, 1.f);  // soft targets
  std::vector<int32_t> mask(n, 1);
  mask[2] = mask[7] = mask[12] = 0;
  std::vector<float> dlogits(n, 7.f);
  BceWithLogitsArgs a;
  a.logits = logits.data();
  a.targets = targets.data();
  a.mask = mask.data();
  a.dlogits = dlogits.data();
  a.n = n;
  a.grad_scale = grad_scale;
  const LossSum loss = bce_with_logits_f32_ref(a);
  const auto x = to_double(logits);
  EXPECT_EQ(loss.count, n - 3);
  EXPECT_NEAR(loss.sum, bce_loss(x, targets, mask), 1e-12);
  const auto want =
      numeric_gradient(x, [&](const std::vector<double>& v) { return grad_scale * bce_loss(v, targets, mask); });
  expect_close(dlogits, want, 1e-5, "dlogits");
  expect_nonzero(dlogits, "dlogits");
  for (int64_t i : {2, 7, 12}) EXPECT_EQ(dlogits[i], 0.f) << "masked entry " << i;

  // No mask: everything counts.
  a.mask = nullptr;
  EXPECT_EQ(bce_with_logits_f32_ref(a).count, n);
}

TEST(BceWithLogits, LargeLogitsStayFinite) {
  const std::vector<float> logits = {-1e4f, -100.f, 100.f, 1e4f}, targets = {0.f, 1.f, 0.f, 1.f};
  std::vector<float> dlogits(4);
  BceWithLogitsArgs a;
  a.logits = logits.data();
  a.targets = targets.data();
  a.dlogits = dlogits.data();
  a.n = 4;
  const LossSum loss = bce_with_logits_f32_ref(a);
  EXPECT_NEAR(loss.sum, 100.0 + 100.0, 1e-9);  // the confident right answers cost ~0
  EXPECT_EQ(dlogits, (std::vector<float>{0.f, -1.f, 1.f, 0.f}));
}

TEST(Mse, RefMatchesFiniteDifferences) {
  const int64_t n = 13;
  const float grad_scale = 1.f / n;
  const auto pred = random_floats(n, 93), target = random_floats(n, 94);
  std::vector<float> dpred(n);
  MseArgs a{pred.data(), target.data(), dpred.data(), n, grad_scale};
  const LossSum loss = mse_f32_ref(a);
  auto mse = [&](const std::vector<double>& p) {
    double total = 0;
    for (int64_t i = 0; i < n; ++i) total += (p[i] - target[i]) * (p[i] - target[i]);
    return total;
  };
  EXPECT_EQ(loss.count, n);
  EXPECT_NEAR(loss.sum, mse(to_double(pred)), 1e-12);
  const auto want = numeric_gradient(to_double(pred), [&](const std::vector<double>& p) { return grad_scale * mse(p); });
  expect_close(dpred, want, 1e-5, "dpred");
  expect_nonzero(dpred, "dpred");
}

// ---- dropout ---------------------------------------------------------------------------------------

std::vector<float> run_dropout(std::vector<float> x, float p, uint64_t seed, uint64_t offset, bool fast) {
  DropoutArgs a{x.data(), static_cast<int64_t>(x.size()), p, seed, offset};
  fast ? dropout_f32(a) : dropout_f32_ref(a);
  return x;
}

TEST(Dropout, ZeroProbabilityIsIdentity) {
  const auto x = random_floats(100003, 101);
  for (bool fast : {false, true}) EXPECT_TRUE(same_bits(run_dropout(x, 0.f, 1234, 5, fast), x));
}

TEST(Dropout, KeepsAboutOneMinusPAndScalesSurvivors) {
  const int64_t n = 1000000;
  const float p = 0.1f;
  const uint64_t seed = 0xC0FFEE, offset = 12345;
  const auto x = random_floats(n, 102, 0.5f, 1.5f);  // never 0, so 0 means dropped
  const auto ref = run_dropout(x, p, seed, offset, false);
  const auto fast = run_dropout(x, p, seed, offset, true);
  EXPECT_TRUE(same_bits(ref, fast));  // same seed and offset: same mask, same values
  int64_t kept = 0;
  for (int64_t i = 0; i < n; ++i) {
    const bool keep = dropout_keep(seed, offset + i, p);
    ASSERT_EQ(ref[i] != 0.f, keep) << i;
    if (!keep) continue;
    ++kept;
    ASSERT_NEAR(ref[i], x[i] / (1.0 - p), 1e-6 * ref[i]) << i;
  }
  EXPECT_NEAR(static_cast<double>(kept) / n, 1.0 - p, 0.01);
}

TEST(Dropout, OffsetShiftsTheStream) {
  for (int64_t n : {int64_t{1000}, int64_t{1} << 16}) {
    const auto x = random_floats(2 * n, 103, 0.5f, 1.5f);
    for (bool fast : {false, true}) {
      const auto whole = run_dropout(x, 0.3f, 77, 0, fast);
      const auto first = run_dropout(std::vector<float>(x.begin(), x.begin() + n), 0.3f, 77, 0, fast);
      const auto second = run_dropout(std::vector<float>(x.begin() + n, x.end()), 0.3f, 77, n, fast);
      EXPECT_TRUE(same_bits(whole, concat(first, second))) << "n " << n << (fast ? " fast" : " ref");
      // Another seed draws another mask.
      const auto other = run_dropout(x, 0.3f, 78, 0, fast);
      int64_t differ = 0;
      for (int64_t i = 0; i < 2 * n; ++i) differ += (whole[i] == 0.f) != (other[i] == 0.f);
      EXPECT_GT(differ, n / 5) << "n " << n;
    }
  }
}

TEST(Dropout, FastIsThreadCountInvariant) {
  const auto x = random_floats(1 << 18, 104, 0.5f, 1.5f);
  expect_thread_count_invariant([&] { return run_dropout(x, 0.1f, 9, 3, true); }, "dropout");
}

// The AVX-512 erf-GELU backward at the edges: huge, saturated, tiny and non-finite inputs, in a length
// with a masked tail (where the CPU runs AVX-512).
TEST(ActivationBackward, Avx512GeluErfEdges) {
  if (!cpu_has_isa(CpuIsa::kAvx512)) GTEST_SKIP() << "no AVX-512 (or BERT_CPU_ISA lowers it)";
  const float inf = std::numeric_limits<float>::infinity();
  std::vector<float> x = {-1e4f, -30.f, -15.5f, -15.f, -14.9f, -5.f, -1.f, -1e-30f, -0.f, 0.f,  1e-30f, 0.5f,
                          1.f,   5.f,   14.9f,  15.f,  15.5f,  30.f, 1e4f, inf,     -inf, 2.5f, -2.5f, 0.7071f};
  const std::vector<float> dy = random_floats(x.size(), 77);
  std::vector<float> got = dy, want = dy;
  activation_backward_f32_avx512({x.data(), got.data(), static_cast<int64_t>(x.size()), Activation::kGeluErf});
  activation_backward_f32_ref({x.data(), want.data(), static_cast<int64_t>(x.size()), Activation::kGeluErf});
  for (size_t i = 0; i < x.size(); ++i) EXPECT_NEAR(got[i], want[i], 2e-6) << "x = " << x[i];
  std::vector<float> nan = {std::numeric_limits<float>::quiet_NaN()}, g = {1.f};
  activation_backward_f32_avx512({nan.data(), g.data(), 1, Activation::kGeluErf});
  EXPECT_TRUE(std::isnan(g[0]));
}

// ---- the registry's variant list -------------------------------------------------------------------
// Every non-reference training entry (kernels/registry.h) against its reference entry, called through
// the registry's function pointers, at sizes around SIMD tile edges; outputs must not be all zero.

std::vector<std::string> training_variants() {
  std::vector<std::string> names;
  for (const KernelEntry& e : kernel_registry()) {
    const bool train = e.op == Op::kLayerNormBackward || e.op == Op::kSoftmaxBackward ||
                       e.op == Op::kActivationBackward || e.op == Op::kEmbedBackward || e.op == Op::kColumnSum ||
                       e.op == Op::kCrossEntropy || e.op == Op::kBceWithLogits || e.op == Op::kMse ||
                       e.op == Op::kDropout;
    if (train && e.device == Device::kCpu) names.push_back(e.name);
  }
  return names;
}

class TrainingVariant : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    e_ = find_kernel(GetParam());
    ASSERT_NE(e_, nullptr);
    ref_ = reference_of(*e_);
    ASSERT_NE(ref_, nullptr) << GetParam() << " has no reference";
    if (static_cast<int>(detect_cpu_isa()) < static_cast<int>(e_->isa))
      GTEST_SKIP() << GetParam() << " needs " << cpu_isa_name(e_->isa) << " (BERT_CPU_ISA limit "
                   << cpu_isa_name(detect_cpu_isa()) << ")";
  }
  // Runs the entry on `got` args and the reference on `want` args (same op).
  template <class Args>
  auto both(const Args& got, const Args& want) const {
    EXPECT_TRUE(check(got).ok()) << check(got).to_string();
    using Fn = typename OpTraits<Args>::Fn;
    ref_->fn_as<Fn>()(want);
    return e_->fn_as<Fn>()(got);
  }
  const KernelEntry* e_ = nullptr;
  const KernelEntry* ref_ = nullptr;
};

TEST_P(TrainingVariant, MatchesItsReference) {
  for (int64_t n : {1, 7, 8, 9, 16, 17, 33, 65, 129, 768}) {
    const std::string what = GetParam() + " size " + std::to_string(n);
    const uint32_t seed = 900 + static_cast<uint32_t>(n);
    const int64_t rows = 5;
    switch (e_->op) {
      case Op::kLayerNormBackward: {
        const auto s = random_floats(rows * n, seed, -1.f, 1.5f), g = random_floats(n, seed + 1, 0.5f, 1.5f);
        const auto dy = random_floats(rows * n, seed + 2);
        std::vector<float> ds(dy.size()), dg(n, 0.25f), db(n, -0.5f), ds2(dy.size()), dg2 = dg, db2 = db;
        both(LayerNormBackwardArgs{s.data(), g.data(), dy.data(), ds.data(), dg.data(), db.data(), rows, n},
             LayerNormBackwardArgs{s.data(), g.data(), dy.data(), ds2.data(), dg2.data(), db2.data(), rows, n});
        if (n > 1) expect_nonzero(ds, what);
        expect_close(concat(concat(ds, dg), db), concat(concat(ds2, dg2), db2), 2e-5, what);
        break;
      }
      case Op::kSoftmaxBackward: {
        const auto probs = random_probs(2, 2, 3, n, 0.5f, seed);
        const auto dp = random_floats(probs.size(), seed + 1);
        std::vector<float> got = dp, want = dp;
        both(SoftmaxBackwardArgs{probs.data(), got.data(), 2, 2, 3, n, 0.5f},
             SoftmaxBackwardArgs{probs.data(), want.data(), 2, 2, 3, n, 0.5f});
        if (n > 1) expect_nonzero(got, what);
        expect_close(got, want, 1e-5, what);
        // With the dropped probabilities (the dropout's backward folded in).
        std::vector<float> dropped = probs;
        dropout_f32_ref({dropped.data(), int64_t(dropped.size()), 0.3f, uint64_t(seed), 7});
        got = dp, want = dp;
        both(SoftmaxBackwardArgs{probs.data(), got.data(), 2, 2, 3, n, 0.5f, dropped.data()},
             SoftmaxBackwardArgs{probs.data(), want.data(), 2, 2, 3, n, 0.5f, dropped.data()});
        if (n > 1) expect_nonzero(got, what + " dropped");
        expect_close(got, want, 1e-5, what + " dropped");
        break;
      }
      case Op::kActivationBackward: {
        for (Activation kind : {Activation::kGeluErf, Activation::kGeluTanh, Activation::kTanh}) {
          const auto x = random_floats(rows * n, seed, -4.f, 4.f), g = random_floats(rows * n, seed + 1);
          std::vector<float> got = g, want = g;
          both(ActivationBackwardArgs{x.data(), got.data(), rows * n, kind},
               ActivationBackwardArgs{x.data(), want.data(), rows * n, kind});
          expect_nonzero(got, what);
          expect_close(got, want, 1e-5, what + " " + activation_name(kind));
        }
        break;
      }
      case Op::kEmbedBackward: {
        const int64_t vocab = 11, tokens = 13;
        const auto ids = random_ints(tokens, seed, 0, vocab - 1), types = random_ints(tokens, seed + 1, 0, 1);
        const auto d_out = random_floats(tokens * n, seed + 2);
        std::vector<float> dw(vocab * n, 0.5f), dt(2 * n, 0.f), dw2 = dw, dt2 = dt;
        both(EmbedBackwardArgs{ids.data(), nullptr, types.data(), d_out.data(), dw.data(), nullptr, dt.data(), tokens,
                               n},
             EmbedBackwardArgs{ids.data(), nullptr, types.data(), d_out.data(), dw2.data(), nullptr, dt2.data(),
                               tokens, n});
        expect_nonzero(dt, what);
        expect_close(concat(dw, dt), concat(dw2, dt2), 1e-6, what);
        break;
      }
      case Op::kColumnSum: {
        const auto x = random_floats(rows * (n + 3), seed);
        std::vector<float> got(n, 1.f), want(n, 1.f);
        both(ColumnSumArgs{x.data(), got.data(), rows, n, n + 3}, ColumnSumArgs{x.data(), want.data(), rows, n, n + 3});
        expect_close(got, want, 1e-6, what);
        break;
      }
      case Op::kCrossEntropy: {
        const auto logits = random_floats(rows * n, seed, -6.f, 6.f);
        auto targets = random_ints(rows, seed + 1, 0, static_cast<int32_t>(n - 1));
        targets[1] = -100;
        std::vector<float> got(logits.size()), want(logits.size());
        const LossSum lg = both(CrossEntropyArgs{logits.data(), targets.data(), got.data(), rows, n},
                                CrossEntropyArgs{logits.data(), targets.data(), want.data(), rows, n});
        const LossSum lw = cross_entropy_f32_ref({logits.data(), targets.data(), nullptr, rows, n});
        EXPECT_EQ(lg.count, lw.count) << what;
        EXPECT_NEAR(lg.sum, lw.sum, 1e-5 * std::max(1.0, std::fabs(lw.sum))) << what;
        if (n > 1) expect_nonzero(got, what);
        expect_close(got, want, 1e-5, what);
        break;
      }
      case Op::kDropout: {
        const auto x = random_floats(rows * n, seed, 0.5f, 1.5f);
        std::vector<float> got = x, want = x;
        both(DropoutArgs{got.data(), rows * n, 0.3f, 42, 7}, DropoutArgs{want.data(), rows * n, 0.3f, 42, 7});
        EXPECT_TRUE(same_bits(got, want)) << what;
        expect_nonzero(got, what);
        // Out of place (x = drop(src), x holding something else): the in-place bits; with p = 0, a copy.
        for (float p : {0.3f, 0.f}) {
          std::vector<float> out(x.size(), -7.f), out_ref(x.size(), -7.f);
          both(DropoutArgs{out.data(), rows * n, p, 42, 7, x.data()}, DropoutArgs{out_ref.data(), rows * n, p, 42, 7, x.data()});
          EXPECT_TRUE(same_bits(out, p > 0 ? want : x)) << what << " out of place, p " << p;
          EXPECT_TRUE(same_bits(out_ref, p > 0 ? want : x)) << what << " out of place (reference), p " << p;
        }
        break;
      }
      default:
        FAIL() << GetParam() << ": no case for op " << op_name(e_->op);
    }
    if (HasFailure()) return;
  }
}

INSTANTIATE_TEST_SUITE_P(Registry, TrainingVariant, ::testing::ValuesIn(training_variants()),
                         [](const ::testing::TestParamInfo<std::string>& info) { return info.param; });

}  // namespace
}  // namespace bert::kernels
