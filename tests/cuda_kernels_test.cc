// The CUDA forward kernels against the CPU references at awkward sizes (built only with CUDA; every
// test skips with a message when no GPU is present, which is every machine these were written on).
#include <gtest/gtest.h>

#include <tuple>
#include <vector>

#include "kernels/cuda/cuda_kernels.h"
#include "tests/test_util.h"

namespace bert::kernels {
namespace {

#define BERT_REQUIRE_GPU()                                                                 \
  if (cuda::device_count() == 0) GTEST_SKIP() << "no CUDA device: the CUDA kernels were not run"

// A device copy of a host vector, freed at scope exit.
template <typename T>
struct DeviceBuffer {
  T* p = nullptr;
  size_t n = 0;
  explicit DeviceBuffer(const std::vector<T>& host) : n(host.size()) {
    p = static_cast<T*>(cuda::device_alloc(n * sizeof(T)));
    EXPECT_NE(p, nullptr) << cuda::cuda_last_error();
    EXPECT_TRUE(cuda::copy_to_device(p, host.data(), n * sizeof(T)));
  }
  ~DeviceBuffer() { cuda::device_free(p); }
  std::vector<T> host() const {
    std::vector<T> h(n);
    EXPECT_TRUE(cuda::copy_to_host(h.data(), p, n * sizeof(T))) << cuda::cuda_last_error();
    return h;
  }
};

TEST(CudaKernels, DeviceIsReported) {
  BERT_REQUIRE_GPU();
  EXPECT_FALSE(cuda::device_name().empty());
  std::printf("[ device   ] %s\n", cuda::device_name().c_str());
}

TEST(CudaKernels, LayerNormMatchesReference) {
  BERT_REQUIRE_GPU();
  for (int64_t rows : {1, 3, 17})
    for (int64_t cols : {1, 31, 256, 257, 768, 1031}) {
      SCOPED_TRACE(::testing::Message() << rows << "x" << cols);
      auto x = test::random_floats(rows * cols, 1, -3, 3), r = test::random_floats(rows * cols, 2);
      auto g = test::random_floats(cols, 3, 0.5f, 1.5f), b = test::random_floats(cols, 4);
      std::vector<float> want(rows * cols);
      layernorm_f32_ref({x.data(), r.data(), g.data(), b.data(), want.data(), rows, cols, 1e-12f});
      DeviceBuffer<float> dx(x), dr(r), dg(g), db(b), dy(std::vector<float>(rows * cols, 0.f));
      ASSERT_TRUE(cuda::layernorm_f32({dx.p, dr.p, dg.p, db.p, dy.p, rows, cols, 1e-12f})) << cuda::cuda_last_error();
      auto got = dy.host();
      EXPECT_LE(test::relative_l2(got.data(), want.data(), want.size()), 1e-5);
      ASSERT_GT(test::max_abs(got.data(), got.size()), 0.0);
    }
}

TEST(CudaKernels, MaskedSoftmaxMatchesReference) {
  BERT_REQUIRE_GPU();
  for (int64_t k_len : {1, 7, 33, 128, 385}) {
    SCOPED_TRACE(k_len);
    const int64_t B = 3, heads = 2, q_len = 5;
    auto s = test::random_floats(B * heads * q_len * k_len, 5, -4, 4);
    std::vector<int32_t> mask(B * k_len, 1);
    for (int64_t k = k_len / 2; k < k_len; ++k) mask[1 * k_len + k] = 0;  // half masked
    for (int64_t k = 0; k < k_len; ++k) mask[2 * k_len + k] = 0;          // all masked
    auto want = s;
    softmax_masked_f32_ref({want.data(), mask.data(), B, heads, q_len, k_len, 0.125f});
    DeviceBuffer<float> ds(s);
    DeviceBuffer<int32_t> dm(mask);
    ASSERT_TRUE(cuda::softmax_masked_f32({ds.p, dm.p, B, heads, q_len, k_len, 0.125f})) << cuda::cuda_last_error();
    auto got = ds.host();
    EXPECT_LE(test::max_abs_diff(got.data(), want.data(), want.size()), 1e-6);
  }
}

TEST(CudaKernels, ActivationsMatchReference) {
  BERT_REQUIRE_GPU();
  for (Activation kind : {Activation::kGeluErf, Activation::kGeluTanh, Activation::kGeluQuick, Activation::kRelu,
                          Activation::kTanh})
    for (int64_t n : {1, 255, 1000, 100003}) {
      auto x = test::random_floats(n, 6, -8, 8), want = x;
      activation_f32_ref({want.data(), n, kind});
      DeviceBuffer<float> dx(x);
      ASSERT_TRUE(cuda::activation_f32({dx.p, n, kind})) << cuda::cuda_last_error();
      auto got = dx.host();
      EXPECT_LE(test::relative_l2(got.data(), want.data(), want.size()), 1e-6) << activation_name(kind);
    }
}

TEST(CudaKernels, EmbeddingMatchesReference) {
  BERT_REQUIRE_GPU();
  const int64_t V = 50, P = 40, T = 2, tokens = 37;
  for (int64_t width : {32, 100, 768}) {
    auto word = test::random_floats(V * width, 7), pos = test::random_floats(P * width, 8);
    auto type = test::random_floats(T * width, 9), g = test::random_floats(width, 10, 0.5f, 1.5f);
    auto b = test::random_floats(width, 11);
    std::vector<int32_t> ids(tokens), positions(tokens), types(tokens);
    for (int64_t t = 0; t < tokens; ++t) ids[t] = int32_t((t * 7) % V), positions[t] = int32_t(t), types[t] = int32_t(t % 2);
    std::vector<float> want(tokens * width);
    EmbedArgs e{ids.data(), positions.data(), types.data(), word.data(), pos.data(), type.data(), g.data(), b.data(),
                want.data(), tokens, width, 1e-12f};
    embed_f32_ref(e);
    DeviceBuffer<int32_t> di(ids), dp(positions), dt(types);
    DeviceBuffer<float> dw(word), dpos(pos), dtype(type), dg(g), dbeta(b), dout(std::vector<float>(tokens * width));
    EmbedArgs d{di.p, dp.p, dt.p, dw.p, dpos.p, dtype.p, dg.p, dbeta.p, dout.p, tokens, width, 1e-12f};
    ASSERT_TRUE(cuda::embed_f32(d)) << cuda::cuda_last_error();
    auto got = dout.host();
    EXPECT_LE(test::relative_l2(got.data(), want.data(), want.size()), 1e-5) << width;
    ASSERT_GT(test::max_abs(got.data(), got.size()), 0.0);
  }
}

// cuBLASLt linear layers against the scalar reference: awkward sizes, strides, bias and activations.
TEST(CudaKernels, CublasLtLinearMatchesReference) {
  BERT_REQUIRE_GPU();
  cuda::CudaGemm gemm;
  for (auto [M, N, K] : {std::tuple<int64_t, int64_t, int64_t>{1, 1, 1}, {17, 33, 65}, {128, 768, 768}, {5, 3072, 768}})
    for (Activation act : {Activation::kIdentity, Activation::kGeluErf, Activation::kGeluTanh, Activation::kTanh})
      for (bool bias : {true, false}) {
        SCOPED_TRACE(::testing::Message() << M << "x" << N << "x" << K << " act " << int(act) << " bias " << bias);
        auto x = test::random_floats(M * K, 1), w = test::random_floats(N * K, 2, -0.1f, 0.1f);
        auto b = test::random_floats(N, 3);
        std::vector<float> want(M * N);
        LinearArgs r;
        r.x = x.data(), r.w = w.data(), r.bias = bias ? b.data() : nullptr, r.y = want.data(), r.M = M, r.N = N, r.K = K;
        r.act = act;
        linear_f32_ref(r);
        DeviceBuffer<float> dx(x), dw(w), db(b), dy(std::vector<float>(M * N));
        LinearArgs d = r;
        d.x = dx.p, d.w = dw.p, d.bias = bias ? db.p : nullptr, d.y = dy.p;
        ASSERT_TRUE(gemm.linear(d)) << cuda::cuda_last_error();
        auto got = dy.host();
        EXPECT_LE(test::relative_l2(got.data(), want.data(), want.size()), 1e-5);
        ASSERT_GT(test::max_abs(got.data(), got.size()), 0.0);
      }
  const size_t plans = gemm.plan_count();
  EXPECT_GT(plans, 0u);
}

}  // namespace
}  // namespace bert::kernels
