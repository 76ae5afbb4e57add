// The CUDA device's precision, int8 and padding-removal ops (kernels/cuda/precision.h) against the CPU
// references at awkward sizes, in fp32 and fp16 (built only with CUDA; every test skips with a message
// when no GPU is present).
// fp16 inputs are made with convert_f32_to_f16_ref and the reference runs on those same (rounded) values,
// so only the rounding of the fp16 output (at most 2^-11 relative per element, about 1.6e-4 relative L2
// for uniform errors) separates the two: 2e-3 relative L2 leaves a 10x margin. fp32: 1e-5.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <numeric>
#include <random>
#include <vector>

#include "kernels/activation.h"
#include "kernels/convert.h"
#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/precision.h"
#include "kernels/embed.h"
#include "kernels/layernorm.h"
#include "kernels/quantize.h"
#include "tests/cuda_test_util.h"
#include "tests/test_util.h"

namespace bert::kernels {
namespace {

using test::DeviceBuffer;

constexpr DType kBothTypes[] = {DType::kF32, DType::kF16};
constexpr int64_t kRows[] = {1, 3, 17};
constexpr int64_t kCols[] = {1, 31, 256, 257, 768, 1031};
constexpr Activation kActivations[] = {Activation::kIdentity, Activation::kGeluErf, Activation::kGeluTanh,
                                       Activation::kGeluQuick, Activation::kRelu,     Activation::kTanh};

double tolerance(DType e) { return e == DType::kF32 ? 1e-5 : 2e-3; }

std::vector<uint16_t> to_f16(const std::vector<float>& x) {
  std::vector<uint16_t> h(x.size());
  convert_f32_to_f16_ref(x.data(), h.data(), int64_t(x.size()));
  return h;
}

std::vector<float> from_f16(const std::vector<uint16_t>& h) {
  std::vector<float> x(h.size());
  convert_f16_to_f32_ref(h.data(), x.data(), int64_t(h.size()));
  return x;
}

// The values as stored on the device in `dtype` (fp16: rounded to nearest even).
std::vector<float> stored(const std::vector<float>& x, DType dtype) {
  return dtype == DType::kF32 ? x : from_f16(to_f16(x));
}

// A host float tensor stored on the device as `dtype`; host() reads it back as floats.
class DeviceTensor {
 public:
  DeviceTensor(const std::vector<float>& x, DType dtype) {
    if (dtype == DType::kF32)
      f32_ = std::make_unique<DeviceBuffer<float>>(x);
    else
      f16_ = std::make_unique<DeviceBuffer<uint16_t>>(to_f16(x));
  }
  void* p() const { return f32_ ? static_cast<void*>(f32_->p) : static_cast<void*>(f16_->p); }
  std::vector<float> host() const { return f32_ ? f32_->host() : from_f16(f16_->host()); }

