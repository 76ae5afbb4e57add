// Tests of the fused attention op (kernels/attention.h): the reference against hand-computed values and
// against the engine's unfused path (two oneDNN batched matmuls around softmax_masked); every registered
// attention variant against the reference at awkward sequence lengths and head sizes, with and without
// key masks (including a fully masked sequence), in the fused-QKV and separate-plane layouts; masked
// keys having exactly no influence; bit-identical results for any thread count; check().
#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <iostream>
#include <random>
#include <string>
#include <vector>

#include "kernels/attention.h"
#include "kernels/cpu/dispatch.h"
#include "kernels/gemm.h"
#include "kernels/registry.h"
#include "kernels/softmax_masked.h"
#include "tests/test_util.h"

namespace bert::kernels {
namespace {

using test::random_floats;

// One attention problem: a [tokens, 3H] fused buffer (or three [tokens, H] planes), a mask, outputs.
struct Problem {
  int64_t batch, seq, heads, dh;
  bool fused;
  std::vector<float> qkv;
  std::vector<int32_t> mask;  // empty: no mask
  int64_t width() const { return heads * dh; }
  int64_t tokens() const { return batch * seq; }
  AttentionArgs args(float* out, int64_t ldo = 0) const {
    AttentionArgs a;
    const int64_t H = width(), T = tokens();
    a.q = qkv.data();
    a.k = fused ? qkv.data() + H : qkv.data() + T * H;
    a.v = fused ? qkv.data() + 2 * H : qkv.data() + 2 * T * H;
    a.ld = fused ? 3 * H : H;
    a.key_mask = mask.empty() ? nullptr : mask.data();
    a.out = out;
    a.ldo = ldo;
    a.batch = batch, a.seq = seq, a.heads = heads, a.head_dim = dh;
    a.scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(dh)));
    return a;
  }
};

// mask_mode 0: none; 1: padded tails (random valid length, a hole in sequence 0); 2: sequence 1 fully
// masked, the others with random holes.
Problem make_problem(int64_t batch, int64_t seq, int64_t heads, int64_t dh, bool fused, int mask_mode, uint32_t seed) {
  Problem p{batch, seq, heads, dh, fused, random_floats(static_cast<size_t>(3 * batch * seq * heads * dh), seed,
                                                         -2.f, 2.f), {}};
  if (mask_mode == 0) return p;
  std::mt19937 rng(seed + 7);
  p.mask.assign(static_cast<size_t>(batch * seq), 1);
  for (int64_t b = 0; b < batch; ++b) {
    const int64_t valid = 1 + static_cast<int64_t>(rng() % static_cast<uint32_t>(seq));
    for (int64_t j = 0; j < seq; ++j) {
      int32_t m = 1;
      if (mask_mode == 1) {
        m = j < valid ? 1 : 0;
        if (b == 0 && j == valid / 2 && valid > 2) m = 0;
      } else {
        m = b == 1 ? 0 : ((rng() % 3) != 0 ? static_cast<int32_t>(rng() % 4 + 1) : 0);
      }
      p.mask[static_cast<size_t>(b * seq + j)] = m;
    }
  }
  return p;
}

// Empty when every |got - want| <= atol + rtol |want| and got is not all zero; else what is wrong.
std::string compare(const std::vector<float>& got, const std::vector<float>& want, double atol, double rtol) {
  if (got.size() != want.size()) return "size differs";
  size_t bad = 0, first = 0;
  bool nonzero = false;
  double worst = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double d = std::fabs(double(got[i]) - want[i]);
    worst = std::max(worst, d);
    nonzero = nonzero || got[i] != 0.f;
    if (!(d <= atol + rtol * std::fabs(double(want[i]))) && bad++ == 0) first = i;
  }
  if (!nonzero && !got.empty()) return "output is all zeros";
  if (bad == 0) return "";
  return std::to_string(bad) + " elements out of tolerance, first at " + std::to_string(first) + ": got " +
         std::to_string(got[first]) + " want " + std::to_string(want[first]) + " (max abs err " +
         std::to_string(worst) + ")";
}

constexpr double kAtol = 3e-6, kRtol = 2e-5;

// ---- the reference ----------------------------------------------------------------------------------

