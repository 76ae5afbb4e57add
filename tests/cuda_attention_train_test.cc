// The fused training attention (kernels/cuda/attention_train.h), forward and backward, against the CPU trainer's
// attention composed from the references exactly as engine/src/trainer.cc runs it: P = softmax_masked(scale Q K^T),
// P_used = dropout(P) (DropoutArgs{seed, offset} over the flat [B, nh, S, S] tensor), ctx = P_used V; backward
// dP = dctx V^T, dV = P_used^T dctx, dP = dropout(dP) (same mask), dS = softmax_backward(P, dP, scale),
// dQ = dS K, dK = dS^T Q. The log-sum-exp is checked against one computed in double on the host. Built only with
// CUDA; every test skips with a message without a GPU.
#include <gtest/gtest.h>

#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "kernels/cuda/attention_train.h"
#include "kernels/cuda/cuda_kernels.h"
#include "kernels/gemm.h"
#include "kernels/softmax_masked.h"
#include "kernels/train.h"
#include "tests/cuda_test_util.h"
#include "tests/test_util.h"

namespace bert::kernels {
namespace {

using cuda::AttentionGradArgs;
using cuda::AttentionTrainArgs;
using test::DeviceBuffer;

// fp32 FMAs and expf against double-accumulated references: ~1e-7 .. 1e-6 expected.
constexpr double kTolerance = 1e-5;
constexpr float kSentinel = 7.f;          // fills outputs first: row padding must keep it
constexpr float kMaskedScore = -1e30f;    // a masked key's scaled score (kernels/cuda/attention_train.h)
constexpr uint64_t kDropoutSeed = 0x5EEDC0FFEE12345ull;
constexpr uint64_t kDropoutOffset = uint64_t{17} << 40;  // the trainer's DropoutArgs offset: site << 40

float scale_of(int64_t head_dim) { return static_cast<float>(1.0 / std::sqrt(static_cast<double>(head_dim))); }

enum class MaskKind {
  kNone,            // key_mask = nullptr
  kPartialAndNone,  // sequence 0: a scattered mask whose first 64-key tile is all masked for seq >= 130;
                    // sequence 1: every key masked (uniform probabilities)
};

std::vector<int32_t> make_mask(int64_t S) {
  std::vector<int32_t> mask(2 * S, 0);
  for (int64_t k = 0; k < S; ++k) mask[k] = (k >= S / 2 && k % 3 != 1) || k == S - 1 ? 1 : 0;
  return mask;  // sequence 1 stays all zero
}

// What the CPU trainer computes for one attention call on B sequences of S token rows, nh heads of dh columns.
// q, k, v: row stride ld; d_ctx, ctx, dq, dk, dv: dense [B*S, nh*dh].
struct Reference {
  std::vector<float> ctx, lse, dq, dk, dv;
};

Reference reference(const float* q, const float* k, const float* v, int64_t ld, const float* d_ctx, int64_t B,
                    int64_t S, int64_t nh, int64_t dh, const int32_t* mask, float p_drop) {
  const int64_t H = nh * dh, n = B * nh * S * S;
  const float scale = scale_of(dh);
  const std::array<int64_t, 4> probs_st = {nh * S * S, S * S, S, 1}, probs_t = {nh * S * S, S * S, 1, S};
  const std::array<int64_t, 4> ctx_st = {S * H, dh, H, 1};
  const std::array<int64_t, 4> qs = {S * ld, dh, ld, 1}, kt = {S * ld, dh, 1, ld};
  auto matmul = [&](const float* a, const float* b, float* c, int64_t M, int64_t N, int64_t K,
                    std::array<int64_t, 4> as, std::array<int64_t, 4> bs, std::array<int64_t, 4> cs) {
    BatchedMatmulArgs m;
    m.a = a, m.b = b, m.c = c, m.batch0 = B, m.batch1 = nh, m.M = M, m.N = N, m.K = K;
    std::memcpy(m.a_strides, as.data(), sizeof m.a_strides), std::memcpy(m.b_strides, bs.data(), sizeof m.b_strides);
    std::memcpy(m.c_strides, cs.data(), sizeof m.c_strides);
    batched_matmul_f32_ref(m);
  };
  auto dropout = [&](std::vector<float>& x) {
    if (p_drop > 0) dropout_f32_ref({x.data(), n, p_drop, kDropoutSeed, kDropoutOffset});
  };

  Reference r;
  r.ctx.assign(B * S * H, 0.f), r.dq.assign(B * S * H, 0.f), r.dk.assign(B * S * H, 0.f), r.dv.assign(B * S * H, 0.f);
  std::vector<float> probs(n), d_probs(n);
  matmul(q, k, probs.data(), S, S, dh, qs, kt, probs_st);

  // lse of every query row in double: the scaled scores, a masked key's replaced by -1e30.
  r.lse.resize(B * nh * S);
  for (int64_t row = 0; row < B * nh * S; ++row) {
    const int64_t b = row / (nh * S);
    const float* s = probs.data() + row * S;
    auto score = [&](int64_t key) {
      return mask && mask[b * S + key] == 0 ? static_cast<double>(kMaskedScore) : static_cast<double>(s[key] * scale);
    };
    double mx = -std::numeric_limits<double>::infinity(), sum = 0.0;
    for (int64_t key = 0; key < S; ++key) mx = std::fmax(mx, score(key));
    for (int64_t key = 0; key < S; ++key) sum += std::exp(score(key) - mx);
    r.lse[row] = static_cast<float>(mx + std::log(sum));
  }

  SoftmaxMaskedArgs sm;
  sm.scores = probs.data(), sm.key_mask = mask, sm.batch = B, sm.heads = nh, sm.q_len = S, sm.k_len = S;
  sm.scale = scale;
  softmax_masked_f32_ref(sm);
  std::vector<float> p_used = probs;
  dropout(p_used);
  matmul(p_used.data(), v, r.ctx.data(), S, dh, S, probs_st, qs, ctx_st);

  matmul(d_ctx, v, d_probs.data(), S, S, dh, ctx_st, kt, probs_st);       // dP = dctx V^T
  matmul(p_used.data(), d_ctx, r.dv.data(), S, dh, S, probs_t, ctx_st, ctx_st);  // dV = P_used^T dctx
  dropout(d_probs);
  softmax_backward_f32_ref({probs.data(), d_probs.data(), B, nh, S, S, scale});
  matmul(d_probs.data(), k, r.dq.data(), S, dh, S, probs_st, qs, ctx_st);  // dQ = dS K
  matmul(d_probs.data(), q, r.dk.data(), S, dh, S, probs_t, qs, ctx_st);   // dK = dS^T Q
  return r;
}

// Columns [begin, begin + width) of every row of a [rows, ld] matrix, densely.
std::vector<float> columns(const std::vector<float>& m, int64_t rows, int64_t ld, int64_t begin, int64_t width) {
  std::vector<float> out;
  out.reserve(rows * width);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = begin; c < begin + width; ++c) out.push_back(m[r * ld + c]);
  return out;
}

// Counts NaNs in columns [0, width) and changed sentinels in columns [width, ld) of a [rows, ld] matrix.
void expect_clean(const std::vector<float>& m, int64_t rows, int64_t ld, int64_t width, const char* what) {
  int64_t nans = 0, padding_changed = 0;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < ld; ++c) {
      const float x = m[r * ld + c];
      nans += c < width && std::isnan(x) ? 1 : 0;
      padding_changed += c >= width && x != kSentinel ? 1 : 0;
    }
  EXPECT_EQ(nans, 0) << "NaN in " << what;
  EXPECT_EQ(padding_changed, 0) << what << ": the row padding was written";
}

