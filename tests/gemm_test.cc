// GemmPlanner (oneDNN) against the scalar references: awkward shapes, row strides, every fused
// activation, grouped linear layers (SqueezeBERT), strided batched matmuls as attention uses them,
// plan reuse, and bit-identical results for any thread count.
// The packed path exists only where oneDNN offers a kernel for packed weights on the CPU it runs on (see
// kernels/gemm.h); where it does not, the tests check the plain path and say the packed one was skipped.
// Run them both ways on an AVX-512 machine: plain, and with ONEDNN_MAX_CPU_ISA=AVX2.
#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <iostream>
#include <string>

#include "kernels/gemm.h"
#include "tests/test_util.h"

namespace bert::kernels {
namespace {

// Whether check_linear passes packed weights: never, packed for any generated oneDNN kernel (the tests'
// wider net, any_jit_kernel), or packed as the engine packs them (pack_linear_weights' defaults).
enum class Packing { kNone, kIfOffered, kEngine };

// What happened to the packed path over a series of check_linear calls.
struct PackStats {
  int cases = 0;    // calls that asked for packed weights
  int offered = 0;  // ... that got them from pack_linear_weights
  int ran = 0;      // ... whose planned call then ran on them (not the plain fallback)
  std::string forms;  // the packed forms seen ("matmul", "conv1x1")
};

// Says (stdout and the test's XML properties) when the packed path was not offered, so a pass is not
// mistaken for a check of it; checks that offered packed weights were used somewhere.
void report_packing(const char* what, const PackStats& st) {
  std::cout << "[ packing  ] " << what << ": packed weights offered for " << st.offered << " of " << st.cases
            << " cases (form: " << (st.forms.empty() ? "none" : st.forms) << "), ran packed in " << st.ran << "\n";
  if (st.offered == 0) {
    std::cout << "[ skipped  ] " << what << ": packed path not offered by oneDNN on this ISA (no kernel for packed "
              << "weights here); only the plain path was checked against the reference\n";
    ::testing::Test::RecordProperty(std::string("packed_") + what, "packed path not offered by oneDNN on this ISA");
  } else {
    EXPECT_GT(st.ran, 0) << what << ": packed weights were offered but the planner never ran on them";
  }
}

// One linear layer through the planner against linear_f32_ref. K and N are the full widths; the
// weights are [N, K/groups]. With packing, fills *stats (may be null).
void check_linear(int64_t M, int64_t N, int64_t K, Activation act, bool bias, int64_t pad_x, int64_t pad_y,
                  GemmPlanner& planner, Packing packing = Packing::kNone, int64_t groups = 1,
                  PackStats* stats = nullptr) {
  SCOPED_TRACE(::testing::Message() << M << "x" << N << "x" << K << " groups " << groups << " act " << int(act)
                                    << " bias " << bias << " pads " << pad_x << "," << pad_y << " packing "
                                    << int(packing));
  const int64_t ldx = K + pad_x, ldy = N + pad_y;
  auto x = test::random_floats(M * ldx, 1);
  auto w = test::random_floats(N * (K / groups), 2, -0.2f, 0.2f);
  auto b = test::random_floats(N, 3);
  std::vector<float> got(M * ldy, -7.f), want(M * ldy, -7.f);
  LinearArgs a;
  a.x = x.data(), a.w = w.data(), a.bias = bias ? b.data() : nullptr, a.M = M, a.N = N, a.K = K, a.ldx = ldx,
  a.ldy = ldy, a.act = act, a.groups = groups;
  a.y = want.data();
  linear_f32_ref(a);
  a.y = got.data();
  PackedWeightsPtr p;
  if (packing != Packing::kNone) {
    p = pack_linear_weights(w.data(), N, K, groups, /*any_jit_kernel=*/packing == Packing::kIfOffered);
    a.packed = p.get();
  }
  ASSERT_TRUE(planner.linear(a));
  if (!p) {
    EXPECT_FALSE(planner.last_packed());
  } else if (pad_x || pad_y) {
    EXPECT_FALSE(planner.last_packed()) << "strided rows must take the plain path";
  }
  if (packing != Packing::kNone && stats) {
    ++stats->cases;
    if (p) {
      ++stats->offered;
      if (planner.last_packed()) ++stats->ran;
      const std::string form = packed_weights_form(*p);
      if (stats->forms.find(form) == std::string::npos) stats->forms += (stats->forms.empty() ? "" : ",") + form;
    }
  }
  double max_abs = 0;  // over the written columns only: the -7 padding must not pass for output
  for (int64_t m = 0; m < M; ++m) {
    const float* g = got.data() + m * ldy;
    const float* r = want.data() + m * ldy;
    for (int64_t n = 0; n < N; ++n) ASSERT_NEAR(g[n], r[n], 2e-5 + 2e-5 * std::fabs(r[n])) << "m " << m << " n " << n;
    for (int64_t n = N; n < ldy; ++n) ASSERT_EQ(g[n], -7.f) << "wrote past the row";
    max_abs = std::max(max_abs, test::max_abs(g, N));
  }
  ASSERT_GT(max_abs, 0.0);
}

TEST(Gemm, LinearMatchesReferenceAtAwkwardSizes) {
  GemmPlanner planner;
  for (int64_t M : {1, 3, 16, 17, 64, 129})
    for (int64_t N : {1, 2, 15, 33, 128})
      for (int64_t K : {1, 7, 64, 65}) check_linear(M, N, K, Activation::kIdentity, true, 0, 0, planner);
}

// The packed path (weights reordered once for whichever kernel oneDNN offers here: its matmul's own
// blocked layout or its 1x1 convolution's), as the engine packs them; the plain path where it is not offered.
TEST(Gemm, PackedWeightsMatchReference) {
  GemmPlanner planner;
  PackStats st;
  for (int64_t M : {1, 5, 16, 129})
    for (int64_t N : {1, 7, 8, 9, 64, 100})
      for (int64_t K : {3, 8, 64, 77})
        check_linear(M, N, K, Activation::kIdentity, true, 0, 0, planner, Packing::kEngine, 1, &st);
  for (Activation act : {Activation::kGeluErf, Activation::kGeluTanh, Activation::kTanh, Activation::kGeluQuick})
    check_linear(33, 40, 24, act, false, 0, 0, planner, Packing::kEngine, 1, &st);
  check_linear(128, 96, 64, Activation::kGeluErf, true, 0, 0, planner, Packing::kEngine, 1, &st);
  std::cout << "[ impl     ] dense M=128 N=96 K=64 gelu: " << planner.last_impl()
            << (planner.last_packed() ? " (packed)" : " (plain)") << "\n";
  // bert-base's shapes at a few token counts.
  for (auto [N, K] : {std::pair<int64_t, int64_t>{2304, 768}, {768, 3072}})
    for (int64_t M : {1, 128, 131}) check_linear(M, N, K, Activation::kIdentity, true, 0, 0, planner, Packing::kEngine, 1, &st);
  // Strided rows cannot use packed weights: the plain path must take over with the same answer.
  check_linear(9, 24, 16, Activation::kIdentity, true, 3, 2, planner, Packing::kEngine, 1, &st);
  report_packing("dense", st);
}

// Grouped layers (SqueezeBERT's grouped 1x1 Conv1d): per-group widths below, at and above the 8- and
// 16-wide SIMD blocks, every M class, with and without bias, plain and packed (where oneDNN packs).
TEST(Gemm, GroupedLinearMatchesReferenceAtAwkwardSizes) {
  GemmPlanner planner;
  PackStats st;
  for (int64_t G : {2, 3, 4})
    for (int64_t M : {1, 5, 17, 128})
      for (int64_t Kg : {3, 8, 17, 192})
        for (int64_t Ng : {5, 8, 16, 33})
          for (bool bias : {true, false}) {
            check_linear(M, Ng * G, Kg * G, Activation::kIdentity, bias, 0, 0, planner, Packing::kNone, G);
            check_linear(M, Ng * G, Kg * G, Activation::kIdentity, bias, 0, 0, planner, Packing::kIfOffered, G, &st);
          }
  report_packing("grouped", st);
}

// Fused activations (one oneDNN has, one it lacks) and strided rows on grouped layers, both paths;
// strided rows leave the packed kernel for the plain one, with the padding untouched.
TEST(Gemm, GroupedLinearActivationsAndStrides) {
  GemmPlanner planner;
  for (int64_t G : {2, 3, 4})
    for (auto [M, Kg, Ng] : {std::tuple<int64_t, int64_t, int64_t>{17, 17, 33}, {128, 16, 8}, {5, 192, 16}, {1, 3, 5}})
      for (Activation act : {Activation::kGeluErf, Activation::kGeluQuick})
        for (bool bias : {true, false})
          for (auto [pad_x, pad_y] : {std::pair<int64_t, int64_t>{0, 0}, {5, 3}, {1, 0}, {0, 7}})
            for (Packing packing : {Packing::kNone, Packing::kIfOffered})
              check_linear(M, Ng * G, Kg * G, act, bias, pad_x, pad_y, planner, packing, G);
}

// SqueezeBERT-base's three grouped layers (groups 4, 128 tokens) on both paths. The engine packs them
// only where oneDNN has a grouped 1x1 kernel for every token count (not its AVX2 one); packing for any
// generated kernel (the wider net) must still be right where oneDNN offers one.
TEST(Gemm, GroupedPackedSqueezeBertShapes) {
  GemmPlanner planner;
  PackStats any_kernel, engine;
  for (auto [N, K] : {std::pair<int64_t, int64_t>{768, 768}, {3072, 768}, {768, 3072}}) {
    auto w = test::random_floats(N * K / 4, 9);
    PackedWeightsPtr engine_packing = pack_linear_weights(w.data(), N, K, 4);
    std::cout << "[ packing  ] N=" << N << " K=" << K << " G=4: "
              << (engine_packing ? "packed (grouped 1x1 kernel)" : "plain (no grouped 1x1 kernel for every token count here)")
              << "\n";
    for (Activation act : {Activation::kIdentity, Activation::kGeluErf, Activation::kGeluQuick}) {
      check_linear(128, N, K, act, true, 0, 0, planner, Packing::kIfOffered, 4, &any_kernel);
      std::cout << "[ impl     ] grouped packed M=128 N=" << N << " K=" << K << " G=4 act " << int(act) << ": "
                << planner.last_impl() << (planner.last_packed() ? " (packed)" : " (plain)") << "\n";
      check_linear(128, N, K, act, true, 0, 0, planner, Packing::kEngine, 4, &engine);
      check_linear(128, N, K, act, true, 0, 0, planner, Packing::kNone, 4);
      std::cout << "[ impl     ] grouped plain  M=128 N=" << N << " K=" << K << " G=4 act " << int(act) << ": "
                << planner.last_impl() << "\n";
    }
  }
  report_packing("squeezebert_any_kernel", any_kernel);
  std::cout << "[ packing  ] squeezebert as the engine packs: offered for " << engine.offered << " of " << engine.cases
            << " cases, ran packed in " << engine.ran << "\n";
  EXPECT_EQ(engine.ran, engine.offered) << "the engine's packed grouped weights must serve 128 tokens";
}

// The same layer gives the same bits for any thread count on the packed path (whichever form oneDNN
// offers here: its brgemm matmul and 1x1 convolutions split work over rows and columns, not over K), and
// on the plain path for 1 and 2 threads. oneDNN 2.6's sgemm (gemm:jit, the plain path under AVX2) splits
// K between threads for some shapes at 3 or more threads (128x768x768 at 3, 4 and 6 threads, measured),
// so the plain path is not bit-identical there; that is oneDNN's, and the packed path avoids it.
// A fresh planner per thread count, as each session plans its own; weights packed once, as at load.
TEST(Gemm, LinearIsBitIdenticalAcrossThreadCounts) {
  const int saved = omp_get_max_threads();
  int packed_shapes = 0;
  for (auto [M, N, K, G] : {std::tuple<int64_t, int64_t, int64_t, int64_t>{128, 768, 768, 1}, {128, 768, 3072, 1},
                            {131, 2304, 768, 1}, {37, 100, 77, 1}, {128, 768, 768, 4}, {17, 96, 48, 3}}) {
    SCOPED_TRACE(::testing::Message() << M << "x" << N << "x" << K << " groups " << G);
    auto x = test::random_floats(M * K, 21);
    auto w = test::random_floats(N * K / G, 22, -0.2f, 0.2f);
    auto b = test::random_floats(N, 23);
    omp_set_num_threads(saved);
    PackedWeightsPtr p = pack_linear_weights(w.data(), N, K, G);
    packed_shapes += p != nullptr;
    const PackedWeights* paths[2] = {nullptr, p.get()};  // plain, then packed
    for (const PackedWeights* packed : paths) {
      std::vector<float> first;
      for (int threads : {1, 2, 3, 4, 6}) {
        if (!packed && threads > 2) break;
        omp_set_num_threads(threads);
        GemmPlanner planner;
        std::vector<float> y(M * N, -7.f);
        LinearArgs a;
        a.x = x.data(), a.w = w.data(), a.bias = b.data(), a.y = y.data(), a.M = M, a.N = N, a.K = K, a.groups = G;
        a.act = Activation::kGeluErf, a.packed = packed;
        ASSERT_TRUE(planner.linear(a));
        EXPECT_EQ(planner.last_packed(), packed != nullptr) << planner.last_impl();
        if (threads == 1) {
          ASSERT_GT(test::max_abs(y.data(), y.size()), 0.0);
          first = y;
        } else {
          EXPECT_EQ(std::memcmp(y.data(), first.data(), y.size() * sizeof(float)), 0)
              << (packed ? "packed" : "plain") << " path, " << threads << " threads vs 1: " << planner.last_impl();
        }
      }
      if (!p) break;  // no packed weights here: the plain path was the one to check
    }
  }
  omp_set_num_threads(saved);
  std::cout << "[ threads  ] " << packed_shapes << " of 6 shapes had packed weights (both paths checked there)\n";
}

// groups must be >= 1 and divide N and K; packed weights must match the layer's shape. Refused
// calls return false and leave the output alone.
TEST(Gemm, GroupsThatDoNotDivideAreRefused) {
  GemmPlanner planner;
  auto x = test::random_floats(4 * 12, 1);
  auto w = test::random_floats(12 * 12, 2);
  std::vector<float> y(4 * 12, -7.f);
  LinearArgs a;
  a.x = x.data(), a.w = w.data(), a.y = y.data(), a.M = 4;
  for (auto [N, K, G] : {std::tuple<int64_t, int64_t, int64_t>{12, 10, 4}, {10, 12, 4}, {12, 12, 5}, {12, 12, 0},
                         {12, 12, -2}, {12, 12, 24}}) {
    SCOPED_TRACE(::testing::Message() << N << "x" << K << " groups " << G);
    a.N = N, a.K = K, a.groups = G;
    EXPECT_FALSE(planner.linear(a));
    EXPECT_EQ(pack_linear_weights(w.data(), N, K, G), nullptr);
  }
  for (float v : y) ASSERT_EQ(v, -7.f);
  EXPECT_EQ(planner.plan_count(), 0u);
  // Weights packed for another grouping are refused, not misread.
  auto p = pack_linear_weights(w.data(), 16, 16, 2);
  a.N = 16, a.K = 16, a.groups = 4, a.packed = p.get();
  if (p) {
    EXPECT_FALSE(planner.linear(a));
  }
  a.groups = 2;
  std::vector<float> y16(4 * 16);
  auto x16 = test::random_floats(4 * 16, 1);
  auto w16 = test::random_floats(16 * 8, 2);
  a.x = x16.data(), a.w = w16.data(), a.y = y16.data(), a.packed = nullptr;
  EXPECT_TRUE(planner.linear(a));
  EXPECT_GT(test::max_abs(y16.data(), y16.size()), 0.0);
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
  // The same shape grouped differently is another plan (and a wrong one if reused).
  check_linear(8, 16, 32, Activation::kIdentity, true, 0, 0, planner, Packing::kNone, 2);
  check_linear(8, 16, 32, Activation::kIdentity, true, 0, 0, planner, Packing::kNone, 4);
  check_linear(8, 16, 32, Activation::kIdentity, true, 0, 0, planner, Packing::kNone, 2);
  EXPECT_EQ(planner.plan_count(), 4u);
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

// The linear-layer backward as the trainer runs it: dX (+)= dY W and dW += dY^T X through strided
// batched matmuls, dense (one batch) and grouped (groups as the batch), accumulating into non-zero c.
TEST(Gemm, BatchedMatmulAccumulatesForLinearBackward) {
  GemmPlanner planner;
  for (auto [M, N, K, G] : {std::tuple<int64_t, int64_t, int64_t, int64_t>{1, 1, 1, 1}, {17, 33, 65, 1},
                            {128, 48, 24, 4}, {5, 12, 18, 3}, {300, 70, 130, 1}}) {
    const int64_t Ng = N / G, Kg = K / G;
    auto dy = test::random_floats(M * N, 11), w = test::random_floats(N * Kg, 12), x = test::random_floats(M * K, 13);
    // reorder_b: b copied into oneDNN's blocked layout first (single products; ignored when grouped).
    for (int mode = 0; mode < 4; ++mode) {
    const bool accumulate = mode & 1, reorder = mode & 2;
    SCOPED_TRACE(::testing::Message() << M << "x" << N << "x" << K << " groups " << G << " accumulate " << accumulate
                                      << " reorder_b " << reorder);
    {
      // dX[m, g*Kg + k] = sum_n dY[m, g*Ng + n] W[g*Ng + n, k]
      auto dx_got = test::random_floats(M * K, 14), dx_want = dx_got;
      BatchedMatmulArgs a;
      a.a = dy.data(), a.b = w.data(), a.batch0 = 1, a.batch1 = G, a.M = M, a.N = Kg, a.K = Ng, a.accumulate = accumulate;
      a.reorder_b = reorder;
      const int64_t as[4] = {0, Ng, N, 1}, bs[4] = {0, Ng * Kg, Kg, 1}, cs[4] = {0, Kg, K, 1};
      std::copy(as, as + 4, a.a_strides), std::copy(bs, bs + 4, a.b_strides), std::copy(cs, cs + 4, a.c_strides);
      a.c = dx_want.data();
      batched_matmul_f32_ref(a);
      a.c = dx_got.data();
      ASSERT_TRUE(planner.batched_matmul(a));
      EXPECT_LE(test::relative_l2(dx_got.data(), dx_want.data(), dx_got.size()), 1e-6);
      // dW[g*Ng + n, k] += sum_m dY[m, g*Ng + n] X[m, g*Kg + k]
      auto dw_got = test::random_floats(N * Kg, 15), dw_want = dw_got;
      BatchedMatmulArgs b;
      b.a = dy.data(), b.b = x.data(), b.batch0 = 1, b.batch1 = G, b.M = Ng, b.N = Kg, b.K = M, b.accumulate = accumulate;
      b.reorder_b = reorder;
      const int64_t as2[4] = {0, Ng, 1, N}, bs2[4] = {0, Kg, K, 1}, cs2[4] = {0, Ng * Kg, Kg, 1};
      std::copy(as2, as2 + 4, b.a_strides), std::copy(bs2, bs2 + 4, b.b_strides), std::copy(cs2, cs2 + 4, b.c_strides);
      b.c = dw_want.data();
      batched_matmul_f32_ref(b);
      b.c = dw_got.data();
      ASSERT_TRUE(planner.batched_matmul(b));
      EXPECT_LE(test::relative_l2(dw_got.data(), dw_want.data(), dw_got.size()), 1e-6);
      ASSERT_GT(test::max_abs(dw_got.data(), dw_got.size()), 0.0);
    }
    }
  }
  // The reference's accumulate really adds: c = 1 + 2 * 3.
  float one = 2, two = 3, c = 1;
  BatchedMatmulArgs r;
  r.a = &one, r.b = &two, r.c = &c, r.M = r.N = r.K = 1, r.accumulate = true;
  const int64_t unit[4] = {0, 0, 1, 1};
  std::copy(unit, unit + 4, r.a_strides), std::copy(unit, unit + 4, r.b_strides), std::copy(unit, unit + 4, r.c_strides);
  batched_matmul_f32_ref(r);
  EXPECT_EQ(c, 7.f);
}

// reorder_b copies b on every call: a plan reused with new b data (the weights after an optimizer step)
// multiplies the new values, at bert-base's widths and a few hundred tokens.
TEST(Gemm, ReorderedOperandFollowsItsDataEveryCall) {
  GemmPlanner planner;
  const int64_t M = 260, N = 768, K = 3072;  // dx = dy W of an FFN output layer
  auto dy = test::random_floats(M * N, 21), w = test::random_floats(N * K, 22);
  for (int call = 0; call < 2; ++call) {
    if (call == 1)
      for (float& v : w) v = -0.5f * v + 0.01f;
    std::vector<float> got(M * K, 0.f), want(M * K, 0.f);
    BatchedMatmulArgs a;
    a.a = dy.data(), a.b = w.data(), a.M = M, a.N = K, a.K = N, a.reorder_b = true;
    const int64_t as[4] = {0, 0, N, 1}, bs[4] = {0, 0, K, 1}, cs[4] = {0, 0, K, 1};
    std::copy(as, as + 4, a.a_strides), std::copy(bs, bs + 4, a.b_strides), std::copy(cs, cs + 4, a.c_strides);
    a.c = want.data();
    batched_matmul_f32_ref(a);
    a.c = got.data();
    ASSERT_TRUE(planner.batched_matmul(a));
    EXPECT_LE(test::relative_l2(got.data(), want.data(), got.size()), 1e-6) << "call " << call;
    std::cout << "[ impl     ] reorder_b " << M << "x" << K << "x" << N << ": " << planner.last_impl() << "\n";
  }
  EXPECT_EQ(planner.plan_count(), 1u);
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

  // Grouped, 2 groups: output 0 reads inputs 0..1, output 1 reads inputs 2..3.
  const float gx[4] = {1, 2, 3, 4};
  const float gw[2 * 2] = {1, 1, 1, -1};
  float gy[2];
  LinearArgs g;
  g.x = gx, g.w = gw, g.bias = b, g.y = gy, g.M = 1, g.N = 2, g.K = 4, g.groups = 2;
  linear_f32_ref(g);
  EXPECT_FLOAT_EQ(gy[0], 1 + 2 + 0.25f);
  EXPECT_FLOAT_EQ(gy[1], 3 - 4 - 1);
}

}  // namespace
}  // namespace bert::kernels
