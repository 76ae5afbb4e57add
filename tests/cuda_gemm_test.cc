// cuBLASLt linear layers (kernels/cuda/cuda_gemm.h) in fp32, fp16 and int8 against scalar references
// (built only with CUDA; every test skips with a message without a GPU). The CUDA code under test was
// NEVER RUN ON A GPU YET.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "kernels/activation.h"
#include "kernels/convert.h"
#include "kernels/cuda/cuda_gemm.h"
#include "tests/cuda_test_util.h"
#include "tests/test_util.h"

namespace bert::kernels {
namespace {

using test::DeviceBuffer;
using Shape = std::tuple<int64_t, int64_t, int64_t>;  // M, N, K

constexpr Activation kAllActivations[] = {Activation::kIdentity,  Activation::kGeluErf, Activation::kGeluTanh,
                                          Activation::kGeluQuick, Activation::kRelu,    Activation::kTanh};

// fp32 accumulates in fp32 against a double reference: ~1e-6 at K = 768. cuBLASLt's fused tanh-GELU epilogue
// may evaluate tanh with a hardware approximation (~2^-11 relative), hence its looser bound.
constexpr double kF32Tolerance = 1e-5;
constexpr double kF32FusedGeluTolerance = 1e-3;
// fp16 output (and, for the unfused activations, an fp16 rounding between the GEMM and the activation) against a
// reference on the same fp16-rounded inputs: ~1e-3 expected.
constexpr double kF16Tolerance = 1e-2;

std::vector<uint16_t> to_f16(const std::vector<float>& v) {
  std::vector<uint16_t> h(v.size());
  convert_f32_to_f16_ref(v.data(), h.data(), int64_t(v.size()));
  return h;
}

std::vector<float> to_f32(const std::vector<uint16_t>& h) {
  std::vector<float> v(h.size());
  convert_f16_to_f32_ref(h.data(), v.data(), int64_t(h.size()));
  return v;
}

// The [M, N] block of a row-stride-ld matrix, densely.
std::vector<float> block(const std::vector<float>& y, int64_t M, int64_t N, int64_t ld) {
  std::vector<float> out(M * N);
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n) out[m * N + n] = y[m * ld + n];
  return out;
}

// Every element of y outside the [M, N] block (the row padding) still equals `fill`.
bool padding_untouched(const std::vector<float>& y, int64_t M, int64_t N, int64_t ld, float fill) {
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = N; n < ld; ++n)
      if (y[m * ld + n] != fill) return false;
  return true;
}

bool all_finite(const std::vector<float>& v) {
  for (float f : v)
    if (!std::isfinite(f)) return false;
  return true;
}

// got ~ want in relative L2, no NaN / inf, and not all zeros unless the reference is (ReLU of a single negative
// product at 1x1x1 legitimately is).
void expect_matches(const std::vector<float>& got, const std::vector<float>& want, double tolerance) {
  ASSERT_EQ(got.size(), want.size());
  EXPECT_LE(test::relative_l2(got.data(), want.data(), want.size()), tolerance);
  EXPECT_TRUE(all_finite(got));
  if (test::max_abs(want.data(), want.size()) > 0) {
    EXPECT_GT(test::max_abs(got.data(), got.size()), 0.0);
  }
}

