// The CPU's low-precision inference (docs/PRECISION.md): the activation quantizer's SIMD variants against
// their references (bit-exact), bf16 and int8 linear layers against references built from the same
// rounded / quantised operands, the int8 saturation case (worst-case values, where vpmaddubsw would
// saturate without VNNI), calibrated scales, and whole models: bert-base-shaped synthetic weights in bf16
// and int8 against fp32 (cosine), the refusals (fp16 on the CPU, SqueezeBERT's grouped layers,
// Calibrate on fp32). CTest also runs this binary with ONEDNN_MAX_CPU_ISA=AVX2 BERT_CPU_ISA=avx2
// (lowp_test_avx2): no VNNI (7-bit weights) and no bf16 matmul (the refusal must name the CPU feature).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <limits>
#include <string>
#include <vector>

#include "bert/engine.h"
#include "bert/model_builder.h"
#include "bert/train.h"
#include "kernels/convert.h"
#include "kernels/gemm.h"
#include "kernels/isa.h"
#include "kernels/quantize.h"
#include "kernels/registry.h"
#include "tests/test_util.h"

namespace bert {
namespace {

using kernels::Activation;
using kernels::LinearArgs;
using kernels::WeightType;

// Inputs with the quantizer's edge cases mixed in: exact half steps, NaN, huge values, zeros.
std::vector<float> awkward_inputs(size_t n, uint32_t seed) {
  auto x = test::random_floats(n, seed, -3.f, 3.f);
  for (size_t i = 0; i < n; i += 11) x[i] = 0.5f * float(int(i % 7) - 3);  // halves after / 0.5
  if (n > 5) x[5] = std::numeric_limits<float>::quiet_NaN();
  if (n > 9) x[9] = -1e30f;
  return x;
}

TEST(LowpKernels, AbsmaxAndQuantizeVariantsAreBitExact) {
  struct Variant {
    const char* name;
    kernels::CpuIsa isa;
    float (*absmax)(const float*, int64_t, int64_t, int64_t);
    void (*quantize)(const float*, int64_t, int64_t, int64_t, float, int8_t*);
  };
  const Variant variants[] = {
      {"avx2", kernels::CpuIsa::kAvx2, kernels::absmax_f32_avx2, kernels::quantize_i8_avx2},
      {"avx512", kernels::CpuIsa::kAvx512, kernels::absmax_f32_avx512, kernels::quantize_i8_avx512},
  };
  int checked = 0;
  for (const Variant& v : variants) {
    if (!kernels::cpu_has_isa(v.isa)) {
      std::cout << "[ skipped  ] quantize_i8_" << v.name << ": this CPU lacks " << v.name << "\n";
      continue;
    }
    for (int64_t rows : {1, 3, 17, 300})
      for (int64_t cols : {1, 7, 8, 15, 16, 17, 33, 257}) {
        const int64_t ldx = cols + 3;
        auto x = awkward_inputs(size_t(rows * ldx), uint32_t(rows * 1000 + cols));
        const float want_max = kernels::absmax_f32_ref(x.data(), rows, cols, ldx);
        ASSERT_EQ(v.absmax(x.data(), rows, cols, ldx), want_max) << v.name << " " << rows << "x" << cols;
        for (float scale : {0.25f, want_max / 127.f, 0.f}) {  // 0: treated as 1
          std::vector<int8_t> got(size_t(rows * cols), 99), want(size_t(rows * cols), 77);
          kernels::quantize_i8_ref(x.data(), rows, cols, ldx, scale, want.data());
          v.quantize(x.data(), rows, cols, ldx, scale, got.data());
          ASSERT_EQ(got, want) << v.name << " " << rows << "x" << cols << " scale " << scale;
        }
        ++checked;
      }
  }
  EXPECT_GT(checked, 0) << "no SIMD variant ran";
  // The reference itself: NaN ignored by absmax, quantised to 0; halves to even; clamped.
  const float x[] = {std::numeric_limits<float>::quiet_NaN(), 2.5f, -0.5f, 1000.f, -3.5f};
  EXPECT_EQ(kernels::absmax_f32_ref(x, 1, 5, 5), 1000.f);
  int8_t q[5];
  kernels::quantize_i8_ref(x, 1, 5, 5, 1.f, q);
  EXPECT_EQ(q[0], 0);
  EXPECT_EQ(q[1], 2);
  EXPECT_EQ(q[2], 0);
  EXPECT_EQ(q[3], 127);
  EXPECT_EQ(q[4], -4);
}

// Element-wise |got - want| <= atol + rtol |want| over rows x cols (strided); the reference is non-zero.
void expect_close(const float* got, int64_t ldg, const std::vector<float>& want, int64_t rows, int64_t cols, double atol,
                  double rtol, const std::string& what) {
  ASSERT_GT(test::max_abs(want.data(), want.size()), 0.0) << what << ": the reference is all zero";
  int bad = 0;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) {
      const double g = got[r * ldg + c], w = want[size_t(r * cols + c)];
      if (!(std::fabs(g - w) <= atol + rtol * std::fabs(w)) && bad++ < 5)
        ADD_FAILURE() << what << " [" << r << ", " << c << "]: got " << g << ", want " << w;
    }
  EXPECT_EQ(bad, 0) << what;
}

std::vector<float> round_to_bf16(const std::vector<float>& v) {
  std::vector<uint16_t> h(v.size());
  std::vector<float> out(v.size());
  kernels::convert_f32_to_bf16_ref(v.data(), h.data(), int64_t(v.size()));
  kernels::convert_bf16_to_f32_ref(h.data(), out.data(), int64_t(v.size()));
  return out;
}

struct Shape {
  int64_t M, N, K;
};
const Shape kShapes[] = {{1, 7, 9}, {5, 33, 100}, {16, 64, 48}, {128, 96, 768}, {130, 768, 64}, {3, 3072, 128}};
const Activation kActs[] = {Activation::kIdentity, Activation::kGeluErf, Activation::kTanh};

TEST(LowpGemm, Bf16LinearMatchesReferenceOnBf16Operands) {
  std::string why;
  if (!kernels::bf16_gemm_supported(&why)) {
    EXPECT_NE(why.find("AVX-512"), std::string::npos) << why;
    auto packed = kernels::pack_linear_weights_lowp(std::vector<float>(64, 1.f).data(), 8, 8, WeightType::kBF16);
    ASSERT_FALSE(packed.ok());
    EXPECT_NE(packed.status().message().find("AVX-512"), std::string::npos) << packed.status().to_string();
    GTEST_SKIP() << "no bf16 matmul on this CPU: " << why;
  }
  kernels::GemmPlanner planner;
  int i = 0;
  for (const Shape& s : kShapes)
    for (Activation act : kActs) {
      ++i;
      const int64_t ldx = s.K + (i % 2) * 5, ldy = s.N + (i % 3) * 3;
      auto x = test::random_floats(size_t(s.M * ldx), 100 + i, -2.f, 2.f);
      auto w = test::random_floats(size_t(s.N * s.K), 200 + i, -0.1f, 0.1f);
      auto b = test::random_floats(size_t(s.N), 300 + i);
      auto packed = kernels::pack_linear_weights_lowp(w.data(), s.N, s.K, WeightType::kBF16);
      ASSERT_TRUE(packed.ok()) << packed.status().to_string();
      EXPECT_EQ(kernels::packed_weights_type(**packed), WeightType::kBF16);
      std::vector<float> y(size_t(s.M * ldy), 0.f);
      LinearArgs a{x.data(), w.data(), i % 4 ? b.data() : nullptr, y.data(), s.M, s.N, s.K, ldx, ldy, act, packed->get()};
      ASSERT_TRUE(planner.linear(a));
      // The reference: the same bf16-rounded x and w, accumulated in double.
      auto xr = round_to_bf16(x), wr = round_to_bf16(w);
      std::vector<float> want(size_t(s.M * s.N));
      LinearArgs r{xr.data(), wr.data(), a.bias, want.data(), s.M, s.N, s.K, ldx, 0, act};
      kernels::linear_f32_ref(r);
      expect_close(y.data(), ldy, want, s.M, s.N, 1e-4, 1e-3,
                   "bf16 linear " + std::to_string(s.M) + "x" + std::to_string(s.N) + "x" + std::to_string(s.K));
    }
  std::cout << "[ bf16     ] oneDNN ran " << planner.last_impl() << "\n";
}

// bf16 compute on the strided views attention's products use in training: Q, K and V as column blocks
// of one [T, 3H] buffer (K read transposed), the probabilities read transposed, the outputs written into
// [T, H] rows; the result equals the fp32 reference on the bf16-rounded operands.
TEST(LowpGemm, Bf16BatchedMatmulOnStridedViewsMatchesReference) {
  std::string why;
  if (!kernels::bf16_gemm_supported(&why)) GTEST_SKIP() << "no bf16 matmul on this CPU: " << why;
  kernels::GemmPlanner planner;
  planner.set_compute(kernels::GemmCompute::kBF16);
  const int64_t B = 2, nh = 3, S = 37, dh = 20, H = nh * dh, ld = 3 * H;
  auto qkv = test::random_floats(size_t(B * S * ld), 41, -2.f, 2.f);
  auto probs = test::random_floats(size_t(B * nh * S * S), 42, 0.f, 1.f);
  const auto qkv_r = round_to_bf16(qkv), probs_r = round_to_bf16(probs);
  const float *q = qkv.data(), *k = qkv.data() + H, *v = qkv.data() + 2 * H;
  const int64_t qs[4] = {S * ld, dh, ld, 1}, kt[4] = {S * ld, dh, 1, ld}, ps[4] = {nh * S * S, S * S, S, 1},
                pt[4] = {nh * S * S, S * S, 1, S}, cs[4] = {S * H, dh, H, 1};
  struct Case {
    const char* what;
    const float *a, *b, *a_r, *b_r;
    int64_t M, N, K;
    const int64_t *as, *bs, *cs;
    int64_t c_size;
  };
  const Case cases[] = {
      {"scores = Q K^T", q, k, qkv_r.data(), qkv_r.data() + H, S, S, dh, qs, kt, ps, B * nh * S * S},
      {"ctx = P V", probs.data(), v, probs_r.data(), qkv_r.data() + 2 * H, S, dh, S, ps, qs, cs, B * S * H},
      {"dV = P^T dctx", probs.data(), q, probs_r.data(), qkv_r.data(), S, dh, S, pt, qs, cs, B * S * H},
  };
  for (const Case& c : cases)
    for (bool accumulate : {false, true}) {
      kernels::BatchedMatmulArgs a;
      a.a = c.a, a.b = c.b, a.batch0 = B, a.batch1 = nh, a.M = c.M, a.N = c.N, a.K = c.K, a.accumulate = accumulate;
      std::memcpy(a.a_strides, c.as, sizeof a.a_strides), std::memcpy(a.b_strides, c.bs, sizeof a.b_strides);
      std::memcpy(a.c_strides, c.cs, sizeof a.c_strides);
      const auto start = test::random_floats(size_t(c.c_size), 43, -1.f, 1.f);
      std::vector<float> got = accumulate ? start : std::vector<float>(size_t(c.c_size), 0.f), want = got;
      a.c = got.data();
      ASSERT_TRUE(planner.batched_matmul(a)) << c.what;
      kernels::BatchedMatmulArgs r = a;
      r.a = c.a_r, r.b = c.b_r, r.c = want.data();
      kernels::batched_matmul_f32_ref(r);
      expect_close(got.data(), 1, want, int64_t(want.size()), 1, 1e-4, 1e-3,
                   std::string("bf16 batched ") + c.what + (accumulate ? " (accumulate)" : ""));
    }
  std::cout << "[ bf16     ] oneDNN ran " << planner.last_impl() << "\n";
}

// bf16 compute with the weights reordered each call into oneDNN's blocked bf16 layout: the forward's
// linear layers (reorder_w) and the linear backward's dx = dy W and dW += dy^T x (reorder_b), as training
// runs them, at awkward sizes; each equals the fp32 reference on the bf16-rounded operands, and equals
// the same call without the reorder.
TEST(LowpGemm, Bf16ReorderedWeightsMatchReference) {
  std::string why;
  if (!kernels::bf16_gemm_supported(&why)) GTEST_SKIP() << "no bf16 matmul on this CPU: " << why;
  kernels::GemmPlanner planner;
  planner.set_compute(kernels::GemmCompute::kBF16);
  for (const Shape& s : {Shape{300, 96, 80}, Shape{257, 768, 64}, Shape{512, 33, 130}}) {
    const std::string shape = std::to_string(s.M) + "x" + std::to_string(s.N) + "x" + std::to_string(s.K);
    auto x = test::random_floats(size_t(s.M * s.K), 51, -2.f, 2.f);
    auto w = test::random_floats(size_t(s.N * s.K), 52, -0.5f, 0.5f);
    auto dy = test::random_floats(size_t(s.M * s.N), 53, -1.f, 1.f);
    auto b = test::random_floats(size_t(s.N), 54);
    const auto xr = round_to_bf16(x), wr = round_to_bf16(w), dyr = round_to_bf16(dy);
    // y = x W^T + b
    std::vector<float> y(size_t(s.M * s.N)), y_plain(y.size()), want(y.size());
    LinearArgs a{x.data(), w.data(), b.data(), y.data(), s.M, s.N, s.K, 0, 0, Activation::kIdentity};
    a.reorder_w = true;
    ASSERT_TRUE(planner.linear(a));
    const std::string impl = planner.last_impl();
    LinearArgs plain = a;
    plain.reorder_w = false, plain.y = y_plain.data();
    ASSERT_TRUE(planner.linear(plain));
    kernels::linear_f32_ref({xr.data(), wr.data(), b.data(), want.data(), s.M, s.N, s.K, 0, 0, Activation::kIdentity});
    expect_close(y.data(), s.N, want, s.M, s.N, 1e-4, 1e-3, "bf16 reordered linear " + shape + " [" + impl + "]");
    expect_close(y.data(), s.N, y_plain, s.M, s.N, 1e-5, 1e-4, "bf16 linear, reordered vs plain " + shape);
    // dx[M, K] = dy[M, N] W[N, K];  dW[N, K] += dy^T x
    for (bool dw : {false, true}) {
      kernels::BatchedMatmulArgs m;
      m.a = dy.data(), m.b = dw ? x.data() : w.data(), m.M = dw ? s.N : s.M, m.N = s.K, m.K = dw ? s.M : s.N;
      const int64_t as[4] = {0, 0, dw ? 1 : s.N, dw ? s.N : 1}, bs[4] = {0, 0, s.K, 1}, cs[4] = {0, 0, s.K, 1};
      std::memcpy(m.a_strides, as, sizeof as), std::memcpy(m.b_strides, bs, sizeof bs), std::memcpy(m.c_strides, cs, sizeof cs);
      m.accumulate = dw, m.reorder_b = true;
      m.a_as_before = dw;  // dW reads the dy that dx just read: the planner reuses its conversion
      const auto start = test::random_floats(size_t(m.M * m.N), 55, -1.f, 1.f);
      std::vector<float> got = dw ? start : std::vector<float>(start.size(), 0.f), ref = got;
      m.c = got.data();
      ASSERT_TRUE(planner.batched_matmul(m));
      kernels::BatchedMatmulArgs r = m;
      r.a = dyr.data(), r.b = dw ? xr.data() : wr.data(), r.c = ref.data();
      kernels::batched_matmul_f32_ref(r);
      expect_close(got.data(), 1, ref, int64_t(ref.size()), 1, 1e-4, 1e-3,
                   std::string(dw ? "bf16 reordered dW " : "bf16 reordered dx ") + shape + " [" + planner.last_impl() + "]");
      if (dw) {  // the promise on another operand (another pointer) is not taken: it is converted
        const auto dy2 = test::random_floats(dy.size(), 56, -1.f, 1.f);
        std::vector<float> got2 = start, ref2 = start;
        m.a = dy2.data(), m.c = got2.data();
        ASSERT_TRUE(planner.batched_matmul(m));
        const auto dy2r = round_to_bf16(dy2);
        r.a = dy2r.data(), r.c = ref2.data();
        kernels::batched_matmul_f32_ref(r);
        expect_close(got2.data(), 1, ref2, int64_t(ref2.size()), 1, 1e-4, 1e-3, "bf16 dW on another dy " + shape);
      }
    }
  }
}

// The int8 layer's specification from its parts: x quantised with max|x| / 127 (or `range` / 127), the
// weights per channel with the packed form's qmax, an exact int32 product, then the dequantisation, bias
// and activation in fp32.
std::vector<float> int8_reference(const std::vector<float>& x, int64_t ldx, const std::vector<float>& w,
                                  const float* bias, Activation act, const Shape& s, int qmax, float range = -1.f) {
  const float amax = range >= 0 ? range : kernels::absmax_f32_ref(x.data(), s.M, s.K, ldx);
  const float x_scale = amax > 0 ? amax / 127.f : 1.f;
  std::vector<int8_t> qx(size_t(s.M * s.K)), qw(size_t(s.N * s.K));
  std::vector<float> w_scales(size_t(s.N));
  kernels::quantize_i8_ref(x.data(), s.M, s.K, ldx, x_scale, qx.data());
  kernels::quantize_weights_per_channel_i8(w.data(), s.N, s.K, qw.data(), w_scales.data(), qmax);
  std::vector<int32_t> acc(size_t(s.M * s.N));
  kernels::matmul_i8_ref(qx.data(), qw.data(), acc.data(), s.M, s.N, s.K);
  std::vector<float> y(size_t(s.M * s.N));
  kernels::dequantize_i32_ref(acc.data(), s.M, s.N, x_scale, w_scales.data(), bias, act, y.data(), s.N);
  return y;
}

int expected_qmax() { return kernels::int8_gemm_has_vnni() ? 127 : 63; }

TEST(LowpGemm, Int8LinearMatchesQuantisedReference) {
  std::cout << "[ int8     ] weights " << (kernels::int8_gemm_has_vnni() ? "8-bit (VNNI)" : "7-bit (no VNNI)") << "\n";
  kernels::GemmPlanner planner;
  int i = 0;
  for (const Shape& s : kShapes)
    for (Activation act : kActs) {
      ++i;
      const int64_t ldx = s.K + (i % 2) * 5, ldy = s.N + (i % 3) * 3;
      auto x = test::random_floats(size_t(s.M * ldx), 400 + i, -2.f, 2.f);
      auto w = test::random_floats(size_t(s.N * s.K), 500 + i, -0.1f, 0.1f);
      auto b = test::random_floats(size_t(s.N), 600 + i);
      auto packed = kernels::pack_linear_weights_lowp(w.data(), s.N, s.K, WeightType::kInt8);
      ASSERT_TRUE(packed.ok()) << packed.status().to_string();
      std::vector<float> y(size_t(s.M * ldy), 0.f);
      const float* bias = i % 4 ? b.data() : nullptr;
      LinearArgs a{x.data(), w.data(), bias, y.data(), s.M, s.N, s.K, ldx, ldy, act, packed->get()};
      ASSERT_TRUE(planner.linear(a));
      expect_close(y.data(), ldy, int8_reference(x, ldx, w, bias, act, s, expected_qmax()), s.M, s.N, 1e-5, 1e-5,
                   "int8 linear " + std::to_string(s.M) + "x" + std::to_string(s.N) + "x" + std::to_string(s.K));
    }
  std::cout << "[ int8     ] oneDNN ran " << planner.last_impl() << "\n";
}

// The bias rides in the matmul as bias / (x_scale * w_scale[n]); with activations so small that this
// overflows (here x ~ 1e-36: a subnormal scale), the layer adds it after the dequantisation instead, and
// the same shape then runs both ways in one planner.
TEST(LowpGemm, Int8BiasStaysRightWhenItsScaledFormOverflows) {
  const Shape s{6, 40, 96};
  kernels::GemmPlanner planner;
  auto w = test::random_floats(size_t(s.N * s.K), 71, -0.1f, 0.1f);
  auto b = test::random_floats(size_t(s.N), 72, 0.5f, 2.f);
  auto packed = kernels::pack_linear_weights_lowp(w.data(), s.N, s.K, WeightType::kInt8);
  ASSERT_TRUE(packed.ok()) << packed.status().to_string();
  for (float magnitude : {1.f, 1e-36f, 1.f}) {
    auto x = test::random_floats(size_t(s.M * s.K), 73, -2.f, 2.f);
    for (float& v : x) v *= magnitude;
    std::vector<float> y(size_t(s.M * s.N), 0.f);
    LinearArgs a{x.data(), w.data(), b.data(), y.data(), s.M, s.N, s.K, s.K, s.N, Activation::kGeluErf, packed->get()};
    ASSERT_TRUE(planner.linear(a));
    expect_close(y.data(), s.N, int8_reference(x, s.K, w, b.data(), Activation::kGeluErf, s, expected_qmax()), s.M,
                 s.N, 1e-5, 1e-5, "int8 linear, activations of magnitude " + std::to_string(magnitude));
  }
}

// Every product at its largest magnitude: x = +a (quantised to 127; oneDNN's u8 shift for s8 inputs on CPUs
// without VNNI makes it 255), w = +-c (+-qmax). Adjacent pairs sum to +-2 x 255 x 127 = +-64770 in
// vpmaddubsw, beyond int16 (a raw oneDNN 2.6 s8 matmul with 8-bit weights gives 97920 instead of 12387072
// at K = 768 under ONEDNN_MAX_CPU_ISA=AVX2), unless the weights are 7-bit (2 x 255 x 63 = 32130): the
// result must be exact.
TEST(LowpGemm, Int8WorstCaseValuesDoNotSaturate) {
  for (int64_t K : {64, 768, 3072}) {
    const Shape s{4, 32, K};
    std::vector<float> x(size_t(s.M * K), 3.f), w(size_t(s.N * K));
    for (int64_t n = 0; n < s.N; ++n)
      for (int64_t k = 0; k < K; ++k) w[size_t(n * K + k)] = n % 3 ? 0.5f : -0.5f;
    auto packed = kernels::pack_linear_weights_lowp(w.data(), s.N, K, WeightType::kInt8);
    ASSERT_TRUE(packed.ok()) << packed.status().to_string();
    kernels::GemmPlanner planner;
    std::vector<float> y(size_t(s.M * s.N));
    LinearArgs a{x.data(), w.data(), nullptr, y.data(), s.M, s.N, K, 0, 0, Activation::kIdentity, packed->get()};
    ASSERT_TRUE(planner.linear(a));
    auto want = int8_reference(x, K, w, nullptr, Activation::kIdentity, s, expected_qmax());
    // |y| = K * 3 * 0.5 exactly when nothing saturates.
    EXPECT_NEAR(std::fabs(want[0]), 1.5 * double(K), 1e-3 * K);
    expect_close(y.data(), s.N, want, s.M, s.N, 0.0, 1e-6, "worst case K=" + std::to_string(K));
  }
}

TEST(LowpGemm, CalibratedScalesAreRecordedThenUsed) {
  const Shape s{6, 40, 96};
  auto x = test::random_floats(size_t(s.M * s.K), 7, -2.f, 2.f);
  auto small = test::random_floats(size_t(s.M * s.K), 8, -0.5f, 0.5f);
  auto w = test::random_floats(size_t(s.N * s.K), 9, -0.1f, 0.1f);
  auto packed = kernels::pack_linear_weights_lowp(w.data(), s.N, s.K, WeightType::kInt8);
  ASSERT_TRUE(packed.ok());
  kernels::GemmPlanner planner;
  std::vector<float> dynamic(size_t(s.M * s.N)), recorded(dynamic.size()), fixed(dynamic.size());
  auto run = [&](const std::vector<float>& in, std::vector<float>& out) {
    LinearArgs a{in.data(), w.data(), nullptr, out.data(), s.M, s.N, s.K, 0, 0, Activation::kIdentity, packed->get()};
    ASSERT_TRUE(planner.linear(a));
  };
  run(x, dynamic);
  planner.set_int8_scales(kernels::Int8ActivationScales::kRecord);
  run(x, recorded);
  ASSERT_EQ(planner.int8_ranges().size(), 1u);
  EXPECT_EQ(planner.int8_ranges().begin()->second, kernels::absmax_f32_ref(x.data(), s.M, s.K, s.K));
  planner.set_int8_scales(kernels::Int8ActivationScales::kStatic);
  run(x, fixed);
  EXPECT_EQ(dynamic, recorded);
  EXPECT_EQ(dynamic, fixed) << "static scales from the same batch give the same result";
  // A batch with a smaller range keeps the recorded one.
  std::vector<float> got(dynamic.size());
  run(small, got);
  const float range = planner.int8_ranges().begin()->second;
  expect_close(got.data(), s.N, int8_reference(small, s.K, w, nullptr, Activation::kIdentity, s, expected_qmax(), range),
               s.M, s.N, 1e-5, 1e-5, "static scale");
}

// ---- whole models ----------------------------------------------------------------------------------

double cosine(const float* a, const float* b, int64_t n) {
  double ab = 0, aa = 0, bb = 0;
  for (int64_t i = 0; i < n; ++i) ab += double(a[i]) * b[i], aa += double(a[i]) * a[i], bb += double(b[i]) * b[i];
  return ab / std::sqrt(aa * bb);
}

struct Outputs {
  std::vector<float> hidden, logits;
};

Result<Outputs> run_model(const std::shared_ptr<const Model>& model, bool calibrate) {
  const int B = 2, S = 64;
  SessionOptions opts;
  opts.max_batch = B, opts.max_seq = S;
  BERT_ASSIGN_OR_RETURN(auto session, Session::Create(model, opts));
  std::vector<int32_t> ids(B * S), mask(B * S, 1);
  for (int i = 0; i < B * S; ++i) ids[size_t(i)] = 1000 + (i * 7919) % 20000;
  for (int i = S - 10; i < S; ++i) mask[size_t(S + i)] = 0;  // the second sequence is shorter
  BatchInput in{B, S, ids.data(), mask.data(), nullptr};
  if (calibrate) BERT_RETURN_IF_ERROR(session->Calibrate(in));
  BERT_RETURN_IF_ERROR(session->Run(in));
  Outputs out;
  BERT_ASSIGN_OR_RETURN(OutputView h, session->Output("last_hidden_state"));
  BERT_ASSIGN_OR_RETURN(OutputView l, session->Output("logits"));
  out.hidden.assign(h.data, h.data + h.numel());
  out.logits.assign(l.data, l.data + l.numel());
  return out;
}

// bert-base-shaped synthetic weights (12 layers, hidden 768): the low-precision outputs against fp32.
TEST(LowpModel, BertBaseShapedOutputsStayCloseToFp32) {
  SyntheticSpec spec{.preset = "bert-base", .architecture = "BertForSequenceClassification", .seed = 31};
  auto fp32 = LoadSynthetic(spec);
  ASSERT_TRUE(fp32.ok()) << fp32.status().to_string();
  auto want = run_model(*fp32, false);
  ASSERT_TRUE(want.ok()) << want.status().to_string();
  struct Case {
    Precision precision;
    bool calibrate;
    double min_cosine;
  };
  for (const Case& c : {Case{Precision::kInt8, false, 0.999}, Case{Precision::kInt8, true, 0.999},
                        Case{Precision::kBF16, false, 0.9999}}) {
    auto model = LoadSynthetic(spec, {.precision = c.precision});
    std::string why;
    if (c.precision == Precision::kBF16 && !kernels::bf16_gemm_supported(&why)) {
      ASSERT_FALSE(model.ok());
      EXPECT_NE(model.status().message().find("AVX-512"), std::string::npos) << model.status().to_string();
      std::cout << "[ skipped  ] bf16 model: " << model.status().to_string() << "\n";
      continue;
    }
    ASSERT_TRUE(model.ok()) << model.status().to_string();
    EXPECT_EQ((*model)->info().precision, precision_name(c.precision));
    std::cout << "[ model    ] " << (*model)->info().precision_detail << "\n";
    auto got = run_model(*model, c.calibrate);
    ASSERT_TRUE(got.ok()) << got.status().to_string();
    const double cos_h = cosine(got->hidden.data(), want->hidden.data(), int64_t(want->hidden.size()));
    const double cos_l = cosine(got->logits.data(), want->logits.data(), int64_t(want->logits.size()));
    std::cout << "[ drift    ] " << precision_name(c.precision) << (c.calibrate ? " calibrated" : "")
              << ": last_hidden_state cosine " << cos_h << ", logits cosine " << cos_l
              << ", max abs " << test::max_abs_diff(got->hidden.data(), want->hidden.data(), want->hidden.size()) << "\n";
    EXPECT_GE(cos_h, c.min_cosine);
    EXPECT_GE(cos_l, c.min_cosine);
    EXPECT_GT(test::max_abs_diff(got->hidden.data(), want->hidden.data(), want->hidden.size()), 0.0)
        << "a low-precision run identical to fp32 did not run in low precision";
  }
}

TEST(LowpModel, RefusalsNameWhatIsMissing) {
  auto fp16 = LoadSynthetic({.preset = "bert-tiny"}, {.precision = Precision::kF16});
  ASSERT_FALSE(fp16.ok());
  EXPECT_NE(fp16.status().message().find("fp16 on the CPU"), std::string::npos) << fp16.status().to_string();

  auto squeeze = LoadSynthetic({.preset = "squeezebert-uncased"}, {.precision = Precision::kInt8});
  ASSERT_FALSE(squeeze.ok());
  EXPECT_NE(squeeze.status().message().find("grouped"), std::string::npos) << squeeze.status().to_string();

  auto fp32 = LoadSynthetic({.preset = "bert-tiny"});
  ASSERT_TRUE(fp32.ok());
  auto session = Session::Create(*fp32, {.max_batch = 1, .max_seq = 8});
  ASSERT_TRUE(session.ok());
  std::vector<int32_t> ids(8, 1000);
  Status st = (*session)->Calibrate({1, 8, ids.data()});
  EXPECT_EQ(st.code(), ErrorCode::kUnsupported);
  EXPECT_NE(st.message().find("int8"), std::string::npos) << st.to_string();
}

// pack_weights = false still packs the encoder in int8 (that is its storage); the model runs.
TEST(LowpModel, Int8IgnoresPackWeightsFalseForTheEncoder) {
  auto a = LoadSynthetic({.preset = "bert-tiny", .architecture = "BertForSequenceClassification"},
                         {.precision = Precision::kInt8, .pack_weights = false});
  auto b = LoadSynthetic({.preset = "bert-tiny", .architecture = "BertForSequenceClassification"},
                         {.precision = Precision::kInt8});
  ASSERT_TRUE(a.ok() && b.ok());
  auto x = run_model(*a, false), y = run_model(*b, false);
  ASSERT_TRUE(x.ok() && y.ok()) << x.status().to_string() << y.status().to_string();
  EXPECT_EQ(x->hidden, y->hidden);
}

// convert_weights --dtype int8: the encoder's linear weights stored as int8 + scales (a smaller file); loaded in
// int8 it runs bit-identically to the fp32 file loaded in int8 (with VNNI; without it the file's 8-bit weights
// are rounded again to 7 bits, so only close); in fp32 it runs the dequantised weights.
TEST(LowpModel, Int8EngineFilesRoundTrip) {
  test::TempDir dir;
  const SyntheticSpec spec{.preset = "bert-mini", .architecture = "BertForSequenceClassification", .seed = 5};
  ASSERT_TRUE(WriteSynthetic(spec, (dir / "f32.bert").string()).ok());
  auto report = WriteSynthetic(spec, (dir / "i8.bert").string(), DType::kI8);
  ASSERT_TRUE(report.ok()) << report.status().to_string();
  // bert-mini's encoder linears: 4 x (4 x 256 x 256 + 2 x 256 x 1024) = 3.1M weights, 3 bytes each saved.
  EXPECT_LT(std::filesystem::file_size(dir / "i8.bert") + 9'000'000, std::filesystem::file_size(dir / "f32.bert"));
  auto from_f32 = Model::Load((dir / "f32.bert").string(), {.precision = Precision::kInt8});
  auto from_i8 = Model::Load((dir / "i8.bert").string(), {.precision = Precision::kInt8});
  auto i8_as_f32 = Model::Load((dir / "i8.bert").string());
  auto f32 = Model::Load((dir / "f32.bert").string());
  ASSERT_TRUE(from_f32.ok() && from_i8.ok() && i8_as_f32.ok() && f32.ok()) << from_i8.status().to_string();
  EXPECT_EQ((*from_i8)->info().weights_dtype, "I8");
  auto a = run_model(*from_f32, false), b = run_model(*from_i8, false), c = run_model(*i8_as_f32, false),
       d = run_model(*f32, false);
  ASSERT_TRUE(a.ok() && b.ok() && c.ok() && d.ok());
  if (kernels::int8_gemm_has_vnni()) {
    EXPECT_EQ(a->hidden, b->hidden);
    EXPECT_EQ(a->logits, b->logits);
  } else {
    EXPECT_GE(cosine(a->hidden.data(), b->hidden.data(), int64_t(a->hidden.size())), 0.999);
  }
  EXPECT_GE(cosine(c->hidden.data(), d->hidden.data(), int64_t(d->hidden.size())), 0.9999);
  EXPECT_NE(c->hidden, d->hidden) << "the dequantised weights differ from the originals";
}

// bf16 mixed-precision training on the CPU: bf16 GEMM operands (forward and backward), fp32 master weights.
// Eval-mode gradients stay close to fp32's, and a few steps on one batch bring the loss down.
TEST(LowpTraining, Bf16GradientsTrackFp32AndTheLossFalls) {
  auto model = LoadSynthetic({.preset = "bert-mini", .architecture = "BertForSequenceClassification", .seed = 3});
  ASSERT_TRUE(model.ok());
  const int B = 4, S = 24;
  std::vector<int32_t> ids(B * S), mask(B * S, 1), labels = {0, 1, 1, 0};
  for (int i = 0; i < B * S; ++i) ids[size_t(i)] = 1000 + (i * 104729) % 25000;
  for (int i = S - 6; i < S; ++i) mask[size_t(2 * S + i)] = 0;
  BatchInput in{B, S, ids.data(), mask.data(), nullptr};
  TrainLabels y;
  y.labels = labels.data();
  auto make = [&](TrainPrecision p) {
    TrainerOptions o;
    o.max_batch = B, o.max_seq = S, o.dropout = 0.f, o.precision = p;
    return Trainer::Create(*model, o);
  };
  auto f32 = make(TrainPrecision::kF32);
  auto bf16 = make(TrainPrecision::kBF16);
  std::string why;
  if (!kernels::bf16_gemm_supported(&why)) {
    ASSERT_FALSE(bf16.ok());
    EXPECT_NE(bf16.status().message().find("AVX-512"), std::string::npos) << bf16.status().to_string();
    GTEST_SKIP() << bf16.status().to_string();
  }
  ASSERT_TRUE(f32.ok() && bf16.ok()) << bf16.status().to_string();
  auto loss32 = (*f32)->ForwardBackward(in, y);
  auto loss16 = (*bf16)->ForwardBackward(in, y);
  ASSERT_TRUE(loss32.ok() && loss16.ok()) << loss16.status().to_string();
  EXPECT_NEAR(*loss16, *loss32, 2e-2 * std::fabs(*loss32));
  auto g32 = (*f32)->Gradients(), g16 = (*bf16)->Gradients();
  ASSERT_EQ(g32.size(), g16.size());
  double worst = 1.0;
  std::string worst_name;
  for (size_t i = 0; i < g32.size(); ++i) {
    // softmax ignores a shift shared by all keys: the key bias's gradient is zero up to rounding noise.
    if (g32[i].name.ends_with("key.bias")) continue;
    const double c = cosine(g16[i].values.data(), g32[i].values.data(), int64_t(g32[i].values.size()));
    if (c < worst) worst = c, worst_name = g32[i].name;
    EXPECT_NE(g16[i].values, g32[i].values) << g32[i].name << ": bf16 gradients identical to fp32";
  }
  std::cout << "[ bf16     ] gradient cosine vs fp32: worst " << worst << " (" << worst_name << ")\n";
  EXPECT_GE(worst, 0.99);
  double first = *loss16, last = first;
  for (int step = 0; step < 8; ++step) {
    ASSERT_TRUE((*bf16)->Step(1e-3f).ok());
    auto l = (*bf16)->ForwardBackward(in, y);
    ASSERT_TRUE(l.ok());
    last = *l;
  }
  EXPECT_LT(last, 0.5 * first) << "8 bf16 steps on one batch should fit it";
}

}  // namespace
}  // namespace bert
