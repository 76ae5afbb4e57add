// cuBLASLt linear layers (kernels/cuda/cuda_gemm.h) in fp32, fp16 and int8, and fp32 strided batched matmuls,
// against scalar references
// (built only with CUDA; every test skips with a message without a GPU). The CUDA code under test was
#include <gtest/gtest.h>

#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
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
      d.act = act, d.dtype = DType::kF32;
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
          d.act = act, d.dtype = DType::kF16;
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
    d.act = act, d.dtype = DType::kF16;
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
  d.act = Activation::kGeluErf, d.dtype = DType::kF16;
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
  ASSERT_TRUE(gemm.reserve_int8(128, 768 * 3)) << cuda::cuda_last_error();  // the largest M x N below
  constexpr float kFill = 5.f;
  for (auto [M, N, K] : {Shape{1, 4, 4}, {17, 36, 68}, {128, 768, 768}, {5, 3072, 768}, {200, 4, 64}})
    for (DType y_dtype : {DType::kF32, DType::kF16})
      for (Activation act : kAllActivations)
        for (bool bias : {true, false}) {
          const bool strided = bias;  // covers both layouts without doubling the loop
          SCOPED_TRACE(::testing::Message() << M << "x" << N << "x" << K << " y " << dtype_name(y_dtype)
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
          DeviceBuffer<float> dy32(std::vector<float>(y_dtype == DType::kF32 ? M * ldy : 0, kFill));
          DeviceBuffer<uint16_t> dy16(to_f16(std::vector<float>(y_dtype == DType::kF16 ? M * ldy : 0, kFill)));
          cuda::Int8LinearArgs d;
          d.x = dx.p, d.w = dw.p, d.x_scale = dxs.p, d.w_scales = dws.p, d.bias = bias ? db.p : nullptr;
          d.y = y_dtype == DType::kF32 ? static_cast<void*>(dy32.p) : static_cast<void*>(dy16.p);
          d.M = M, d.N = N, d.K = K, d.ldy = strided ? ldy : 0, d.act = act, d.y_dtype = y_dtype;
          ASSERT_TRUE(gemm.linear_i8(d)) << cuda::cuda_last_error();
          const auto got_all = y_dtype == DType::kF32 ? dy32.host() : to_f32(dy16.host());
          EXPECT_TRUE(padding_untouched(got_all, M, N, ldy, kFill));
          const auto got = block(got_all, M, N, ldy);
          // fp32: exact integer accumulation, then a few fp32 roundings; fp16: the output rounding.
          expect_matches(got, want, y_dtype == DType::kF32 ? 1e-5 : 1e-2);
        }
  // One int8 plan per shape, whatever the output type, activation or bias.
  EXPECT_EQ(gemm.plan_count(), 5u);
}

// Shapes the IMMA kernels cannot take are refused with a message; planned int8 shapes are reused.
TEST(CudaGemm, Int8RefusesBadShapesAndReusesPlans) {
  BERT_REQUIRE_GPU();
  cuda::CudaGemm gemm;
  const int64_t M = 9, N = 12, K = 20;
  ASSERT_TRUE(gemm.reserve_int8(M, N + 2)) << cuda::cuda_last_error();
  DeviceBuffer<int8_t> dx(random_int8(M * (K + 3), 61)), dw(random_int8((N + 2) * (K + 3), 62));
  DeviceBuffer<float> dxs(std::vector<float>{0.01f}), dws(test::random_floats(N + 2, 63, 0.001f, 0.002f));
  DeviceBuffer<float> dy(size_t(M * (N + 2)));
  cuda::Int8LinearArgs d;
  d.x = dx.p, d.w = dw.p, d.x_scale = dxs.p, d.w_scales = dws.p, d.y = dy.p, d.M = M, d.N = N, d.K = K;
  d.y_dtype = DType::kF32;

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
  d.y_dtype = DType::kF32;
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(gemm.linear_i8(d)) << cuda::cuda_last_error();
  EXPECT_EQ(gemm.plan_count(), 1u);
  ASSERT_TRUE(cuda::synchronize()) << cuda::cuda_last_error();
}