void expect_close(const std::vector<float>& got, const std::vector<float>& want, const char* what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  ASSERT_GT(test::max_abs(want.data(), want.size()), 0.0) << what << ": the reference is all zero";
  EXPECT_LE(test::relative_l2(got.data(), want.data(), want.size()), kTolerance) << what;
}

// One forward + backward on B = 2 sequences of S rows, 3 heads of dh columns, against the reference.
// `fused`: Q | K | V in one [tokens, 3H] buffer and dQ | dK | dV likewise (the trainer's fused QKV layout, dense
// out); otherwise three separate buffers with row stride H + 1 (odd: the unvectorised loads) and out / dQ / dK /
// dV rows padded by 3 (checked untouched). `repeat_backward`: also checks that a second backward gives the same
// bits.
void check_case(int64_t S, int64_t dh, MaskKind mask_kind, float p_drop, bool fused, bool repeat_backward = false) {
  const int64_t B = 2, nh = 3, H = nh * dh, tokens = B * S;
  SCOPED_TRACE(::testing::Message() << "seq " << S << " head_dim " << dh
                                    << (mask_kind == MaskKind::kNone ? " no mask" : " partial + all-masked")
                                    << " dropout " << p_drop << (fused ? " fused QKV" : " separate Q, K, V"));
  const uint32_t seed = static_cast<uint32_t>(S * 1000 + dh * 10 + (mask_kind == MaskKind::kNone ? 0 : 1));
  const int64_t ld = fused ? 3 * H : H + 1;  // q, k, v and dq, dk, dv row stride
  const int64_t ld_out = fused ? H : H + 3, ld_grad = fused ? 3 * H : H + 3;
  // Host q, k, v with row stride ld (fused: one buffer with column offsets 0, H, 2H).
  std::vector<float> qkv_host, q_host, k_host, v_host;
  if (fused) {
    qkv_host = test::random_floats(tokens * ld, seed, -2.f, 2.f);
  } else {
    q_host = test::random_floats(tokens * ld, seed, -2.f, 2.f);
    k_host = test::random_floats(tokens * ld, seed + 1, -2.f, 2.f);
    v_host = test::random_floats(tokens * ld, seed + 2, -2.f, 2.f);
  }
  const float* q = fused ? qkv_host.data() : q_host.data();
  const float* k = fused ? qkv_host.data() + H : k_host.data();
  const float* v = fused ? qkv_host.data() + 2 * H : v_host.data();
  const std::vector<float> d_ctx = test::random_floats(tokens * H, seed + 3, -1.f, 1.f);
  const std::vector<int32_t> mask = mask_kind == MaskKind::kNone ? std::vector<int32_t>{} : make_mask(S);
  const int32_t* mask_ptr = mask.empty() ? nullptr : mask.data();
  const Reference want = reference(q, k, v, ld, d_ctx.data(), B, S, nh, dh, mask_ptr, p_drop);

  DeviceBuffer<float> d_qkv(fused ? qkv_host : std::vector<float>{});
  DeviceBuffer<float> d_q(q_host), d_k(k_host), d_v(v_host);
  DeviceBuffer<int32_t> d_mask(mask);
  DeviceBuffer<float> d_out(std::vector<float>(tokens * ld_out, kSentinel));
  DeviceBuffer<float> d_lse(std::vector<float>(B * nh * S, kSentinel));
  DeviceBuffer<float> d_dctx(d_ctx);
  DeviceBuffer<float> d_delta(B * nh * S);
  DeviceBuffer<float> d_dqkv(std::vector<float>(fused ? tokens * ld_grad : 0, kSentinel));
  DeviceBuffer<float> d_dq(std::vector<float>(fused ? 0 : tokens * ld_grad, kSentinel));
  DeviceBuffer<float> d_dk(std::vector<float>(fused ? 0 : tokens * ld_grad, kSentinel));
  DeviceBuffer<float> d_dv(std::vector<float>(fused ? 0 : tokens * ld_grad, kSentinel));

  AttentionTrainArgs a;
  a.q = fused ? d_qkv.p : d_q.p, a.k = fused ? d_qkv.p + H : d_k.p, a.v = fused ? d_qkv.p + 2 * H : d_v.p;
  a.ld_qkv = ld, a.key_mask = mask_ptr ? d_mask.p : nullptr;
  a.batch = B, a.seq = S, a.heads = nh, a.head_dim = dh, a.scale = scale_of(dh);
  a.dropout_p = p_drop, a.dropout_seed = kDropoutSeed, a.dropout_offset = kDropoutOffset;
  ASSERT_TRUE(cuda::attention_train_forward(a, d_out.p, ld_out, d_lse.p)) << cuda::cuda_last_error();
  ASSERT_TRUE(cuda::synchronize()) << cuda::cuda_last_error();

  const std::vector<float> out = d_out.host();
  expect_clean(out, tokens, ld_out, H, "out");
  expect_close(columns(out, tokens, ld_out, 0, H), want.ctx, "out");

  // lse: rows of sequences with an attending key against the double reference; an all-masked sequence's rows
  // hold -1e30 + log(S), i.e. about -1e30.
  const std::vector<float> lse = d_lse.host();
  std::vector<float> lse_got, lse_want;
  int64_t all_masked_rows_wrong = 0;
  for (int64_t b = 0; b < B; ++b) {
    bool any = !mask_ptr;
    for (int64_t key = 0; key < S && !any; ++key) any = mask[b * S + key] != 0;
    for (int64_t row = b * nh * S; row < (b + 1) * nh * S; ++row) {
      if (any) {
        lse_got.push_back(lse[row]), lse_want.push_back(want.lse[row]);
      } else {
        all_masked_rows_wrong += lse[row] <= -1e29f && lse[row] >= -1.1e30f ? 0 : 1;
      }
    }
  }
  EXPECT_EQ(all_masked_rows_wrong, 0) << "an all-masked row's lse is not about -1e30";
  expect_close(lse_got, lse_want, "lse");

  AttentionGradArgs g;
  g.out = d_out.p, g.ld_out = ld_out, g.d_out = d_dctx.p, g.ld_dout = H;
  g.dq = fused ? d_dqkv.p : d_dq.p, g.dk = fused ? d_dqkv.p + H : d_dk.p, g.dv = fused ? d_dqkv.p + 2 * H : d_dv.p;
  g.ld_dqkv = ld_grad, g.lse = d_lse.p, g.delta_workspace = d_delta.p;
  ASSERT_TRUE(cuda::attention_train_backward(a, g)) << cuda::cuda_last_error();
  ASSERT_TRUE(cuda::synchronize()) << cuda::cuda_last_error();

  std::vector<float> dq, dk, dv, first_bits;
  if (fused) {
    const std::vector<float> all = d_dqkv.host();
    first_bits = all;
    int64_t nans = 0;
    for (float x : all) nans += std::isnan(x) ? 1 : 0;
    EXPECT_EQ(nans, 0) << "NaN in dQKV";
    dq = columns(all, tokens, ld_grad, 0, H), dk = columns(all, tokens, ld_grad, H, H);
    dv = columns(all, tokens, ld_grad, 2 * H, H);
  } else {
    const std::vector<float> hq = d_dq.host(), hk = d_dk.host(), hv = d_dv.host();
    expect_clean(hq, tokens, ld_grad, H, "dq"), expect_clean(hk, tokens, ld_grad, H, "dk");
    expect_clean(hv, tokens, ld_grad, H, "dv");
    first_bits = hq;
    first_bits.insert(first_bits.end(), hk.begin(), hk.end()), first_bits.insert(first_bits.end(), hv.begin(), hv.end());
    dq = columns(hq, tokens, ld_grad, 0, H), dk = columns(hk, tokens, ld_grad, 0, H);
    dv = columns(hv, tokens, ld_grad, 0, H);
  }
  if (S == 1) {  // one key: P = 1, dS = P (dP - dP P) = 0, so dQ and dK are 0 up to rounding (the reference's exactly)
    EXPECT_LE(test::max_abs(dq.data(), dq.size()), 1e-5) << "dq";
    EXPECT_LE(test::max_abs(dk.data(), dk.size()), 1e-5) << "dk";
  } else {
    expect_close(dq, want.dq, "dq");
    expect_close(dk, want.dk, "dk");
  }
  expect_close(dv, want.dv, "dv");

  if (repeat_backward) {
    ASSERT_TRUE(cuda::attention_train_backward(a, g)) << cuda::cuda_last_error();
    ASSERT_TRUE(cuda::synchronize()) << cuda::cuda_last_error();
    std::vector<float> second_bits;
    if (fused) {
      second_bits = d_dqkv.host();
    } else {
      second_bits = d_dq.host();
      const std::vector<float> hk = d_dk.host(), hv = d_dv.host();
      second_bits.insert(second_bits.end(), hk.begin(), hk.end()), second_bits.insert(second_bits.end(), hv.begin(), hv.end());
    }
    ASSERT_EQ(first_bits.size(), second_bits.size());
    EXPECT_EQ(std::memcmp(first_bits.data(), second_bits.data(), first_bits.size() * sizeof(float)), 0)
        << "the backward is not deterministic";
  }
}