TEST(AttentionRef, HandComputed) {
  // One sequence of 2 tokens, one head of dim 2, fused [2, 6] rows: q | k | v.
  // q0 = (1, 0), q1 = (0, 2); k0 = (1, 1), k1 = (0, 1); v0 = (1, 2), v1 = (3, -1); scale 0.5.
  std::vector<float> qkv = {1, 0, 1, 1, 1, 2, 0, 2, 0, 1, 3, -1};
  std::vector<float> out(4, -9.f);
  AttentionArgs a;
  a.q = qkv.data(), a.k = qkv.data() + 2, a.v = qkv.data() + 4, a.out = out.data();
  a.batch = 1, a.seq = 2, a.heads = 1, a.head_dim = 2, a.ld = 6, a.scale = 0.5f;
  attention_f32_ref(a);
  // Row 0: scores 0.5*(1, 0) -> p = softmax(0.5, 0); row 1: 0.5*(2, 2) -> p = (0.5, 0.5).
  const double p0 = 1.0 / (1.0 + std::exp(-0.5));
  EXPECT_NEAR(out[0], p0 * 1 + (1 - p0) * 3, 1e-6);
  EXPECT_NEAR(out[1], p0 * 2 + (1 - p0) * -1, 1e-6);
  EXPECT_NEAR(out[2], 2.0, 1e-6);
  EXPECT_NEAR(out[3], 0.5, 1e-6);
  // Key 0 masked: every query sees only v1.
  std::vector<int32_t> mask = {0, 1};
  a.key_mask = mask.data();
  attention_f32_ref(a);
  EXPECT_EQ(out, (std::vector<float>{3, -1, 3, -1}));
  // Both masked: uniform over both keys, the mean of v.
  mask = {0, 0};
  attention_f32_ref(a);
  EXPECT_EQ(out, (std::vector<float>{2, 0.5f, 2, 0.5f}));
}

// The reference means what the engine's unfused attention computes: scores by a strided batched
// matmul, softmax_masked (scale folded in), context by a second batched matmul (engine/src/session.cc).
TEST(AttentionRef, EqualsTheUnfusedPath) {
  for (int mask_mode = 0; mask_mode < 3; ++mask_mode) {
    const Problem p = make_problem(3, 37, 4, 16, true, mask_mode, 123 + mask_mode);
    const int64_t B = p.batch, S = p.seq, nh = p.heads, dh = p.dh, H = p.width(), ld = 3 * H;
    std::vector<float> scores(static_cast<size_t>(B * nh * S * S)), ctx(static_cast<size_t>(B * S * H), -1.f);
    GemmPlanner gemm;
    BatchedMatmulArgs qk;
    qk.a = p.qkv.data(), qk.b = p.qkv.data() + H, qk.c = scores.data();
    qk.batch0 = B, qk.batch1 = nh, qk.M = S, qk.N = S, qk.K = dh;
    const int64_t qs[4] = {S * ld, dh, ld, 1}, ks[4] = {S * ld, dh, 1, ld}, ss[4] = {nh * S * S, S * S, S, 1};
    std::memcpy(qk.a_strides, qs, sizeof qs), std::memcpy(qk.b_strides, ks, sizeof ks);
    std::memcpy(qk.c_strides, ss, sizeof ss);
    ASSERT_TRUE(gemm.batched_matmul(qk));
    softmax_masked_f32_ref({scores.data(), p.mask.empty() ? nullptr : p.mask.data(), B, nh, S, S,
                            static_cast<float>(1.0 / std::sqrt(double(dh)))});
    BatchedMatmulArgs pv;
    pv.a = scores.data(), pv.b = p.qkv.data() + 2 * H, pv.c = ctx.data();
    pv.batch0 = B, pv.batch1 = nh, pv.M = S, pv.N = dh, pv.K = S;
    const int64_t vs[4] = {S * ld, dh, ld, 1}, cs[4] = {S * H, dh, H, 1};
    std::memcpy(pv.a_strides, ss, sizeof ss), std::memcpy(pv.b_strides, vs, sizeof vs);
    std::memcpy(pv.c_strides, cs, sizeof cs);
    ASSERT_TRUE(gemm.batched_matmul(pv));
    std::vector<float> out(ctx.size(), -2.f);
    attention_f32_ref(p.args(out.data()));
    EXPECT_EQ(compare(ctx, out, 1e-5, 1e-4), "") << "mask mode " << mask_mode;
  }
}

// ---- every registered variant against the reference ------------------------------------------------