// ---- strided batched matmuls (the trainer's gradients and attention) ----------------------------------------

using Strides = std::array<int64_t, 4>;  // element strides: batch0, batch1, row, column

constexpr int64_t kAwkwardSizes[] = {1, 7, 33, 64, 129};

// A BatchedMatmulArgs with sizes, strides and accumulate set and no pointers.
BatchedMatmulArgs batched(int64_t batch0, int64_t batch1, int64_t M, int64_t N, int64_t K, Strides a, Strides b,
                          Strides c, bool accumulate = false) {
  BatchedMatmulArgs g;
  g.batch0 = batch0, g.batch1 = batch1, g.M = M, g.N = N, g.K = K, g.accumulate = accumulate;
  for (int i = 0; i < 4; ++i) g.a_strides[i] = a[i], g.b_strides[i] = b[i], g.c_strides[i] = c[i];
  return g;
}

std::string describe(const BatchedMatmulArgs& g) {
  std::string out = "batch " + std::to_string(g.batch0) + "x" + std::to_string(g.batch1) + " M=" + std::to_string(g.M) +
                    " N=" + std::to_string(g.N) + " K=" + std::to_string(g.K) + (g.accumulate ? " +=" : " =");
  for (const int64_t* s : {g.a_strides, g.b_strides, g.c_strides})
    out += " {" + std::to_string(s[0]) + "," + std::to_string(s[1]) + "," + std::to_string(s[2]) + "," +
           std::to_string(s[3]) + "}";
  return out;
}

// Elements a strided batched matrix spans: one past its largest offset (strides >= 0); 0 when it is empty.
size_t span(const int64_t* s, int64_t batch0, int64_t batch1, int64_t rows, int64_t cols) {
  if (batch0 == 0 || batch1 == 0 || rows == 0 || cols == 0) return 0;
  return size_t(1 + (batch0 - 1) * s[0] + (batch1 - 1) * s[1] + (rows - 1) * s[2] + (cols - 1) * s[3]);
}

// The offset of every output element of g in C's buffer, batch by batch, each matrix row by row.
std::vector<size_t> output_offsets(const BatchedMatmulArgs& g) {
  std::vector<size_t> offsets;
  const int64_t* s = g.c_strides;
  for (int64_t i = 0; i < g.batch0; ++i)
    for (int64_t j = 0; j < g.batch1; ++j)
      for (int64_t m = 0; m < g.M; ++m)
        for (int64_t n = 0; n < g.N; ++n) offsets.push_back(size_t(i * s[0] + j * s[1] + m * s[2] + n * s[3]));
  return offsets;
}

// Runs g (sizes, strides and accumulate; its pointers are ignored) on the GPU and through batched_matmul_f32_ref on
// the same random non-zero inputs, and compares every output element. C starts random when accumulating and NaN
// otherwise (with beta = 0 cuBLASLt must not read it); C's elements outside the outputs must stay as they were.
void expect_batched_matches(cuda::CudaGemm& gemm, const BatchedMatmulArgs& g, uint32_t seed,
                            double tolerance = kF32Tolerance) {
  SCOPED_TRACE(describe(g));
  const auto a = test::random_floats(span(g.a_strides, g.batch0, g.batch1, g.M, g.K), seed);
  const auto b = test::random_floats(span(g.b_strides, g.batch0, g.batch1, g.K, g.N), seed + 1);
  const size_t c_elems = span(g.c_strides, g.batch0, g.batch1, g.M, g.N);
  const auto c0 = g.accumulate ? test::random_floats(c_elems, seed + 2)
                               : std::vector<float>(c_elems, std::numeric_limits<float>::quiet_NaN());
  std::vector<float> want_all = c0;
  BatchedMatmulArgs r = g;
  r.a = a.data(), r.b = b.data(), r.c = want_all.data();
  batched_matmul_f32_ref(r);

  const auto offsets = output_offsets(g);
  std::vector<float> want, got;
  for (size_t o : offsets) want.push_back(want_all[o]);
  if (g.K > 0) {
    // An all-zero reference (e.g. nothing written) would let an all-zero result pass.
    ASSERT_GT(test::max_abs(want.data(), want.size()), 0.0) << "the reference output is all zero";
  }

  DeviceBuffer<float> da(a), db(b), dc(c0);
  BatchedMatmulArgs d = g;
  d.a = da.p, d.b = db.p, d.c = dc.p;
  ASSERT_TRUE(gemm.batched_matmul(d)) << cuda::cuda_last_error();
  const auto got_all = dc.host();
  for (size_t o : offsets) got.push_back(got_all[o]);
  expect_matches(got, want, tolerance);

  std::vector<bool> is_output(c_elems, false);
  for (size_t o : offsets) is_output[o] = true;
  size_t touched = 0;
  for (size_t i = 0; i < c_elems; ++i)
    if (!is_output[i] && std::memcmp(&got_all[i], &c0[i], sizeof(float)) != 0) ++touched;
  EXPECT_EQ(touched, 0u) << "elements of C outside the outputs were written";
}