// cuBLASLt linear layers in fp32 against the scalar reference: awkward sizes, bias and activations.
TEST(CudaGemm, F32LinearMatchesReference) {
  BERT_REQUIRE_GPU();
  cuda::CudaGemm gemm;
  for (auto [M, N, K] : {Shape{1, 1, 1}, {17, 33, 65}, {128, 768, 768}, {5, 3072, 768}, {200, 2, 64}})
    for (Activation act : kAllActivations)
      for (bool bias : {true, false}) {
        SCOPED_TRACE(::testing::Message() << M << "x" << N << "x" << K << " act " << activation_name(act) << " bias "
                                          << bias);
        auto x = test::random_floats(M * K, 1), w = test::random_floats(N * K, 2, -0.1f, 0.1f);
        auto b = test::random_floats(N, 3);
        std::vector<float> want(M * N);
        LinearArgs r;
        r.x = x.data(), r.w = w.data(), r.bias = bias ? b.data() : nullptr, r.y = want.data();
        r.M = M, r.N = N, r.K = K, r.act = act;
        linear_f32_ref(r);
        DeviceBuffer<float> dx(x), dw(w), db(b), dy(std::vector<float>(M * N));
        LinearArgs d = r;
        d.x = dx.p, d.w = dw.p, d.bias = bias ? db.p : nullptr, d.y = dy.p;
        ASSERT_TRUE(gemm.linear(d)) << cuda::cuda_last_error();
        auto got = dy.host();
        expect_matches(got, want, act == Activation::kGeluTanh ? kF32FusedGeluTolerance : kF32Tolerance);
      }
  EXPECT_GT(gemm.plan_count(), 0u);
}

// fp32 through DevLinearArgs with strided x and y: the row padding of y is left alone.
TEST(CudaGemm, F32StridedRowsMatchReference) {
  BERT_REQUIRE_GPU();
  cuda::CudaGemm gemm;
  constexpr float kFill = 7.f;
  for (auto [M, N, K] : {Shape{1, 1, 1}, {17, 33, 65}, {128, 768, 768}})
    for (Activation act : {Activation::kIdentity, Activation::kGeluErf, Activation::kGeluTanh}) {
      SCOPED_TRACE(::testing::Message() << M << "x" << N << "x" << K << " act " << activation_name(act));
      const int64_t ldx = K + 5, ldy = N + 3;
      auto x = test::random_floats(M * ldx, 11), w = test::random_floats(N * K, 12, -0.1f, 0.1f);
      auto b = test::random_floats(N, 13);
      std::vector<float> want(M * ldy, kFill);
      LinearArgs r;
      r.x = x.data(), r.w = w.data(), r.bias = b.data(), r.y = want.data(), r.M = M, r.N = N, r.K = K;
      r.ldx = ldx, r.ldy = ldy, r.act = act;
      linear_f32_ref(r);
      DeviceBuffer<float> dx(x), dw(w), db(b), dy(std::vector<float>(M * ldy, kFill));
      cuda::DevLinearArgs d;
      d.x = dx.p, d.w = dw.p, d.bias = db.p, d.y = dy.p, d.M = M, d.N = N, d.K = K, d.ldx = ldx, d.ldy = ldy;
      d.act = act, d.dtype = cuda::Elem::kF32;
      ASSERT_TRUE(gemm.linear(d)) << cuda::cuda_last_error();
      auto got_all = dy.host();
      EXPECT_TRUE(padding_untouched(got_all, M, N, ldy, kFill));
      auto got = block(got_all, M, N, ldy), ref = block(want, M, N, ldy);
      expect_matches(got, ref, act == Activation::kGeluTanh ? kF32FusedGeluTolerance : kF32Tolerance);
    }
}