// The registry's entries, and the bf16-product kernel precision bf16 runs (outside the registry: its
// numbers are not fp32's, so it is tested here at a bf16 tolerance).
constexpr const char* kBf16Variant = "attention_bf16_avx512bf16";
// Q, K, V and P rounded to bf16 (relative error 2^-9 each): outputs of inputs in [-2, 2] move by ~5e-3.
constexpr double kBf16Atol = 2e-2, kBf16Rtol = 2e-2;

std::vector<std::string> attention_variants() {
  std::vector<std::string> names;
  for (const KernelEntry& e : kernel_registry()) {
    if (e.op == Op::kAttention && e.device != Device::kRef) names.push_back(e.name);
  }
  names.push_back(kBf16Variant);
  return names;
}

class AttentionVariant : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    if (GetParam() == kBf16Variant) {
      if (!attention_bf16_supported())
        GTEST_SKIP() << GetParam() << " needs AVX512_BF16 (this CPU lacks it, or BERT_CPU_ISA is below avx512)";
      fn_ = attention_bf16_avx512bf16, atol_ = kBf16Atol, rtol_ = kBf16Rtol;
      return;
    }
    entry_ = find_kernel(GetParam());
    ASSERT_NE(entry_, nullptr);
    if (entry_->device == Device::kCuda) GTEST_SKIP() << GetParam() << " is a CUDA kernel (not run by CPU tests)";
    if (static_cast<int>(detect_cpu_isa()) < static_cast<int>(entry_->isa)) {
      GTEST_SKIP() << GetParam() << " needs " << cpu_isa_name(entry_->isa) << " (CPU: "
                   << cpu_isa_name(cpu_isa_supported()) << ", BERT_CPU_ISA limit: " << cpu_isa_name(detect_cpu_isa())
                   << ")";
    }
    fn_ = entry_->fn_as<OpTraits<AttentionArgs>::Fn>();
  }
  void run(const AttentionArgs& a) const { fn_(a); }
  const KernelEntry* entry_ = nullptr;
  OpTraits<AttentionArgs>::Fn fn_ = nullptr;
  double atol_ = kAtol, rtol_ = kRtol;
};

TEST_P(AttentionVariant, MatchesRef) {
  double worst = 0;
  int cases = 0;
  for (int64_t seq : {1, 7, 16, 17, 64, 65, 127, 129}) {
    for (int64_t dh : {32, 33, 64, 80}) {
      for (int mask_mode = 0; mask_mode < 3; ++mask_mode) {
        for (bool fused : {true, false}) {
          if (!fused && mask_mode == 1) continue;  // the plane layout once per mask kind is enough
          const int64_t batch = mask_mode == 2 ? 3 : 2, heads = 2;
          const Problem p = make_problem(batch, seq, heads, dh, fused, mask_mode,
                                         static_cast<uint32_t>(seq * 1000 + dh * 10 + mask_mode));
          std::vector<float> got(static_cast<size_t>(p.tokens() * p.width()), -7.f), want(got.size(), -5.f);
          const AttentionArgs ga = p.args(got.data()), wa = p.args(want.data());
          ASSERT_TRUE(check(ga).ok()) << check(ga).to_string();
          run(ga);
          attention_f32_ref(wa);
          const std::string what = GetParam() + " seq=" + std::to_string(seq) + " head_dim=" + std::to_string(dh) +
                                   " mask=" + std::to_string(mask_mode) + (fused ? " fused" : " planes");
          ASSERT_EQ(compare(got, want, atol_, rtol_), "") << what;
          for (size_t i = 0; i < got.size(); ++i) worst = std::max(worst, std::fabs(double(got[i]) - want[i]));
          ++cases;
        }
      }
    }
  }
  std::cout << "[ info ] " << GetParam() << ": " << cases << " cases, max abs err vs ref " << worst << "\n";
}

// The widest head the kernels take (kAttentionMaxHeadDim) and an odd one just below it.
TEST_P(AttentionVariant, WidestHeads) {
  for (int64_t dh : {kAttentionMaxHeadDim, kAttentionMaxHeadDim - 1}) {
    const Problem p = make_problem(2, 70, 2, dh, true, 1, static_cast<uint32_t>(dh));
    std::vector<float> got(static_cast<size_t>(p.tokens() * p.width()), -7.f), want(got.size(), -5.f);
    run(p.args(got.data()));
    attention_f32_ref(p.args(want.data()));
    EXPECT_EQ(compare(got, want, atol_, rtol_), "") << GetParam() << " head_dim " << dh;
  }
}