// Single row-major matrices (dx = dy W, the plain form) at every combination of awkward sizes.
TEST(CudaGemm, BatchedMatmulRowMajorMatchesReference) {
  BERT_REQUIRE_GPU();
  cuda::CudaGemm gemm;
  uint32_t seed = 100;
  for (int64_t M : kAwkwardSizes)
    for (int64_t N : kAwkwardSizes)
      for (int64_t K : kAwkwardSizes)
        expect_batched_matches(gemm, batched(1, 1, M, N, K, {0, 0, K, 1}, {0, 0, N, 1}, {0, 0, N, 1}), seed += 3);
  EXPECT_GT(gemm.plan_count(), 0u);
}

// Every mix of row-major and column-major A, B and C (transposed views: A^T as in dW = dy^T x, B^T as in Q K^T,
// a column-major C needing no transposed problem), with padded leading dimensions, at awkward sizes.
TEST(CudaGemm, BatchedMatmulTransposedViewsMatchReference) {
  BERT_REQUIRE_GPU();
  cuda::CudaGemm gemm;
  constexpr int64_t kPad = 3;
  uint32_t seed = 1000;
  for (int layout = 1; layout < 8; ++layout) {
    const bool a_cols = layout & 1, b_cols = layout & 2, c_cols = layout & 4;  // column-major (unit row stride)
    for (int64_t M : kAwkwardSizes)
      for (int64_t N : kAwkwardSizes)
        for (int64_t K : kAwkwardSizes) {
          const Strides a = a_cols ? Strides{0, 0, 1, M + kPad} : Strides{0, 0, K + kPad, 1};
          const Strides b = b_cols ? Strides{0, 0, 1, K + kPad} : Strides{0, 0, N + kPad, 1};
          const Strides c = c_cols ? Strides{0, 0, 1, M + kPad} : Strides{0, 0, N + kPad, 1};
          expect_batched_matches(gemm, batched(1, 1, M, N, K, a, b, c), seed += 3);
        }
  }
}

// The weight gradient dW += dy^T x of a grouped linear layer: G groups as batch1 reading interleaved column blocks
// of dy [T, G*M] and x [T, G*N] (T tokens = K) into dW [G*M, N], accumulating onto the existing gradient.
TEST(CudaGemm, BatchedMatmulWeightGradientMatchesReference) {
  BERT_REQUIRE_GPU();
  cuda::CudaGemm gemm;
  uint32_t seed = 5000;
  for (int64_t G : {1, 3})
    for (auto [M, N, K] : {Shape{1, 7, 33}, {7, 33, 129}, {33, 64, 7}, {64, 129, 1}, {129, 1, 64}, {64, 64, 129}})
      for (bool accumulate : {true, false})
        expect_batched_matches(
            gemm, batched(1, G, M, N, K, {0, M, 1, G * M}, {0, N, G * N, 1}, {0, M * N, N, 1}, accumulate), seed += 3);
}