// fp16 (fp32 accumulation) against the fp32 reference on the fp16-rounded inputs: every activation with and
// without bias, dense and strided rows, awkward and BERT sizes.
TEST(CudaGemm, F16LinearMatchesReference) {
  BERT_REQUIRE_GPU();
  cuda::CudaGemm gemm;
  constexpr float kFill = 3.f;
  for (auto [M, N, K] : {Shape{1, 1, 1}, {17, 33, 65}, {128, 768, 768}, {5, 3072, 768}, {200, 2, 64}})
    for (bool strided : {false, true})
      for (Activation act : kAllActivations)
        for (bool bias : {true, false}) {
          SCOPED_TRACE(::testing::Message() << M << "x" << N << "x" << K << " act " << activation_name(act)
                                            << " bias " << bias << " strided " << strided);
          const int64_t ldx = strided ? K + 5 : K, ldy = strided ? N + 3 : N;
          const auto x16 = to_f16(test::random_floats(M * ldx, 21));
          const auto w16 = to_f16(test::random_floats(N * K, 22, -0.1f, 0.1f));
          const auto b16 = to_f16(test::random_floats(N, 23));
          const auto x = to_f32(x16), w = to_f32(w16), b = to_f32(b16);
          std::vector<float> want(M * ldy, kFill);
          LinearArgs r;
          r.x = x.data(), r.w = w.data(), r.bias = bias ? b.data() : nullptr, r.y = want.data();
          r.M = M, r.N = N, r.K = K, r.ldx = ldx, r.ldy = ldy, r.act = act;
          linear_f32_ref(r);

          DeviceBuffer<uint16_t> dx(x16), dw(w16), db(b16), dy(to_f16(std::vector<float>(M * ldy, kFill)));
          cuda::DevLinearArgs d;
          d.x = dx.p, d.w = dw.p, d.bias = bias ? db.p : nullptr, d.y = dy.p;
          d.M = M, d.N = N, d.K = K, d.ldx = strided ? ldx : 0, d.ldy = strided ? ldy : 0;
          d.act = act, d.dtype = cuda::Elem::kF16;
          ASSERT_TRUE(gemm.linear(d)) << cuda::cuda_last_error();
          const auto got_all = to_f32(dy.host());
          EXPECT_TRUE(padding_untouched(got_all, M, N, ldy, kFill));
          const auto got = block(got_all, M, N, ldy), ref = block(want, M, N, ldy);
          expect_matches(got, ref, kF16Tolerance);
        }
}

// Pointers below the alignment the fast paths want (x, w, y one fp16 element past a 256-byte boundary; the bias
// too, so it cannot go in the epilogue): the plan falls back to slower kernels and the bias to the extra pass.
TEST(CudaGemm, F16MisalignedPointersStillMatchReference) {
  BERT_REQUIRE_GPU();
  cuda::CudaGemm gemm;
  const int64_t M = 17, N = 40, K = 64;
  for (Activation act : {Activation::kIdentity, Activation::kGeluTanh, Activation::kGeluErf}) {
    SCOPED_TRACE(activation_name(act));
    const auto x16 = to_f16(test::random_floats(M * K + 1, 31));
    const auto w16 = to_f16(test::random_floats(N * K + 1, 32, -0.1f, 0.1f));
    const auto b16 = to_f16(test::random_floats(N + 1, 33));
    const auto x = to_f32(x16), w = to_f32(w16), b = to_f32(b16);
    std::vector<float> want(M * N);
    LinearArgs r;
    r.x = x.data() + 1, r.w = w.data() + 1, r.bias = b.data() + 1, r.y = want.data(), r.M = M, r.N = N, r.K = K;
    r.act = act;
    linear_f32_ref(r);
    DeviceBuffer<uint16_t> dx(x16), dw(w16), db(b16), dy(size_t(M * N + 1));
    cuda::DevLinearArgs d;
    d.x = dx.p + 1, d.w = dw.p + 1, d.bias = db.p + 1, d.y = dy.p + 1, d.M = M, d.N = N, d.K = K;
    d.act = act, d.dtype = cuda::Elem::kF16;
    ASSERT_TRUE(gemm.linear(d)) << cuda::cuda_last_error();
    auto all = to_f32(dy.host());
    const std::vector<float> got(all.begin() + 1, all.end());
    expect_matches(got, want, kF16Tolerance);
  }
}