 private:
  std::unique_ptr<DeviceBuffer<float>> f32_;
  std::unique_ptr<DeviceBuffer<uint16_t>> f16_;
};

uint32_t bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}

TEST(CudaPrecision, ConvertF32ToF16IsBitExact) {
  BERT_REQUIRE_GPU();
  const float inf = std::numeric_limits<float>::infinity();
  const std::vector<float> specials = {0.f, -0.f, inf, -inf, std::numeric_limits<float>::quiet_NaN(),
                                       -std::numeric_limits<float>::quiet_NaN(), 65504.f, 65519.f, 65520.f, 1e9f,
                                       6e-8f, 5.960464477539063e-8f, 2.98023223876953125e-8f, 1e-30f, -3.0517578e-5f,
                                       1.00048828125f /* exact half step between two fp16 values */};
  for (int64_t n : {1, 31, 257, 1031, 100003})
    for (int64_t offset : {0, 1}) {  // offset 1: misaligned, the scalar path
      SCOPED_TRACE(::testing::Message() << "n " << n << " offset " << offset);
      auto x = test::random_floats(size_t(n + offset), 31, -1.f, 1.f);
      for (size_t i = 0; i < x.size(); ++i) x[i] = std::ldexp(x[i], int(i % 48) - 30);  // 2^-30 .. 2^17
      for (size_t i = 0; i < specials.size() && i < x.size(); ++i) x[x.size() - 1 - i] = specials[i];
      std::vector<uint16_t> want(static_cast<size_t>(n));
      convert_f32_to_f16_ref(x.data() + offset, want.data(), n);
      DeviceBuffer<float> dx(x);
      DeviceBuffer<uint16_t> dy(size_t(n + offset));
      ASSERT_TRUE(cuda::convert(dx.p + offset, DType::kF32, dy.p + offset, DType::kF16, n)) << cuda::cuda_last_error();
      const auto got = dy.host();
      ASSERT_TRUE(std::equal(want.begin(), want.end(), got.begin() + offset));
    }
}

TEST(CudaPrecision, ConvertF16ToF32IsBitExactForEveryPattern) {
  BERT_REQUIRE_GPU();
  std::vector<uint16_t> all(65536 + 1);
  for (size_t i = 0; i < all.size(); ++i) all[i] = uint16_t(i);
  for (int64_t offset : {0, 1}) {
    const int64_t n = 65536;
    std::vector<float> want(static_cast<size_t>(n));
    convert_f16_to_f32_ref(all.data() + offset, want.data(), n);
    DeviceBuffer<uint16_t> dx(all);
    DeviceBuffer<float> dy(size_t(n + 1));
    ASSERT_TRUE(cuda::convert(dx.p + offset, DType::kF16, dy.p + offset, DType::kF32, n)) << cuda::cuda_last_error();
    const auto got = dy.host();
    for (int64_t i = 0; i < n; ++i)
      ASSERT_EQ(bits(got[size_t(i + offset)]), bits(want[size_t(i)])) << "fp16 bits " << all[size_t(i + offset)];
  }
}

TEST(CudaPrecision, ConvertSameTypeCopies) {
  BERT_REQUIRE_GPU();
  for (DType e : kBothTypes) {
    const auto x = stored(test::random_floats(1031, 32), e);
    DeviceTensor dx(x, e), dy(std::vector<float>(x.size(), 0.f), e);
    ASSERT_TRUE(cuda::convert(dx.p(), e, dy.p(), e, int64_t(x.size()))) << cuda::cuda_last_error();
    EXPECT_EQ(dy.host(), x);
  }
}

TEST(CudaPrecision, LayerNormMatchesReference) {
  BERT_REQUIRE_GPU();
  std::vector<int64_t> cols_list(std::begin(kCols), std::end(kCols));
  cols_list.push_back(9000);  // too wide for the shared-memory row cache: re-reads the row
  for (DType e : kBothTypes)
    for (int64_t rows : kRows)
      for (int64_t cols : cols_list) {
        SCOPED_TRACE(::testing::Message() << dtype_name(e) << " " << rows << "x" << cols);
        const auto x = stored(test::random_floats(size_t(rows * cols), 1, -3, 3), e);
        const auto r = stored(test::random_floats(size_t(rows * cols), 2), e);
        const auto g = stored(test::random_floats(size_t(cols), 3, 0.5f, 1.5f), e);
        const auto b = stored(test::random_floats(size_t(cols), 4), e);
        DeviceTensor dx(x, e), dr(r, e), dg(g, e), db(b, e), dy(std::vector<float>(x.size(), 0.f), e);

        // With a residual, into a separate output.
        std::vector<float> want(x.size());
        layernorm_f32_ref({x.data(), r.data(), g.data(), b.data(), want.data(), rows, cols, 1e-12f});
        cuda::LayerNormDev a;
        a.x = dx.p(), a.residual = dr.p(), a.gamma = dg.p(), a.beta = db.p(), a.y = dy.p();
        a.rows = rows, a.cols = cols, a.eps = 1e-12f, a.dtype = e;
        ASSERT_TRUE(cuda::layernorm(a)) << cuda::cuda_last_error();
        auto got = dy.host();
        EXPECT_LE(test::relative_l2(got.data(), want.data(), want.size()), tolerance(e));
        ASSERT_GT(test::max_abs(got.data(), got.size()), 0.0);

        // Without a residual, in place.
        layernorm_f32_ref({x.data(), nullptr, g.data(), b.data(), want.data(), rows, cols, 1e-5f});
        a.residual = nullptr, a.y = dx.p(), a.eps = 1e-5f;
        ASSERT_TRUE(cuda::layernorm(a)) << cuda::cuda_last_error();
        got = dx.host();
        EXPECT_LE(test::relative_l2(got.data(), want.data(), want.size()), tolerance(e)) << "in place";
      }
}

TEST(CudaPrecision, EmbeddingMatchesReference) {
  BERT_REQUIRE_GPU();
  const int64_t V = 50, P = 40, T = 2;
  std::vector<int64_t> widths(std::begin(kCols), std::end(kCols));
  widths.push_back(9000);
  for (DType e : kBothTypes)
    for (int64_t tokens : kRows)
      for (int64_t width : widths)
        for (int variant = 0; variant < 3; ++variant) {  // 0: everything; 1: no positions / types; 2: no LayerNorm
          SCOPED_TRACE(::testing::Message() << dtype_name(e) << " tokens " << tokens << " width " << width
                                            << " variant " << variant);
          const auto word = stored(test::random_floats(size_t(V * width), 7), e);
          const auto pos = stored(test::random_floats(size_t(P * width), 8), e);
          const auto type = stored(test::random_floats(size_t(T * width), 9), e);
          const auto g = stored(test::random_floats(size_t(width), 10, 0.5f, 1.5f), e);
          const auto b = stored(test::random_floats(size_t(width), 11), e);
          std::vector<int32_t> ids(static_cast<size_t>(tokens)), positions(ids), types(ids);
          for (int64_t t = 0; t < tokens; ++t)
            ids[t] = int32_t((t * 7 + 3) % V), positions[t] = int32_t(t + 1), types[t] = int32_t(t % 2);
          const bool with_pos_types = variant != 1, with_ln = variant != 2;

          std::vector<float> want(size_t(tokens * width));
          EmbedArgs ref{ids.data(),  with_pos_types ? positions.data() : nullptr,
                        with_pos_types ? types.data() : nullptr,
                        word.data(), pos.data(), type.data(), with_ln ? g.data() : nullptr, b.data(),
                        want.data(), tokens, width, 1e-12f};
          embed_f32_ref(ref);

          DeviceBuffer<int32_t> di(ids), dp(positions), dt(types);
          DeviceTensor dw(word, e), dpos(pos, e), dtype(type, e), dg(g, e), dbeta(b, e),
              dout(std::vector<float>(want.size(), 0.f), e);
          cuda::EmbedDev a;
          a.input_ids = di.p, a.positions = with_pos_types ? dp.p : nullptr;
          a.token_types = with_pos_types ? dt.p : nullptr;
          a.word_table = dw.p(), a.position_table = dpos.p(), a.type_table = dtype.p();
          a.gamma = with_ln ? dg.p() : nullptr, a.beta = dbeta.p(), a.out = dout.p();
          a.tokens = tokens, a.width = width, a.eps = 1e-12f, a.dtype = e;
          ASSERT_TRUE(cuda::embed(a)) << cuda::cuda_last_error();
          const auto got = dout.host();
          EXPECT_LE(test::relative_l2(got.data(), want.data(), want.size()), tolerance(e));
          ASSERT_GT(test::max_abs(got.data(), got.size()), 0.0);
        }
}

TEST(CudaPrecision, BiasActivationMatchesReference) {
  BERT_REQUIRE_GPU();
  for (DType e : kBothTypes)
    for (Activation act : kActivations)
      for (int64_t rows : kRows)
        for (int64_t cols : kCols)
          for (int64_t pad : {0, 8}) {
            SCOPED_TRACE(::testing::Message() << dtype_name(e) << " " << activation_name(act) << " " << rows << "x"
                                              << cols << " ld " << cols + pad);
            const int64_t ld = cols + pad;
            const bool with_bias = (cols + pad) % 3 != 0 || act != Activation::kTanh;
            const auto y = stored(test::random_floats(size_t(rows * ld), 12, -4, 4), e);
            const auto bias = stored(test::random_floats(size_t(cols), 13), e);
            std::vector<float> want = y;
            for (int64_t r = 0; r < rows; ++r) {
              float* row = want.data() + r * ld;
              if (with_bias)
                for (int64_t c = 0; c < cols; ++c) row[c] += bias[size_t(c)];
              activation_f32_ref({row, cols, act});
            }
            DeviceTensor dy(y, e), db(bias, e);
            ASSERT_TRUE(cuda::bias_activation(dy.p(), with_bias ? db.p() : nullptr, rows, cols, ld, act, e))
                << cuda::cuda_last_error();
            const auto got = dy.host();
            EXPECT_LE(test::relative_l2(got.data(), want.data(), want.size()), tolerance(e));
            ASSERT_GT(test::max_abs(got.data(), got.size()), 0.0);
            for (int64_t r = 0; r < rows; ++r)
              for (int64_t c = cols; c < ld; ++c)
                ASSERT_EQ(got[size_t(r * ld + c)], y[size_t(r * ld + c)]) << "padding column " << c << " changed";
          }
}

TEST(CudaPrecision, GatherScatterRoundTripWithPermutedIndex) {
  BERT_REQUIRE_GPU();
  for (DType e : kBothTypes)
    for (int64_t rows : kRows)
      for (int64_t width : kCols)
        for (int64_t pad : {0, 3}) {
          SCOPED_TRACE(::testing::Message() << dtype_name(e) << " rows " << rows << " width " << width << " pad " << pad);
          const int64_t total = rows + 5;  // padded rows: 5 are never named
          const int64_t src_ld = width + pad, dense_ld = width;
          std::vector<int32_t> perm(static_cast<size_t>(total));
          std::iota(perm.begin(), perm.end(), 0);
          std::shuffle(perm.begin(), perm.end(), std::mt19937(uint32_t(rows * 1000 + width)));
          const std::vector<int32_t> index(perm.begin(), perm.begin() + rows);
          const auto padded = stored(test::random_floats(size_t(total * src_ld), 14), e);

          // gather: dense[i] = padded[index[i]]
          DeviceTensor dsrc(padded, e), ddense(std::vector<float>(size_t(rows * dense_ld), 0.f), e);
          DeviceBuffer<int32_t> dindex(index);
          ASSERT_TRUE(cuda::gather_rows(dsrc.p(), src_ld, ddense.p(), dense_ld, dindex.p, rows, width, e))
              << cuda::cuda_last_error();
          const auto dense = ddense.host();
          for (int64_t i = 0; i < rows; ++i)
            for (int64_t c = 0; c < width; ++c)
              ASSERT_EQ(dense[size_t(i * dense_ld + c)], padded[size_t(index[size_t(i)] * src_ld + c)]) << i << "," << c;
          ASSERT_GT(test::max_abs(dense.data(), dense.size()), 0.0);

          // scatter back into a buffer of sentinels: named rows restored, the others (and the padding) left alone.
          const float sentinel = -1234.f;  // exact in fp16
          DeviceTensor dback(std::vector<float>(padded.size(), sentinel), e);
          ASSERT_TRUE(cuda::scatter_rows(ddense.p(), dense_ld, dback.p(), src_ld, dindex.p, rows, width, e))
              << cuda::cuda_last_error();
          const auto back = dback.host();
          std::vector<bool> named(size_t(total), false);
          for (int32_t i : index) named[size_t(i)] = true;
          for (int64_t r = 0; r < total; ++r)
            for (int64_t c = 0; c < src_ld; ++c) {
              const float want = (named[size_t(r)] && c < width) ? padded[size_t(r * src_ld + c)] : sentinel;
              ASSERT_EQ(back[size_t(r * src_ld + c)], want) << r << "," << c;
            }
        }
}

TEST(CudaPrecision, AbsmaxAccumulatesOverCalls) {
  BERT_REQUIRE_GPU();
  for (DType e : kBothTypes)
    for (int64_t rows : kRows)
      for (int64_t cols : kCols) {
        SCOPED_TRACE(::testing::Message() << dtype_name(e) << " " << rows << "x" << cols);
        const int64_t ld = cols + (cols % 2 ? 1 : 8);
        auto make_block = [&](uint32_t seed, float extreme) {
          auto x = test::random_floats(size_t(rows * ld), seed, -3, 3);
          for (int64_t r = 0; r < rows; ++r)
            for (int64_t c = cols; c < ld; ++c) x[size_t(r * ld + c)] = 1000.f;  // outside the block: ignored
          x[size_t((rows / 2) * ld + cols / 2)] = extreme;
          return stored(x, e);
        };
        const auto a = make_block(15, -5.5f), b = make_block(16, 2.f), c = make_block(17, 7.25f);
        DeviceTensor da(a, e), db(b, e), dc(c, e);
        DeviceBuffer<float> running(std::vector<float>{0.f});
        ASSERT_TRUE(cuda::absmax_update(da.p(), rows, cols, ld, e, running.p)) << cuda::cuda_last_error();
        EXPECT_EQ(running.host()[0], 5.5f);
        ASSERT_TRUE(cuda::absmax_update(db.p(), rows, cols, ld, e, running.p)) << cuda::cuda_last_error();
        float want_b = 5.5f;  // b's own maximum is at most 3 unless the block is tiny
        for (int64_t r = 0; r < rows; ++r)
          for (int64_t col = 0; col < cols; ++col) want_b = std::max(want_b, std::fabs(b[size_t(r * ld + col)]));
        EXPECT_EQ(running.host()[0], want_b);
        ASSERT_TRUE(cuda::absmax_update(dc.p(), rows, cols, ld, e, running.p)) << cuda::cuda_last_error();
        EXPECT_EQ(running.host()[0], 7.25f);
      }
}

TEST(CudaPrecision, QuantizeIsBitExactWithReference) {
  BERT_REQUIRE_GPU();
  for (DType e : kBothTypes)
    for (int64_t rows : kRows)
      for (int64_t cols : kCols)
        for (float scale : {0.0625f, 3.7f / 127.f, 0.f /* treated as 1 */}) {
          SCOPED_TRACE(::testing::Message() << dtype_name(e) << " " << rows << "x" << cols << " scale " << scale);
          const int64_t ldx = cols + (rows == 3 ? 3 : 0);
          auto x = test::random_floats(size_t(rows * ldx), 18, -4, 4);
          for (size_t i = 0; i < x.size(); i += 3) x[i] = (float(int(i % 97) - 48) + 0.5f) * 0.0625f;  // half steps
          if (scale == 0.f)
            for (float& v : x) v *= 100.f;  // beyond +-127 somewhere: clamped
          x = stored(x, e);
          std::vector<int8_t> want(size_t(rows * cols));
          quantize_i8_ref(x.data(), rows, cols, ldx, scale, want.data());
          DeviceTensor dx(x, e);
          DeviceBuffer<float> dscale(std::vector<float>{scale});
          DeviceBuffer<int8_t> dq(want.size());
          ASSERT_TRUE(cuda::quantize_i8(dx.p(), rows, cols, ldx, e, dscale.p, dq.p)) << cuda::cuda_last_error();
          const auto got = dq.host();
          ASSERT_EQ(got, want);
          ASSERT_TRUE(std::any_of(got.begin(), got.end(), [](int8_t v) { return v != 0; }));
        }
}

TEST(CudaPrecision, DequantizeMatchesReference) {
  BERT_REQUIRE_GPU();
  std::mt19937 rng(19);
  std::uniform_int_distribution<int32_t> dist(-30000, 30000);
  for (DType e : kBothTypes)
    for (Activation act : kActivations)
      for (int64_t rows : kRows)
        for (int64_t cols : kCols) {
          SCOPED_TRACE(::testing::Message() << dtype_name(e) << " " << activation_name(act) << " " << rows << "x"
                                            << cols);
          const int64_t ldy = cols + (rows == 17 ? 5 : 0);
          const bool with_bias = rows != 3;
          std::vector<int32_t> acc(size_t(rows * cols));
          for (auto& v : acc) v = dist(rng);
          const float x_scale = 0.002f;
          const auto w_scales = test::random_floats(size_t(cols), 20, 0.001f, 0.01f);
          const auto bias = test::random_floats(size_t(cols), 21);
          std::vector<float> want(size_t(rows * ldy), 0.f);
          dequantize_i32_ref(acc.data(), rows, cols, x_scale, w_scales.data(), with_bias ? bias.data() : nullptr, act,
                             want.data(), ldy);
          DeviceBuffer<int32_t> dacc(acc);
          DeviceBuffer<float> dxs(std::vector<float>{x_scale}), dws(w_scales), dbias(bias);
          DeviceTensor dy(std::vector<float>(want.size(), 0.f), e);
          ASSERT_TRUE(cuda::dequantize_i32(dacc.p, rows, cols, dxs.p, dws.p, with_bias ? dbias.p : nullptr, act,
                                           dy.p(), ldy, e))
              << cuda::cuda_last_error();
          const auto got = dy.host();
          EXPECT_LE(test::relative_l2(got.data(), want.data(), want.size()), tolerance(e));
          ASSERT_GT(test::max_abs(got.data(), got.size()), 0.0);
          if (e == DType::kF32 && act == Activation::kIdentity) {  // no transcendental: the same roundings as the ref
            EXPECT_EQ(got, want);
          }
        }
}

TEST(CudaPrecision, BadArgumentsAreRejected) {
  BERT_REQUIRE_GPU();
  DeviceBuffer<float> buf(64);
  DeviceBuffer<int32_t> index(std::vector<int32_t>{0});
  EXPECT_FALSE(cuda::convert(buf.p, DType::kF32, nullptr, DType::kF16, 4));
  EXPECT_FALSE(cuda::convert(buf.p, DType::kF32, buf.p, DType::kF16, -1));
  EXPECT_FALSE(cuda::bias_activation(buf.p, nullptr, 2, 8, 4, Activation::kRelu, DType::kF32));  // ld < cols
  EXPECT_FALSE(cuda::gather_rows(buf.p, 4, buf.p, 8, nullptr, 1, 4, DType::kF32));
  EXPECT_FALSE(cuda::quantize_i8(buf.p, 1, 4, 4, DType::kF32, nullptr, nullptr));
  cuda::LayerNormDev ln;
  ln.x = buf.p, ln.y = buf.p, ln.rows = 1, ln.cols = 4;  // no gamma / beta
  EXPECT_FALSE(cuda::layernorm(ln));
  EXPECT_FALSE(cuda::cuda_last_error().empty());
  // Empty shapes are no-ops.
  EXPECT_TRUE(cuda::absmax_update(nullptr, 0, 5, 5, DType::kF16, nullptr));
  EXPECT_TRUE(cuda::dequantize_i32(nullptr, 3, 0, nullptr, nullptr, nullptr, Activation::kGeluErf, nullptr, 0,
                                   DType::kF32));
}

}  // namespace
}  // namespace bert::kernels