// The packed layout (padding removed): sequences of different lengths back to back, addressed by
// seq_starts; each sequence's rows equal the reference run on that sequence alone, padded layout.
TEST_P(AttentionVariant, PackedLayoutEqualsEachSequenceAlone) {
  for (int64_t dh : {32, 64, 80}) {
    const std::vector<int32_t> lengths = {129, 1, 64, 17, 0, 130};
    const int64_t heads = 3, H = heads * dh, B = int64_t(lengths.size());
    std::vector<int32_t> starts = {0};
    for (int32_t l : lengths) starts.push_back(starts.back() + l);
    const int64_t T = starts.back();
    Problem all = make_problem(1, T, heads, dh, true, 0, static_cast<uint32_t>(dh));
    AttentionArgs a = all.args(nullptr);
    std::vector<float> got(static_cast<size_t>(T * H), -7.f);
    a.out = got.data(), a.batch = B, a.seq = 130, a.seq_starts = starts.data();
    ASSERT_TRUE(check(a).ok()) << check(a).to_string();
    run(a);
    for (int64_t b = 0; b < B; ++b) {
      if (lengths[b] == 0) continue;
      AttentionArgs one = all.args(nullptr);  // the same rows, as a padded batch of one
      const int64_t off = starts[b] * 3 * H;
      one.q = all.qkv.data() + off, one.k = one.q + H, one.v = one.q + 2 * H;
      std::vector<float> want(static_cast<size_t>(lengths[b] * H), -5.f);
      one.out = want.data(), one.batch = 1, one.seq = lengths[b];
      attention_f32_ref(one);
      const std::vector<float> part(got.begin() + starts[b] * H, got.begin() + starts[b + 1] * H);
      ASSERT_EQ(compare(part, want, atol_, rtol_), "")
          << GetParam() << " packed sequence " << b << " (length " << lengths[b] << ") head_dim " << dh;
    }
  }
  AttentionArgs both = make_problem(1, 4, 1, 32, true, 1, 3).args(nullptr);
  std::vector<float> out(4 * 32);
  const int32_t starts[2] = {0, 4};
  both.out = out.data(), both.seq_starts = starts;
  EXPECT_FALSE(check(both).ok());  // a mask and packed offsets together
}

// Output rows wider than heads*head_dim (ldo) keep their extra columns; bert-base-like shape.
TEST_P(AttentionVariant, StridedOutputAndManyHeads) {
  const Problem p = make_problem(2, 50, 12, 64, true, 1, 99);
  const int64_t H = p.width(), ldo = H + 5;
  std::vector<float> got(static_cast<size_t>(p.tokens() * ldo), 42.f), want(got.size(), 42.f);
  run(p.args(got.data(), ldo));
  attention_f32_ref(p.args(want.data(), ldo));
  EXPECT_EQ(compare(got, want, atol_, rtol_), "");
  for (int64_t t = 0; t < p.tokens(); ++t)
    for (int64_t c = H; c < ldo; ++c) ASSERT_EQ(got[static_cast<size_t>(t * ldo + c)], 42.f) << t << " " << c;
}

// A masked key has probability exactly 0: changing its K and V changes no output bit. A fully masked
// sequence's every query gets the mean of V over all keys.
TEST_P(AttentionVariant, MaskedKeysHaveNoInfluence) {
  Problem p = make_problem(3, 70, 2, 64, true, 2, 5);
  std::vector<float> a(static_cast<size_t>(p.tokens() * p.width())), b(a.size());
  run(p.args(a.data()));
  const int64_t H = p.width();
  for (int64_t t = 0; t < p.tokens(); ++t) {
    if (p.mask[static_cast<size_t>(t)] != 0 || t / p.seq == 1) continue;  // sequence 1 is fully masked
    for (int64_t c = H; c < 3 * H; ++c) p.qkv[static_cast<size_t>(t * 3 * H + c)] *= -3.f;
  }
  run(p.args(b.data()));
  EXPECT_EQ(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)), 0);
  // Sequence 1: uniform over its 70 keys.
  for (int64_t c = 0; c < H; ++c) {
    double mean = 0;
    for (int64_t j = 0; j < p.seq; ++j) mean += p.qkv[static_cast<size_t>((p.seq + j) * 3 * H + 2 * H + c)];
    mean /= double(p.seq);
    const double tol = atol_ == kAtol ? 2e-6 : atol_;  // (bf16: V rounded)
    for (int64_t i = 0; i < p.seq; ++i) ASSERT_NEAR(b[static_cast<size_t>((p.seq + i) * H + c)], mean, tol);
  }
}