// Attention's matmuls over batch0 x batch1 = 2 sequences x 3 heads, Q / K / V read in place from fused QKV rows
// (row stride ld = 3 * H * dh, head h at column h * dh), the context written into [S, H * dh] rows:
// scores = Q K^T, context = P V, and the backward's dP = dO V^T and dV = P^T dO.
TEST(CudaGemm, BatchedMatmulAttentionStridesMatchReference) {
  BERT_REQUIRE_GPU();
  cuda::CudaGemm gemm;
  const int64_t B = 2, H = 3;
  uint32_t seed = 7000;
  for (int64_t S : {1, 7, 33, 129})
    for (int64_t dh : {1, 7, 64}) {
      const int64_t ld = 3 * H * dh, ldc = H * dh;
      const Strides qkv_rows{S * ld, dh, ld, 1}, qkv_transposed{S * ld, dh, 1, ld};
      const Strides ctx_rows{S * ldc, dh, ldc, 1}, ctx_transposed{S * ldc, dh, 1, ldc};
      const Strides probs{H * S * S, S * S, S, 1}, probs_transposed{H * S * S, S * S, 1, S};
      expect_batched_matches(gemm, batched(B, H, S, S, dh, qkv_rows, qkv_transposed, probs), seed += 3);
      expect_batched_matches(gemm, batched(B, H, S, dh, S, probs, qkv_rows, ctx_rows), seed += 3);
      expect_batched_matches(gemm, batched(B, H, S, S, dh, ctx_rows, qkv_transposed, probs), seed += 3);
      expect_batched_matches(gemm, batched(B, H, S, dh, S, probs_transposed, ctx_rows, qkv_rows), seed += 3);
      // The same with a column-major output (context transposed in place).
      expect_batched_matches(gemm, batched(B, H, dh, S, S, qkv_transposed, probs_transposed, ctx_transposed),
                             seed += 3);
    }
}

// Batch layouts the planner treats specially: both batch dimensions dense (folded into one cuBLASLt batch), a
// broadcast operand (batch stride 0), and C batch stride 0, which sums over that dimension with accumulate (and
// leaves the last batch's product without).
TEST(CudaGemm, BatchedMatmulBatchLayoutsMatchReference) {
  BERT_REQUIRE_GPU();
  cuda::CudaGemm gemm;
  uint32_t seed = 9000;
  for (auto [M, N, K] : {Shape{1, 1, 1}, {7, 33, 64}, {33, 7, 129}, {64, 64, 64}}) {
    const Strides a{3 * M * K, M * K, K, 1}, b{3 * K * N, K * N, N, 1}, c{3 * M * N, M * N, N, 1};
    for (bool accumulate : {false, true}) {
      expect_batched_matches(gemm, batched(2, 3, M, N, K, a, b, c, accumulate), seed += 3);
      expect_batched_matches(gemm, batched(2, 3, M, N, K, a, {0, 0, N, 1}, c, accumulate), seed += 3);
      expect_batched_matches(gemm, batched(2, 3, M, N, K, a, b, {M * N, 0, N, 1}, accumulate), seed += 3);
      expect_batched_matches(gemm, batched(2, 3, M, N, K, a, b, {0, M * N, N, 1}, accumulate), seed += 3);
      expect_batched_matches(gemm, batched(2, 3, M, N, K, a, b, {0, 0, N, 1}, accumulate), seed += 3);
    }
  }
}