// Every shape of the brief, alternating the fused and the separate (odd-stride, padded) layouts.
void check_all_shapes(MaskKind mask_kind, float p_drop) {
  int case_index = 0;
  for (int64_t S : {1, 17, 64, 65, 130})
    for (int64_t dh : {8, 32, 64, 72, 128}) check_case(S, dh, mask_kind, p_drop, case_index++ % 2 == 0);
}

TEST(CudaAttentionTrain, NoMaskNoDropoutMatchesTrainerReference) {
  BERT_REQUIRE_GPU();
  check_all_shapes(MaskKind::kNone, 0.f);
}

TEST(CudaAttentionTrain, MaskedNoDropoutMatchesTrainerReference) {
  BERT_REQUIRE_GPU();
  check_all_shapes(MaskKind::kPartialAndNone, 0.f);
}

TEST(CudaAttentionTrain, NoMaskDropoutMatchesTrainerReference) {
  BERT_REQUIRE_GPU();
  check_all_shapes(MaskKind::kNone, 0.1f);
}

TEST(CudaAttentionTrain, MaskedDropoutMatchesTrainerReference) {
  BERT_REQUIRE_GPU();
  check_all_shapes(MaskKind::kPartialAndNone, 0.1f);
}

// Longer than one key tile in every kernel, both layouts: a second backward gives the same bits (no atomics).
TEST(CudaAttentionTrain, BackwardIsDeterministic) {
  BERT_REQUIRE_GPU();
  check_case(200, 64, MaskKind::kPartialAndNone, 0.1f, true, true);
  check_case(200, 40, MaskKind::kNone, 0.1f, false, true);
}

