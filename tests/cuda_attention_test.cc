// The fused attention kernel (kernels/cuda/attention.h) against the CPU engine's attention composed from the
// references exactly as engine/src/session.cc runs it (batched_matmul Q K^T, softmax_masked, batched_matmul P V),
// in fp32 and fp16, padded (with key masks) and packed layouts, fused and separate Q / K / V buffers. Built only
// with CUDA; the GPU tests skip with a message without a GPU, the argument checks run everywhere (they fail before
// any CUDA call).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "kernels/convert.h"
#include "kernels/cuda/attention.h"
#include "kernels/cuda/cuda_kernels.h"
#include "kernels/gemm.h"
#include "kernels/softmax_masked.h"
#include "tests/cuda_test_util.h"
#include "tests/test_util.h"

namespace bert::kernels {
namespace {

using cuda::AttentionArgs;
using test::DeviceBuffer;

// fp32: fp32 FMAs and expf against a double-accumulated reference, ~1e-7 expected.
constexpr double kF32Tolerance = 1e-5;
// fp16: inputs rounded to fp16 (2^-11), P rounded to fp16, output rounded to fp16, against the fp32 reference
// on the unrounded inputs: ~1e-3 expected.
constexpr double kF16Tolerance = 5e-3;
constexpr float kSentinel = 7.f;  // fills the output first; row padding must keep it

float scale_of(int64_t head_dim) { return static_cast<float>(1.0 / std::sqrt(static_cast<double>(head_dim))); }

// The CPU engine's attention (engine/src/session.cc, same strides) for B sequences of S token rows, the rows
// holding Q | K | V at columns 0, H, 2H with row stride ld: the context [B*S, H].
std::vector<float> reference_attention(const float* qkv, int64_t ld, int64_t B, int64_t S, int64_t nh, int64_t dh,
                                       const int32_t* key_mask) {
  const int64_t H = nh * dh;
  std::vector<float> scores(B * nh * S * S), ctx(B * S * H);
  BatchedMatmulArgs qk;
  qk.a = qkv, qk.b = qkv + H, qk.c = scores.data();
  qk.batch0 = B, qk.batch1 = nh, qk.M = S, qk.N = S, qk.K = dh;
  const int64_t qs[4] = {S * ld, dh, ld, 1}, ks[4] = {S * ld, dh, 1, ld}, ss[4] = {nh * S * S, S * S, S, 1};
  std::memcpy(qk.a_strides, qs, sizeof qs), std::memcpy(qk.b_strides, ks, sizeof ks),
      std::memcpy(qk.c_strides, ss, sizeof ss);
  batched_matmul_f32_ref(qk);
  SoftmaxMaskedArgs sm;
  sm.scores = scores.data(), sm.key_mask = key_mask, sm.batch = B, sm.heads = nh, sm.q_len = S, sm.k_len = S;
  sm.scale = scale_of(dh);
  softmax_masked_f32_ref(sm);
  BatchedMatmulArgs pv;
  pv.a = scores.data(), pv.b = qkv + 2 * H, pv.c = ctx.data();
  pv.batch0 = B, pv.batch1 = nh, pv.M = S, pv.N = dh, pv.K = S;
  const int64_t vs[4] = {S * ld, dh, ld, 1}, cs[4] = {S * H, dh, H, 1};
  std::memcpy(pv.a_strides, ss, sizeof ss), std::memcpy(pv.b_strides, vs, sizeof vs),
      std::memcpy(pv.c_strides, cs, sizeof cs);
  batched_matmul_f32_ref(pv);
  return ctx;
}

// Host floats as the bytes of a device tensor of `dtype` (fp16 through the reference conversion), and back.
std::vector<uint8_t> encode(const std::vector<float>& v, DType dtype) {
  std::vector<uint8_t> bytes(v.size() * int64_t(dtype_size(dtype)));
  if (dtype == DType::kF32) {
    std::memcpy(bytes.data(), v.data(), bytes.size());
  } else {
    std::vector<uint16_t> h(v.size());
    convert_f32_to_f16_ref(v.data(), h.data(), static_cast<int64_t>(v.size()));
    std::memcpy(bytes.data(), h.data(), bytes.size());
  }
  return bytes;
}

std::vector<float> decode(const std::vector<uint8_t>& bytes, DType dtype) {
  std::vector<float> v(bytes.size() / int64_t(dtype_size(dtype)));
  if (dtype == DType::kF32) {
    std::memcpy(v.data(), bytes.data(), bytes.size());
  } else {
    std::vector<uint16_t> h(v.size());
    std::memcpy(h.data(), bytes.data(), bytes.size());
    convert_f16_to_f32_ref(h.data(), v.data(), static_cast<int64_t>(v.size()));
  }
  return v;
}

// Columns [begin, end) of every row of a [rows, ld] matrix, densely.
std::vector<float> columns(const std::vector<float>& m, int64_t rows, int64_t ld, int64_t begin, int64_t end) {
  std::vector<float> out;
  out.reserve(rows * (end - begin));
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = begin; c < end; ++c) out.push_back(m[r * ld + c]);
  return out;
}

// Runs cuda::attention on `qkv` ([tokens, 3H] rows holding Q | K | V) in `dtype`: with `fused` Q, K and V are
// read in place from the one buffer (ld_qkv = 3H), otherwise from three dense [tokens, H] buffers. The output
// rows have stride H + out_pad and start filled with kSentinel. `shape` gives the sequences (batch, seq,
// seq_starts / key_mask as device pointers), heads and head_dim. Returns the [tokens, H] context as floats, and
// checks that the row padding kept the sentinel and that nothing is NaN.
std::vector<float> run_attention(const std::vector<float>& qkv, int64_t tokens, DType dtype, bool fused, int64_t out_pad,
                                 AttentionArgs shape) {
  const int64_t H = shape.heads * shape.head_dim, ld_out = H + out_pad, esize = int64_t(dtype_size(dtype));
  std::vector<float> q_plane = columns(qkv, tokens, 3 * H, 0, H), k_plane = columns(qkv, tokens, 3 * H, H, 2 * H),
                     v_plane = columns(qkv, tokens, 3 * H, 2 * H, 3 * H);
  DeviceBuffer<uint8_t> d_qkv(encode(fused ? qkv : std::vector<float>{}, dtype));
  DeviceBuffer<uint8_t> d_q(encode(fused ? std::vector<float>{} : q_plane, dtype));
  DeviceBuffer<uint8_t> d_k(encode(fused ? std::vector<float>{} : k_plane, dtype));
  DeviceBuffer<uint8_t> d_v(encode(fused ? std::vector<float>{} : v_plane, dtype));
  DeviceBuffer<uint8_t> d_out(encode(std::vector<float>(tokens * ld_out, kSentinel), dtype));
  AttentionArgs a = shape;
  if (fused) {
    a.q = d_qkv.p, a.k = d_qkv.p + H * esize, a.v = d_qkv.p + 2 * H * esize, a.ld_qkv = 3 * H;
  } else {
    a.q = d_q.p, a.k = d_k.p, a.v = d_v.p, a.ld_qkv = H;
  }
  a.out = d_out.p, a.ld_out = ld_out, a.scale = scale_of(a.head_dim), a.dtype = dtype;
  EXPECT_TRUE(cuda::attention(a)) << cuda::cuda_last_error();
  EXPECT_TRUE(cuda::synchronize()) << cuda::cuda_last_error();
  const std::vector<float> out = decode(d_out.host(), dtype);
  int64_t nans = 0, padding_changed = 0;
  for (int64_t t = 0; t < tokens; ++t)
    for (int64_t c = 0; c < ld_out; ++c) {
      const float x = out[t * ld_out + c];
      nans += std::isnan(x) ? 1 : 0;
      padding_changed += c >= H && x != kSentinel ? 1 : 0;
    }
  EXPECT_EQ(nans, 0) << "NaN in the output";
  EXPECT_EQ(padding_changed, 0) << "attention wrote into the output row padding";
  return columns(out, tokens, ld_out, 0, H);
}

// Three padded sequences: sequence 0 attends to every key, sequence 1 to the first half (at least one key),
// sequence 2 to none (every query row becomes the uniform average of V).
void check_padded_layout(DType dtype) {
  const double tolerance = dtype == DType::kF32 ? kF32Tolerance : kF16Tolerance;
  const int64_t B = 3;
  int case_index = 0;
  for (int64_t dh : {16, 20, 24, 32, 50, 64, 128})
    for (int64_t S : {1, 7, 64, 65, 130, 384}) {
      const int64_t nh = 2 + case_index++ % 3, H = nh * dh, tokens = B * S;
      SCOPED_TRACE(::testing::Message() << dtype_name(dtype) << " head_dim " << dh << " seq " << S << " heads "
                                        << nh);
      const std::vector<float> qkv = test::random_floats(tokens * 3 * H, static_cast<uint32_t>(100 + case_index), -2, 2);
      std::vector<int32_t> mask(B * S, 0);
      for (int64_t k = 0; k < S; ++k) mask[k] = 1, mask[S + k] = k < (S + 1) / 2 ? 1 : 0;
      const std::vector<float> want = reference_attention(qkv.data(), 3 * H, B, S, nh, dh, mask.data());
      DeviceBuffer<int32_t> d_mask(mask);
      AttentionArgs shape;
      shape.key_mask = d_mask.p, shape.batch = B, shape.seq = S, shape.heads = nh, shape.head_dim = dh;
      for (bool fused : {true, false}) {
        SCOPED_TRACE(fused ? "fused QKV buffer, dense output" : "separate Q, K, V buffers, output rows padded by 3");
        const std::vector<float> got = run_attention(qkv, tokens, dtype, fused, fused ? 0 : 3, shape);
        EXPECT_LE(test::relative_l2(got.data(), want.data(), want.size()), tolerance);
        ASSERT_GT(test::max_abs(got.data(), got.size()), 0.0);
      }
    }
}

// Packed sequences of lengths {5, 0, 77, 128}: each one's rows against the reference run on it alone (no mask).
void check_packed_layout(DType dtype) {
  const double tolerance = dtype == DType::kF32 ? kF32Tolerance : kF16Tolerance;
  const std::vector<int32_t> lengths = {5, 0, 77, 128};
  std::vector<int32_t> starts = {0};
  for (int32_t len : lengths) starts.push_back(starts.back() + len);
  const int64_t tokens = starts.back(), longest = 128, nh = 3;
  for (int64_t dh : {16, 24, 64, 128}) {
    SCOPED_TRACE(::testing::Message() << dtype_name(dtype) << " head_dim " << dh);
    const int64_t H = nh * dh;
    const std::vector<float> qkv = test::random_floats(tokens * 3 * H, static_cast<uint32_t>(200 + dh), -2, 2);
    DeviceBuffer<int32_t> d_starts(starts);
    AttentionArgs shape;
    shape.seq_starts = d_starts.p, shape.batch = static_cast<int64_t>(lengths.size()), shape.seq = longest;
    shape.heads = nh, shape.head_dim = dh;
    const std::vector<float> got = run_attention(qkv, tokens, dtype, true, 0, shape);
    ASSERT_GT(test::max_abs(got.data(), got.size()), 0.0);
    for (size_t b = 0; b < lengths.size(); ++b) {
      if (lengths[b] == 0) continue;
      SCOPED_TRACE(::testing::Message() << "sequence " << b << " of length " << lengths[b]);
      const std::vector<float> want =
          reference_attention(qkv.data() + starts[b] * 3 * H, 3 * H, 1, lengths[b], nh, dh, nullptr);
      EXPECT_LE(test::relative_l2(got.data() + starts[b] * H, want.data(), want.size()), tolerance);
    }
  }
}

TEST(CudaAttention, PaddedLayoutFp32MatchesReference) {
  BERT_REQUIRE_GPU();
  check_padded_layout(DType::kF32);
}

TEST(CudaAttention, PaddedLayoutFp16MatchesReference) {
  BERT_REQUIRE_GPU();
  check_padded_layout(DType::kF16);
}

TEST(CudaAttention, PackedLayoutFp32MatchesPerSequenceReference) {
  BERT_REQUIRE_GPU();
  check_packed_layout(DType::kF32);
}

TEST(CudaAttention, PackedLayoutFp16MatchesPerSequenceReference) {
  BERT_REQUIRE_GPU();
  check_packed_layout(DType::kF16);
}

// No GPU needed: the launcher validates its arguments before any CUDA call.
TEST(CudaAttention, BadArgumentsAreRejectedWithAMessage) {
  float dummy[4] = {};
  AttentionArgs good;
  good.q = good.k = good.v = dummy, good.out = dummy;
  good.ld_qkv = 96, good.ld_out = 32, good.batch = 2, good.seq = 8, good.heads = 2, good.head_dim = 16;
  struct Case {
    const char* name;
    AttentionArgs args;
    const char* message;  // a part of cuda_last_error()
  };
  std::vector<Case> cases;
  auto add = [&](const char* name, const char* message, auto change) {
    AttentionArgs a = good;
    change(a);
    cases.push_back({name, a, message});
  };
  add("head_dim 0", "head_dim", [](AttentionArgs& a) { a.head_dim = 0; });
  add("head_dim 129", "head_dim", [](AttentionArgs& a) { a.head_dim = 129, a.ld_qkv = 3 * 2 * 129, a.ld_out = 2 * 129; });
  add("null q", "non-null", [](AttentionArgs& a) { a.q = nullptr; });
  add("null out", "non-null", [](AttentionArgs& a) { a.out = nullptr; });
  add("heads 0", "heads", [](AttentionArgs& a) { a.heads = 0; });
  add("negative seq", "seq", [](AttentionArgs& a) { a.seq = -1; });
  add("ld_qkv too small", "ld_qkv", [](AttentionArgs& a) { a.ld_qkv = 31; });
  add("ld_out too small", "ld_out", [](AttentionArgs& a) { a.ld_out = 31; });
  add("key_mask in the packed layout", "key_mask", [&](AttentionArgs& a) {
    a.seq_starts = reinterpret_cast<const int32_t*>(dummy), a.key_mask = reinterpret_cast<const int32_t*>(dummy);
  });
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    EXPECT_FALSE(cuda::attention(c.args));
    const std::string error = cuda::cuda_last_error();
    EXPECT_NE(error.find("attention"), std::string::npos) << error;
    EXPECT_NE(error.find(c.message), std::string::npos) << error;
  }
}

// No GPU needed either: nothing to compute means no launch.
TEST(CudaAttention, EmptyBatchOrSequenceIsANoOp) {
  float dummy[4] = {};
  AttentionArgs a;
  a.q = a.k = a.v = dummy, a.out = dummy;
  a.ld_qkv = 96, a.ld_out = 32, a.heads = 2, a.head_dim = 16;
  a.batch = 0, a.seq = 8;
  EXPECT_TRUE(cuda::attention(a)) << cuda::cuda_last_error();
  a.batch = 2, a.seq = 0;
  EXPECT_TRUE(cuda::attention(a)) << cuda::cuda_last_error();
}

}  // namespace
}  // namespace bert::kernels