// accumulate: C += A B onto a non-zero C, twice in a row, against the reference applied twice.
TEST(CudaGemm, BatchedMatmulAccumulatesTwice) {
  BERT_REQUIRE_GPU();
  cuda::CudaGemm gemm;
  const int64_t M = 33, N = 64, K = 129;
  BatchedMatmulArgs g = batched(1, 2, M, N, K, {0, M * K, K, 1}, {0, K * N, 1, K}, {0, M * N, N, 1}, true);
  const auto a = test::random_floats(2 * M * K, 11), b = test::random_floats(2 * K * N, 12);
  const auto c0 = test::random_floats(2 * M * N, 13);
  std::vector<float> want = c0;
  BatchedMatmulArgs r = g;
  r.a = a.data(), r.b = b.data(), r.c = want.data();
  batched_matmul_f32_ref(r);
  batched_matmul_f32_ref(r);
  ASSERT_GT(test::max_abs_diff(want.data(), c0.data(), c0.size()), 0.0);
  DeviceBuffer<float> da(a), db(b), dc(c0);
  BatchedMatmulArgs d = g;
  d.a = da.p, d.b = db.p, d.c = dc.p;
  ASSERT_TRUE(gemm.batched_matmul(d)) << cuda::cuda_last_error();
  ASSERT_TRUE(gemm.batched_matmul(d)) << cuda::cuda_last_error();
  expect_matches(dc.host(), want, kF32Tolerance);
}

// K == 0: C = A B is all zeros (NaN before), C += A B leaves C alone; zero M, N or batch is a no-op.
TEST(CudaGemm, BatchedMatmulEmptySizes) {
  BERT_REQUIRE_GPU();
  cuda::CudaGemm gemm;
  const int64_t M = 7, N = 33, ldc = N + 2;
  const std::vector<float> nan(2 * M * ldc, std::numeric_limits<float>::quiet_NaN());
  DeviceBuffer<float> dc(nan);
  BatchedMatmulArgs g = batched(2, 1, M, N, 0, {0, 0, 0, 1}, {0, 0, N, 1}, {M * ldc, 0, ldc, 1});
  g.c = dc.p;  // a and b may be null when K == 0
  ASSERT_TRUE(gemm.batched_matmul(g)) << cuda::cuda_last_error();
  auto got = dc.host();
  size_t non_zero_outputs = 0, written_padding = 0;
  for (size_t o : output_offsets(g)) {
    if (got[o] != 0.f) ++non_zero_outputs;
    got[o] = std::numeric_limits<float>::quiet_NaN();
  }
  for (float v : got)
    if (!std::isnan(v)) ++written_padding;
  EXPECT_EQ(non_zero_outputs, 0u);
  EXPECT_EQ(written_padding, 0u);

  const auto c1 = test::random_floats(2 * M * ldc, 21);
  DeviceBuffer<float> dc1(c1);
  g.c = dc1.p, g.accumulate = true;
  ASSERT_TRUE(gemm.batched_matmul(g)) << cuda::cuda_last_error();
  g.accumulate = false, g.K = 5;
  for (int which = 0; which < 4; ++which) {
    BatchedMatmulArgs empty = g;
    (which == 0 ? empty.M : which == 1 ? empty.N : which == 2 ? empty.batch0 : empty.batch1) = 0;
    ASSERT_TRUE(gemm.batched_matmul(empty)) << cuda::cuda_last_error();
  }
  EXPECT_EQ(dc1.host(), c1);
  EXPECT_EQ(gemm.plan_count(), 0u);
}