TEST(CudaAttentionTrain, BadArgumentsAreRejectedWithAMessage) {
  BERT_REQUIRE_GPU();
  DeviceBuffer<float> inputs(4096), outputs(4096);  // big enough for the good arguments below
  float* dummy = inputs.p;
  float* sink = outputs.p;
  AttentionTrainArgs good;
  good.q = good.k = good.v = dummy;
  good.ld_qkv = 96, good.batch = 2, good.seq = 8, good.heads = 2, good.head_dim = 16, good.scale = 0.25f;
  AttentionGradArgs good_g;
  good_g.out = good_g.d_out = dummy, good_g.dq = good_g.dk = good_g.dv = dummy, good_g.lse = dummy;
  good_g.delta_workspace = dummy, good_g.ld_out = 32, good_g.ld_dout = 32, good_g.ld_dqkv = 96;

  struct Case {
    std::string name;
    AttentionTrainArgs a;
    AttentionGradArgs g;
    float* out;
    int64_t ld_out;
    float* lse;
    const char* message;  // a part of cuda_last_error()
    bool forward;         // refused by the forward (every bad AttentionTrainArgs also by the backward)
  };
  std::vector<Case> cases;
  auto add = [&](const std::string& name, const char* message, bool forward, auto change) {
    Case c{name, good, good_g, dummy, 32, dummy, message, forward};
    change(c);
    cases.push_back(c);
  };
  add("head_dim 0", "head_dim", true, [](Case& c) { c.a.head_dim = 0; });
  add("head_dim 129", "head_dim", true, [](Case& c) {
    c.a.head_dim = 129, c.a.ld_qkv = 3 * 2 * 129, c.ld_out = 2 * 129, c.g.ld_out = c.g.ld_dout = 2 * 129;
    c.g.ld_dqkv = 3 * 2 * 129;
  });
  add("null q", "non-null", true, [](Case& c) { c.a.q = nullptr; });
  add("null v", "non-null", true, [](Case& c) { c.a.v = nullptr; });
  add("heads 0", "heads", true, [](Case& c) { c.a.heads = 0; });
  add("negative seq", "seq", true, [](Case& c) { c.a.seq = -1; });
  add("negative batch", "batch", true, [](Case& c) { c.a.batch = -1; });
  add("ld_qkv too small", "ld_qkv", true, [](Case& c) { c.a.ld_qkv = 31; });
  add("dropout_p 1", "dropout_p", true, [](Case& c) { c.a.dropout_p = 1.f; });
  add("dropout_p negative", "dropout_p", true, [](Case& c) { c.a.dropout_p = -0.1f; });
  add("dropout_p NaN", "dropout_p", true, [](Case& c) { c.a.dropout_p = std::numeric_limits<float>::quiet_NaN(); });
  add("null out (forward)", "non-null", true, [](Case& c) { c.out = nullptr; });
  add("null lse (forward)", "non-null", true, [](Case& c) { c.lse = nullptr; });
  add("ld_out too small (forward)", "ld_out", true, [](Case& c) { c.ld_out = 31; });
  add("null dq", "non-null", false, [](Case& c) { c.g.dq = nullptr; });
  add("null d_out", "non-null", false, [](Case& c) { c.g.d_out = nullptr; });
  add("null lse (backward)", "non-null", false, [](Case& c) { c.g.lse = nullptr; });
  add("null delta_workspace", "non-null", false, [](Case& c) { c.g.delta_workspace = nullptr; });
  add("ld_out too small (backward)", "ld_out", false, [](Case& c) { c.g.ld_out = 31; });
  add("ld_dout too small", "ld_dout", false, [](Case& c) { c.g.ld_dout = 31; });
  add("ld_dqkv too small", "ld_dqkv", false, [](Case& c) { c.g.ld_dqkv = 31; });

  // The good arguments themselves pass (so each refusal below is the change's doing).
  EXPECT_TRUE(cuda::attention_train_forward(good, sink, 32, sink + 2048)) << cuda::cuda_last_error();
  EXPECT_TRUE(cuda::synchronize()) << cuda::cuda_last_error();
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    const bool forward_touched = c.out != dummy || c.lse != dummy || c.ld_out != 32;
    const bool backward_only = !c.forward;
    if (!backward_only) {
      EXPECT_FALSE(cuda::attention_train_forward(c.a, c.out, c.ld_out, c.lse));
      const std::string error = cuda::cuda_last_error();
      EXPECT_NE(error.find("attention_train_forward"), std::string::npos) << error;
      EXPECT_NE(error.find(c.message), std::string::npos) << error;
    }
    if (!forward_touched) {  // the AttentionTrainArgs and AttentionGradArgs changes also stop the backward
      EXPECT_FALSE(cuda::attention_train_backward(c.a, c.g));
      const std::string error = cuda::cuda_last_error();
      EXPECT_NE(error.find("attention_train_backward"), std::string::npos) << error;
      EXPECT_NE(error.find(c.message), std::string::npos) << error;
    }
  }
}