TEST_P(AttentionVariant, BitIdenticalForAnyThreadCount) {
  const Problem p = make_problem(2, 129, 3, 64, true, 1, 17);
  const int saved = omp_get_max_threads();
  omp_set_num_threads(1);
  std::vector<float> one(static_cast<size_t>(p.tokens() * p.width()));
  run(p.args(one.data()));
  for (int threads : {2, 3, 8}) {
    omp_set_num_threads(threads);
    std::vector<float> many(one.size());
    run(p.args(many.data()));
    EXPECT_EQ(std::memcmp(one.data(), many.data(), one.size() * sizeof(float)), 0) << threads << " threads";
  }
  omp_set_num_threads(saved);
}

INSTANTIATE_TEST_SUITE_P(Registry, AttentionVariant, ::testing::ValuesIn(attention_variants()),
                         [](const ::testing::TestParamInfo<std::string>& info) { return info.param; });

// ---- the checker and the harness -----------------------------------------------------------------

TEST(AttentionCheck, RejectsBadArguments) {
  const Problem p = make_problem(2, 8, 2, 16, true, 0, 1);
  std::vector<float> out(static_cast<size_t>(p.tokens() * p.width()));
  EXPECT_TRUE(check(p.args(out.data())).ok());
  auto expect_bad = [&](AttentionArgs a, const std::string& needle) {
    const Status st = check(a);
    EXPECT_FALSE(st.ok()) << needle;
    EXPECT_EQ(st.code(), ErrorCode::kInvalidArgument) << needle;
    EXPECT_NE(st.message().find(needle), std::string::npos) << st.message() << " lacks " << needle;
  };
  AttentionArgs a = p.args(out.data());
  a.q = nullptr;
  expect_bad(a, "q is null");
  a = p.args(nullptr);
  expect_bad(a, "out is null");
  a = p.args(out.data()), a.seq = -1;
  expect_bad(a, "seq is -1");
  a = p.args(out.data()), a.ld = p.width() - 1;
  expect_bad(a, "ld");
  a = p.args(out.data()), a.ldo = 3;
  expect_bad(a, "ldo");
  a = p.args(out.data()), a.scale = NAN;
  expect_bad(a, "scale");
  a = p.args(out.data()), a.batch = int64_t{1} << 40, a.seq = int64_t{1} << 30;
  expect_bad(a, "overflow");
  a = p.args(const_cast<float*>(p.qkv.data()) + 2 * p.width());  // out written over V's columns
  expect_bad(a, "out overlaps");
  // Empty problems are valid whatever the pointers.
  AttentionArgs empty;
  EXPECT_TRUE(check(empty).ok());
}

TEST(AttentionCheck, HarnessRejectsZerosAndErrors) {
  const std::vector<float> want = {0.5f, -0.25f, 1.f};
  EXPECT_EQ(compare(want, want, kAtol, kRtol), "");
  EXPECT_NE(compare(std::vector<float>(3, 0.f), want, 1.0, 1.0), "");  // all zeros fails even with huge tolerance
  EXPECT_NE(compare({0.5f, -0.25f, 1.001f}, want, kAtol, kRtol), "");
}

// Heads wider than the flash kernels' limit resolve to the reference through supports().
TEST(AttentionCheck, WideHeadsFallBackToRef) {
  AttentionArgs a;
  a.head_dim = kAttentionMaxHeadDim + 1;
  auto e = resolve_kernel_for(Op::kAttention, Device::kCpu, DType::kF32, CpuIsa::kAvx512, &a);
  ASSERT_TRUE(e.ok());
  EXPECT_STREQ((*e)->name, "attention_f32_ref");
  a.head_dim = 64;
  e = resolve_kernel_for(Op::kAttention, Device::kCpu, DType::kF32, CpuIsa::kAvx512, &a);
  ASSERT_TRUE(e.ok());
  EXPECT_STREQ((*e)->name, "attention_f32_avx512_flash");
}

}  // namespace
}  // namespace bert::kernels
