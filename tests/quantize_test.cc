// The CPU int8 quantization code (kernels/quantize.h): the per-channel weight quantizer on awkward rows,
// the quantize / dequantize references (round trip, half steps, clamping, bias + activation) and the
// int8 GEMM reference on a hand-computed case. Runs on every build (no GPU needed).
#include "kernels/quantize.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "tests/test_util.h"

namespace bert::kernels {
namespace {

TEST(Quantize, PerChannelWeightsOnAwkwardRows) {
  const int64_t N = 5, K = 6;
  std::vector<float> w = {
      0, 0, 0, 0, 0, 0,                                  // all zero: scale 1, q 0
      0.001f, -0.002f, 1e6f, 0.5f, -3.f, 0.004f,         // one huge value: the rest quantize to 0
      0.125f, 0.375f, 0.625f, -0.625f, -0.875f, 31.75f,  // scale 0.25: exact half steps 0.5, 1.5, 2.5, -2.5, -3.5
      1.f, -2.f, 0.5f, -0.25f, 0.f, 1.5f,                // largest magnitude negative: -127
      0.3f, -0.7f, 0.2f, 0.9f, -0.1f, 0.65f,             // ordinary
  };
  std::vector<int8_t> q(N * K, 99);
  std::vector<float> scales(N, -1.f);
  quantize_weights_per_channel_i8(w.data(), N, K, q.data(), scales.data());

  EXPECT_EQ(scales[0], 1.f);
  for (int64_t k = 0; k < K; ++k) EXPECT_EQ(q[k], 0);

  EXPECT_EQ(scales[1], 1e6f / 127.f);
  EXPECT_EQ(q[1 * K + 2], 127);
  for (int64_t k : {0, 1, 3, 4, 5}) EXPECT_EQ(q[1 * K + k], 0) << k;

  EXPECT_EQ(scales[2], 0.25f);
  const std::vector<int8_t> halves = {0, 2, 2, -2, -4, 127};  // halves round to even
  for (int64_t k = 0; k < K; ++k) EXPECT_EQ(q[2 * K + k], halves[k]) << k;

  EXPECT_EQ(scales[3], 2.f / 127.f);
  EXPECT_EQ(q[3 * K + 1], -127);
  EXPECT_EQ(q[3 * K + 0], 64);  // 1 / (2/127) is exactly 63.5 in fp32: -> 64 (even)
  EXPECT_EQ(q[3 * K + 4], 0);

  for (int64_t n = 0; n < N; ++n) {
    for (int64_t k = 0; k < K; ++k) {
      EXPECT_LE(std::abs(int(q[n * K + k])), 127);
      EXPECT_LE(std::fabs(q[n * K + k] * scales[n] - w[n * K + k]), scales[n] * 0.5f * (1 + 1e-5f)) << n << "," << k;
    }
  }
}

TEST(Quantize, PerChannelWeightsSingleColumnAndRandom) {
  for (int64_t K : {1, 7, 768}) {
    const int64_t N = 3;
    auto w = test::random_floats(N * K, 21, -2.f, 2.f);
    std::vector<int8_t> q(N * K);
    std::vector<float> scales(N);
    quantize_weights_per_channel_i8(w.data(), N, K, q.data(), scales.data());
    for (int64_t n = 0; n < N; ++n) {
      int max_q = 0;
      for (int64_t k = 0; k < K; ++k) {
        max_q = std::max(max_q, std::abs(int(q[n * K + k])));
        EXPECT_LE(std::fabs(q[n * K + k] * scales[n] - w[n * K + k]), scales[n] * 0.5f * (1 + 1e-5f));
      }
      EXPECT_EQ(max_q, 127) << "the largest weight of a row maps to +-127";
    }
  }
}

TEST(Quantize, RoundTripErrorIsAtMostHalfAStep) {
  const int64_t rows = 17, cols = 257, ldx = 260;
  auto x = test::random_floats(rows * ldx, 22, -3.f, 3.f);
  float amax = 0;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) amax = std::max(amax, std::fabs(x[r * ldx + c]));
  const float scale = amax / 127.f;
  std::vector<int8_t> q(rows * cols);
  quantize_i8_ref(x.data(), rows, cols, ldx, scale, q.data());
  std::vector<int32_t> acc(q.begin(), q.end());
  std::vector<float> ones(cols, 1.f), back(rows * cols);
  dequantize_i32_ref(acc.data(), rows, cols, scale, ones.data(), nullptr, Activation::kIdentity, back.data(), cols);
  double worst = 0;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) worst = std::max(worst, double(std::fabs(back[r * cols + c] - x[r * ldx + c])));
  EXPECT_LE(worst, scale * 0.5 * (1 + 1e-5));
  EXPECT_GT(worst, 0.0);
}