// Running a planned shape again makes no plan; the 8192^3 peak-GEMM bench's pattern (fp16, no bias) included.
TEST(CudaGemm, PlansAreReusedWhenAShapeRepeats) {
  BERT_REQUIRE_GPU();
  cuda::CudaGemm gemm;
  const int64_t M = 128, N = 768, K = 768;
  DeviceBuffer<uint16_t> dx(to_f16(test::random_floats(M * K, 41))), dw(to_f16(test::random_floats(N * K, 42)));
  DeviceBuffer<uint16_t> db(to_f16(test::random_floats(N, 43))), dy(size_t(M * N));
  cuda::DevLinearArgs d;
  d.x = dx.p, d.w = dw.p, d.bias = db.p, d.y = dy.p, d.M = M, d.N = N, d.K = K;
  d.act = Activation::kGeluErf, d.dtype = cuda::Elem::kF16;
  ASSERT_TRUE(gemm.linear(d)) << cuda::cuda_last_error();
  const size_t plans = gemm.plan_count();
  EXPECT_EQ(plans, 1u);
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(gemm.linear(d)) << cuda::cuda_last_error();
  EXPECT_EQ(gemm.plan_count(), plans);
  // Other buffers of the same shape (equally aligned) share the plan too.
  DeviceBuffer<uint16_t> dy2(size_t(M * N));
  d.y = dy2.p;
  ASSERT_TRUE(gemm.linear(d)) << cuda::cuda_last_error();
  EXPECT_EQ(gemm.plan_count(), plans);
  ASSERT_TRUE(cuda::synchronize()) << cuda::cuda_last_error();
}

// The int8 references: acc = exact integer x_q W_q^T, then act(acc * x_scale * w_scales[n] + bias[n]) in
// double, the activation through the scalar reference.
std::vector<float> int8_linear_ref(const std::vector<int8_t>& x, const std::vector<int8_t>& w, float x_scale,
                                   const std::vector<float>& w_scales, const float* bias, Activation act, int64_t M,
                                   int64_t N, int64_t K) {
  std::vector<float> y(M * N);
  for (int64_t m = 0; m < M; ++m) {
    for (int64_t n = 0; n < N; ++n) {
      int64_t acc = 0;
      for (int64_t k = 0; k < K; ++k) acc += int64_t(x[m * K + k]) * int64_t(w[n * K + k]);
      y[m * N + n] = float(double(acc) * double(x_scale) * double(w_scales[n]) + (bias ? double(bias[n]) : 0.0));
    }
    activation_f32_ref(ActivationArgs{y.data() + m * N, N, act});
  }
  return y;
}

std::vector<int8_t> random_int8(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> dist(-127, 127);
  std::vector<int8_t> v(n);
  for (auto& q : v) q = static_cast<int8_t>(dist(rng));
  return v;
}

// int8 x int8 -> int32 on tensor cores, dequantized with per-channel weight scales into fp32 and fp16, every
// activation with and without bias, dense and strided y.
TEST(CudaGemm, Int8LinearMatchesReference) {
  BERT_REQUIRE_GPU();
  cuda::CudaGemm gemm;
  constexpr float kFill = 5.f;
  for (auto [M, N, K] : {Shape{1, 4, 4}, {17, 36, 68}, {128, 768, 768}, {5, 3072, 768}, {200, 4, 64}})
    for (cuda::Elem y_dtype : {cuda::Elem::kF32, cuda::Elem::kF16})
      for (Activation act : kAllActivations)
        for (bool bias : {true, false}) {
          const bool strided = bias;  // covers both layouts without doubling the loop
          SCOPED_TRACE(::testing::Message() << M << "x" << N << "x" << K << " y " << cuda::elem_name(y_dtype)
                                            << " act " << activation_name(act) << " bias " << bias);
          const int64_t ldy = strided ? N + 3 : N;
          const auto x = random_int8(M * K, 51), w = random_int8(N * K, 52);
          // Scales of a realistic size: |acc| * x_scale * w_scale of order one.
          const float x_scale = test::random_floats(1, 53, 0.005f, 0.02f)[0];
          const auto w_scales = test::random_floats(N, 54, 0.0005f, 0.002f);
          const auto b = test::random_floats(N, 55);
          const auto want = int8_linear_ref(x, w, x_scale, w_scales, bias ? b.data() : nullptr, act, M, N, K);

          DeviceBuffer<int8_t> dx(x), dw(w);
          DeviceBuffer<float> dxs(std::vector<float>{x_scale}), dws(w_scales), db(b);
          DeviceBuffer<float> dy32(std::vector<float>(y_dtype == cuda::Elem::kF32 ? M * ldy : 0, kFill));
          DeviceBuffer<uint16_t> dy16(to_f16(std::vector<float>(y_dtype == cuda::Elem::kF16 ? M * ldy : 0, kFill)));
          cuda::Int8LinearArgs d;
          d.x = dx.p, d.w = dw.p, d.x_scale = dxs.p, d.w_scales = dws.p, d.bias = bias ? db.p : nullptr;
          d.y = y_dtype == cuda::Elem::kF32 ? static_cast<void*>(dy32.p) : static_cast<void*>(dy16.p);
          d.M = M, d.N = N, d.K = K, d.ldy = strided ? ldy : 0, d.act = act, d.y_dtype = y_dtype;
          ASSERT_TRUE(gemm.linear_i8(d)) << cuda::cuda_last_error();
          const auto got_all = y_dtype == cuda::Elem::kF32 ? dy32.host() : to_f32(dy16.host());
          EXPECT_TRUE(padding_untouched(got_all, M, N, ldy, kFill));
          const auto got = block(got_all, M, N, ldy);
          // fp32: exact integer accumulation, then a few fp32 roundings; fp16: the output rounding.
          expect_matches(got, want, y_dtype == cuda::Elem::kF32 ? 1e-5 : 1e-2);
        }
  // One int8 plan per shape, whatever the output type, activation or bias.
  EXPECT_EQ(gemm.plan_count(), 5u);
}

