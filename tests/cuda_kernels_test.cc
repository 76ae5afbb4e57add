// The CUDA forward kernels against the CPU references at awkward sizes (built only with CUDA; every
// test skips with a message when no GPU is present, which is every machine these were written on).
#include <gtest/gtest.h>

#include <tuple>
#include <vector>

#include "kernels/cuda/cuda_kernels.h"
#include "tests/cuda_test_util.h"
#include "tests/test_util.h"

namespace bert::kernels {
namespace {

using test::DeviceBuffer;

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

}  // namespace
}  // namespace bert::kernels