TEST(CudaAttentionTrain, EmptyBatchOrSequenceIsANoOp) {
  BERT_REQUIRE_GPU();
  float* dummy = reinterpret_cast<float*>(uintptr_t{16});  // never dereferenced: nothing is launched
  AttentionTrainArgs a;
  a.q = a.k = a.v = dummy, a.ld_qkv = 96, a.heads = 2, a.head_dim = 16, a.scale = 0.25f;
  AttentionGradArgs g;
  g.out = g.d_out = dummy, g.dq = g.dk = g.dv = dummy, g.lse = dummy, g.delta_workspace = dummy;
  g.ld_out = g.ld_dout = 32, g.ld_dqkv = 96;
  const std::pair<int64_t, int64_t> shapes[] = {{0, 8}, {2, 0}};  // (batch, seq)
  for (const auto& [batch, seq] : shapes) {
    a.batch = batch, a.seq = seq;
    EXPECT_TRUE(cuda::attention_train_forward(a, dummy, 32, dummy)) << cuda::cuda_last_error();
    EXPECT_TRUE(cuda::attention_train_backward(a, g)) << cuda::cuda_last_error();
  }
  EXPECT_TRUE(cuda::synchronize()) << cuda::cuda_last_error();
}

}  // namespace
}  // namespace bert::kernels