// Shapes the IMMA kernels cannot take are refused with a message; planned int8 shapes are reused.
TEST(CudaGemm, Int8RefusesBadShapesAndReusesPlans) {
  BERT_REQUIRE_GPU();
  cuda::CudaGemm gemm;
  const int64_t M = 9, N = 12, K = 20;
  DeviceBuffer<int8_t> dx(random_int8(M * (K + 3), 61)), dw(random_int8((N + 2) * (K + 3), 62));
  DeviceBuffer<float> dxs(std::vector<float>{0.01f}), dws(test::random_floats(N + 2, 63, 0.001f, 0.002f));
  DeviceBuffer<float> dy(size_t(M * (N + 2)));
  cuda::Int8LinearArgs d;
  d.x = dx.p, d.w = dw.p, d.x_scale = dxs.p, d.w_scales = dws.p, d.y = dy.p, d.M = M, d.N = N, d.K = K;
  d.y_dtype = cuda::Elem::kF32;

  cuda::Int8LinearArgs bad = d;
  bad.K = K + 2;  // not a multiple of 4
  EXPECT_FALSE(gemm.linear_i8(bad));
  EXPECT_NE(cuda::cuda_last_error().find("K must be a multiple of 4"), std::string::npos) << cuda::cuda_last_error();
  bad = d;
  bad.N = N + 2;  // not a multiple of 4
  EXPECT_FALSE(gemm.linear_i8(bad));
  EXPECT_NE(cuda::cuda_last_error().find("N must be a multiple of 4"), std::string::npos) << cuda::cuda_last_error();
  bad = d;
  bad.x = dx.p + 2;  // not 4-byte aligned
  EXPECT_FALSE(gemm.linear_i8(bad));
  EXPECT_NE(cuda::cuda_last_error().find("aligned"), std::string::npos) << cuda::cuda_last_error();
  EXPECT_EQ(gemm.plan_count(), 0u);

  ASSERT_TRUE(gemm.linear_i8(d)) << cuda::cuda_last_error();
  EXPECT_EQ(gemm.plan_count(), 1u);
  d.act = Activation::kGeluErf;
  d.y_dtype = cuda::Elem::kF32;
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(gemm.linear_i8(d)) << cuda::cuda_last_error();
  EXPECT_EQ(gemm.plan_count(), 1u);
  ASSERT_TRUE(cuda::synchronize()) << cuda::cuda_last_error();
}

}  // namespace
}  // namespace bert::kernels