TEST(Quantize, HalfStepsClampingAndBadScale) {
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  const std::vector<float> x = {0.5f, 1.5f, 2.5f, -0.5f, -1.5f, -2.5f, 126.5f, 127.5f, -300.f, 1e30f, nan, inf, -inf, -3.7f};
  const std::vector<int8_t> want = {0, 2, 2, 0, -2, -2, 126, 127, -127, 127, 0, 127, -127, -4};
  const int64_t n = int64_t(x.size());
  for (float bad_scale : {0.f, -2.f, nan}) {  // treated as 1
    std::vector<int8_t> q(n, 99);
    quantize_i8_ref(x.data(), 1, n, n, bad_scale, q.data());
    for (int64_t i = 0; i < n; ++i) EXPECT_EQ(q[i], want[i]) << "x=" << x[i] << " scale=" << bad_scale;
  }
  // Scale 0.5 (exact): x = (k + 0.5) * 0.5 are half steps.
  const std::vector<float> y = {0.25f, 0.75f, 1.25f, -0.75f, -1.25f};
  const std::vector<int8_t> want_y = {0, 2, 2, -2, -2};
  std::vector<int8_t> q(y.size());
  quantize_i8_ref(y.data(), 1, int64_t(y.size()), int64_t(y.size()), 0.5f, q.data());
  for (size_t i = 0; i < y.size(); ++i) EXPECT_EQ(q[i], want_y[i]) << y[i];
}

TEST(Quantize, MatmulI8HandComputed) {
  const std::vector<int8_t> x = {1, -2, 3, 127, -127, 0};  // [2, 3]
  const std::vector<int8_t> w = {4, 5, -6, -1, 0, 2};      // [2, 3] (N = 2 rows of K = 3)
  std::vector<int32_t> acc(4, 12345);
  matmul_i8_ref(x.data(), w.data(), acc.data(), 2, 2, 3);
  EXPECT_EQ(acc, (std::vector<int32_t>{-24, 5, -127, -127}));

  // Large K: 3072 * (-128 * -128) needs 26 bits, no overflow.
  const int64_t K = 3072;
  std::vector<int8_t> a(K, -128), b(2 * K, -128);
  for (int64_t k = 0; k < K; ++k) b[K + k] = 127;
  std::vector<int32_t> big(2);
  matmul_i8_ref(a.data(), b.data(), big.data(), 1, 2, K);
  EXPECT_EQ(big[0], 3072 * 16384);
  EXPECT_EQ(big[1], -3072 * 128 * 127);
}

TEST(Quantize, DequantizeWithBiasAndGeluMatchesDirectComputation) {
  const int64_t rows = 3, cols = 31, ldy = 33;
  std::vector<int32_t> acc(rows * cols);
  for (int64_t i = 0; i < rows * cols; ++i) acc[i] = int32_t((i * 7919) % 20001) - 10000;
  const float x_scale = 0.0123f;
  auto w_scales = test::random_floats(cols, 23, 0.001f, 0.02f), bias = test::random_floats(cols, 24);
  for (Activation act : {Activation::kGeluErf, Activation::kGeluTanh, Activation::kIdentity}) {
    std::vector<float> y(rows * ldy, -777.f);
    dequantize_i32_ref(acc.data(), rows, cols, x_scale, w_scales.data(), bias.data(), act, y.data(), ldy);
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t c = 0; c < cols; ++c) {
        const double v = double(acc[r * cols + c]) * x_scale * w_scales[c] + bias[c];
        double want = v;
        if (act == Activation::kGeluErf) want = 0.5 * v * (1 + std::erf(v / std::sqrt(2.0)));
        if (act == Activation::kGeluTanh)
          want = 0.5 * v * (1 + std::tanh(0.79788456080286535588 * (v + 0.044715 * v * v * v)));
        EXPECT_NEAR(y[r * ldy + c], want, 1e-6 + 1e-5 * std::fabs(want)) << activation_name(act) << " " << r << "," << c;
      }
      for (int64_t c = cols; c < ldy; ++c) EXPECT_EQ(y[r * ldy + c], -777.f) << "padding left alone";
    }
    EXPECT_GT(test::max_abs(y.data(), y.size()), 0.0);
  }
}

}  // namespace
}  // namespace bert::kernels