// Arguments cuBLASLt cannot take are refused with a message naming the problem, and make no plan.
TEST(CudaGemm, BatchedMatmulRejectsBadArguments) {
  BERT_REQUIRE_GPU();
  cuda::CudaGemm gemm;
  const int64_t M = 7, N = 9, K = 5;
  DeviceBuffer<float> da(test::random_floats(4 * M * K, 31)), db(test::random_floats(4 * K * N, 32));
  DeviceBuffer<float> dc(size_t(4 * M * N));
  BatchedMatmulArgs good = batched(1, 1, M, N, K, {0, 0, K, 1}, {0, 0, N, 1}, {0, 0, N, 1});
  good.a = da.p, good.b = db.p, good.c = dc.p;

  auto expect_refused = [&](const BatchedMatmulArgs& bad, const char* message) {
    SCOPED_TRACE(describe(bad));
    EXPECT_FALSE(gemm.batched_matmul(bad));
    EXPECT_NE(cuda::cuda_last_error().find(message), std::string::npos) << cuda::cuda_last_error();
  };
  BatchedMatmulArgs bad = good;
  bad.a = nullptr;
  expect_refused(bad, "null given");
  bad = good, bad.c = nullptr;
  expect_refused(bad, "null given");
  bad = good, bad.M = -1;
  expect_refused(bad, "negative size");
  bad = good, bad.batch1 = -2;
  expect_refused(bad, "negative size");
  bad = good, bad.batch0 = 2, bad.a_strides[0] = -M * K;
  expect_refused(bad, "batch strides must be >= 0");
  bad = good, bad.a_strides[2] = 2 * K, bad.a_strides[3] = 2;  // no unit stride
  expect_refused(bad, "a (M x K) needs a unit row or column stride");
  bad = good, bad.a_strides[2] = 1, bad.a_strides[3] = 1;  // rows overlap: no leading dimension
  expect_refused(bad, "a (M x K) needs a unit row or column stride");
  bad = good, bad.b_strides[2] = N - 1;  // row stride below the row length
  expect_refused(bad, "b (K x N) needs a unit row or column stride");
  bad = good, bad.c_strides[2] = 2 * N, bad.c_strides[3] = 2;
  expect_refused(bad, "c (M x N) needs a unit row or column stride");
  bad = good, bad.K = 0, bad.c_strides[3] = 3;  // C is checked even when there is nothing to multiply
  expect_refused(bad, "c (M x N) needs a unit row or column stride");
  EXPECT_EQ(gemm.plan_count(), 0u);
  ASSERT_TRUE(gemm.batched_matmul(good)) << cuda::cuda_last_error();
  ASSERT_TRUE(cuda::synchronize()) << cuda::cuda_last_error();
}

// A planned layout is reused: again, with accumulate (beta is not part of a plan), and on other equally aligned
// buffers; a new layout makes one more plan.
TEST(CudaGemm, BatchedMatmulPlansAreReused) {
  BERT_REQUIRE_GPU();
  cuda::CudaGemm gemm;
  const int64_t M = 64, N = 64, K = 64;
  DeviceBuffer<float> da(test::random_floats(6 * M * K, 41)), db(test::random_floats(6 * K * N, 42));
  DeviceBuffer<float> dc(size_t(6 * M * N)), dc2(size_t(6 * M * N));
  BatchedMatmulArgs g = batched(2, 3, M, N, K, {3 * M * K, M * K, K, 1}, {0, K * N, N, 1}, {3 * M * N, M * N, N, 1});
  g.a = da.p, g.b = db.p, g.c = dc.p;
  ASSERT_TRUE(gemm.batched_matmul(g)) << cuda::cuda_last_error();
  EXPECT_EQ(gemm.plan_count(), 1u);
  g.accumulate = true;
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(gemm.batched_matmul(g)) << cuda::cuda_last_error();
  g.c = dc2.p;
  ASSERT_TRUE(gemm.batched_matmul(g)) << cuda::cuda_last_error();
  EXPECT_EQ(gemm.plan_count(), 1u);
  g.b_strides[2] = 1, g.b_strides[3] = K;  // B transposed: another plan
  ASSERT_TRUE(gemm.batched_matmul(g)) << cuda::cuda_last_error();
  EXPECT_EQ(gemm.plan_count(), 2u);
  ASSERT_TRUE(cuda::synchronize()) << cuda::cuda_last_error();
}

// allow_tf32: the same attention matmuls on TF32 tensor cores (10-bit mantissa inputs: ~1e-3 relative).
TEST(CudaGemm, BatchedMatmulTf32MatchesReferenceLoosely) {
  BERT_REQUIRE_GPU();
  cuda::CudaGemm gemm(/*allow_tf32=*/true);
  const int64_t B = 2, H = 3, S = 129, dh = 64, ld = 3 * H * dh;
  const Strides rows{S * ld, dh, ld, 1}, transposed{S * ld, dh, 1, ld}, probs{H * S * S, S * S, S, 1};
  expect_batched_matches(gemm, batched(B, H, S, S, dh, rows, transposed, probs), 77, 1e-2);
  expect_batched_matches(gemm, batched(B, H, S, dh, S, probs, rows, rows, true), 88, 1e-2);
}

}  // namespace
}  // namespace bert::kernels
