// GemmPlanner (oneDNN) against the scalar references: awkward shapes, row strides, every fused
// activation, strided batched matmuls as attention uses them, and plan reuse.
#include <gtest/gtest.h>

#include <cmath>

#include "kernels/gemm.h"
#include "tests/test_util.h"

namespace bert::kernels {
namespace {

void check_linear(int64_t M, int64_t N, int64_t K, Activation act, bool bias, int64_t pad_x, int64_t pad_y,
                  GemmPlanner& planner, bool packed = false) {
  SCOPED_TRACE(::testing::Message() << M << "x" << N << "x" << K << " act " << int(act) << " bias " << bias
                                    << " pads " << pad_x << "," << pad_y);
  const int64_t ldx = K + pad_x, ldy = N + pad_y;
  auto x = test::random_floats(M * ldx, 1);
  auto w = test::random_floats(N * K, 2, -0.2f, 0.2f);
  auto b = test::random_floats(N, 3);
  std::vector<float> got(M * ldy, -7.f), want(M * ldy, -7.f);
  LinearArgs a;
  a.x = x.data(), a.w = w.data(), a.bias = bias ? b.data() : nullptr, a.M = M, a.N = N, a.K = K, a.ldx = ldx,
  a.ldy = ldy, a.act = act;
  a.y = want.data();
  linear_f32_ref(a);
  a.y = got.data();
  PackedWeightsPtr p;
  if (packed) {
    p = pack_linear_weights(w.data(), N, K);
    ASSERT_NE(p, nullptr) << "oneDNN offered no packed kernel";
    a.packed = p.get();
  }
  ASSERT_TRUE(planner.linear(a));
  for (int64_t m = 0; m < M; ++m) {
    const float* g = got.data() + m * ldy;
    const float* r = want.data() + m * ldy;
    for (int64_t n = 0; n < N; ++n) ASSERT_NEAR(g[n], r[n], 2e-5 + 2e-5 * std::fabs(r[n])) << "m " << m << " n " << n;
    for (int64_t n = N; n < ldy; ++n) ASSERT_EQ(g[n], -7.f) << "wrote past the row";
  }
  ASSERT_GT(test::max_abs(got.data(), got.size()), 0.0);
}

TEST(Gemm, LinearMatchesReferenceAtAwkwardSizes) {
  GemmPlanner planner;
  for (int64_t M : {1, 3, 16, 17, 64, 129})
    for (int64_t N : {1, 2, 15, 33, 128})
      for (int64_t K : {1, 7, 64, 65}) check_linear(M, N, K, Activation::kIdentity, true, 0, 0, planner);
}

// The packed path (weights reordered once for the 1x1-convolution kernel).
TEST(Gemm, PackedWeightsMatchReference) {
  GemmPlanner planner;
  for (int64_t M : {1, 5, 16, 129})
    for (int64_t N : {1, 7, 8, 9, 64, 100})
      for (int64_t K : {3, 8, 64, 77}) check_linear(M, N, K, Activation::kIdentity, true, 0, 0, planner, true);
  for (Activation act : {Activation::kGeluErf, Activation::kGeluTanh, Activation::kTanh, Activation::kGeluQuick})
    check_linear(33, 40, 24, act, false, 0, 0, planner, true);
  check_linear(128, 96, 64, Activation::kGeluErf, true, 0, 0, planner, true);
  EXPECT_NE(std::string(planner.last_impl()).find("1x1"), std::string::npos)
      << "packed weights did not reach the 1x1 kernel: " << planner.last_impl();
  // Strided rows cannot use the packed kernel: the plain path must take over with the same answer.
  check_linear(9, 24, 16, Activation::kIdentity, true, 3, 2, planner, true);
}

TEST(Gemm, FusedActivationsStridesAndNoBias) {
  GemmPlanner planner;
  for (Activation act : {Activation::kGeluErf, Activation::kGeluTanh, Activation::kRelu, Activation::kTanh,
                         Activation::kGeluQuick})
    for (bool bias : {true, false}) check_linear(37, 45, 70, act, bias, 5, 3, planner);
}

TEST(Gemm, PlansAreReusedPerShape) {
  GemmPlanner planner;
  check_linear(8, 16, 32, Activation::kIdentity, true, 0, 0, planner);
  check_linear(8, 16, 32, Activation::kIdentity, true, 0, 0, planner);
  EXPECT_EQ(planner.plan_count(), 1u);
  check_linear(9, 16, 32, Activation::kIdentity, true, 0, 0, planner);
  EXPECT_EQ(planner.plan_count(), 2u);
  EXPECT_STRNE(planner.last_impl(), "");
}

// The two attention matmuls exactly as the session lays them out: Q, K, V interleaved in one
// [B*S, 3H] buffer, context written head by head into [B*S, H].
TEST(Gemm, BatchedMatmulWithAttentionStrides) {
  GemmPlanner planner;
  for (auto [B, S, nh, dh] : {std::tuple{1, 1, 1, 8}, {2, 7, 3, 16}, {3, 33, 2, 64}, {1, 128, 4, 32}}) {
    SCOPED_TRACE(::testing::Message() << B << " " << S << " " << nh << " " << dh);
    const int64_t H = nh * dh;
    auto qkv = test::random_floats(B * S * 3 * H, 5);
    std::vector<float> got(B * nh * S * S), want(got.size());
    BatchedMatmulArgs qk;
    qk.a = qkv.data(), qk.b = qkv.data() + H, qk.batch0 = B, qk.batch1 = nh, qk.M = S, qk.N = S, qk.K = dh;
    const int64_t qs[4] = {S * 3 * H, dh, 3 * H, 1}, ks[4] = {S * 3 * H, dh, 1, 3 * H}, ss[4] = {nh * S * S, S * S, S, 1};
    std::copy(qs, qs + 4, qk.a_strides), std::copy(ks, ks + 4, qk.b_strides), std::copy(ss, ss + 4, qk.c_strides);
    qk.c = want.data();
    batched_matmul_f32_ref(qk);
    qk.c = got.data();
    ASSERT_TRUE(planner.batched_matmul(qk));
    EXPECT_LE(test::relative_l2(got.data(), want.data(), got.size()), 1e-6);
    ASSERT_GT(test::max_abs(got.data(), got.size()), 0.0);

    std::vector<float> ctx_got(B * S * H, 0.f), ctx_want(B * S * H, 0.f);
    BatchedMatmulArgs pv;
    pv.a = want.data(), pv.b = qkv.data() + 2 * H, pv.batch0 = B, pv.batch1 = nh, pv.M = S, pv.N = dh, pv.K = S;
    const int64_t vs[4] = {S * 3 * H, dh, 3 * H, 1}, cs[4] = {S * H, dh, H, 1};
    std::copy(ss, ss + 4, pv.a_strides), std::copy(vs, vs + 4, pv.b_strides), std::copy(cs, cs + 4, pv.c_strides);
    pv.c = ctx_want.data();
    batched_matmul_f32_ref(pv);
    pv.c = ctx_got.data();
    ASSERT_TRUE(planner.batched_matmul(pv));
    EXPECT_LE(test::relative_l2(ctx_got.data(), ctx_want.data(), ctx_got.size()), 1e-6);
    ASSERT_GT(test::max_abs(ctx_got.data(), ctx_got.size()), 0.0);
  }
}

// The reference itself on a hand-computed case.
TEST(Gemm, ReferenceHandComputed) {
  const float x[2 * 3] = {1, 2, 3, 4, 5, 6};
  const float w[2 * 3] = {1, 0, -1, 0.5f, 0.5f, 0.5f};
  const float b[2] = {0.25f, -1};
  float y[4];
  LinearArgs a;
  a.x = x, a.w = w, a.bias = b, a.y = y, a.M = 2, a.N = 2, a.K = 3;
  linear_f32_ref(a);
  EXPECT_FLOAT_EQ(y[0], 1 - 3 + 0.25f);
  EXPECT_FLOAT_EQ(y[1], 3 - 1);
  EXPECT_FLOAT_EQ(y[2], 4 - 6 + 0.25f);
  EXPECT_FLOAT_EQ(y[3], 7.5f - 1);
}

}  // namespace
}  // namespace bert::kernels
