// Tests of the hand-written CPU kernels: the scalar refs against hand-computed values, every registered
// forward entry of the op registry against its reference (the variant list drives the tests), and every SIMD
// variant the CPU supports (plus a portable 16-lane emulation of the vector-generic bodies, standing in
// for AVX-512 where the CPU lacks it) against the refs at awkward sizes; accuracy of exp/erfc/tanh.
#include <gtest/gtest.h>

#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "kernels/activation.h"
#include "kernels/attention.h"
#include "kernels/convert.h"
#include "kernels/cpu/dispatch.h"
#include "kernels/cpu/attention_simd.h"
#include "kernels/cpu/simd_kernels.h"
#include "kernels/registry.h"
#include "kernels/embed.h"
#include "kernels/layernorm.h"
#include "kernels/softmax_masked.h"
#include "tests/test_util.h"

namespace bert::kernels {
namespace {

using test::random_floats;

// ---- a portable W-lane emulation of the traits, with x86 min/max/round semantics -------------------
template <int N>
struct Emu {
  static constexpr int W = N;
  struct F {
    float v[N];
  };
  struct I {
    int32_t v[N];
  };
  struct M {
    bool v[N];
  };
  template <class Op>
  static F map(Op op, F a) {
    F r;
    for (int i = 0; i < N; ++i) r.v[i] = op(a.v[i]);
    return r;
  }
  template <class Op>
  static F map2(Op op, F a, F b) {
    F r;
    for (int i = 0; i < N; ++i) r.v[i] = op(a.v[i], b.v[i]);
    return r;
  }
  static uint32_t bits(float f) {
    uint32_t u;
    std::memcpy(&u, &f, 4);
    return u;
  }
  static float from_bits(uint32_t u) {
    float f;
    std::memcpy(&f, &u, 4);
    return f;
  }
  static F zero() { return set1(0.f); }
  static F set1(float x) {
    F r;
    for (auto& v : r.v) v = x;
    return r;
  }
  static F load(const float* p) {
    F r;
    for (int i = 0; i < N; ++i) r.v[i] = p[i];
    return r;
  }
  static void store(float* p, F a) {
    for (int i = 0; i < N; ++i) p[i] = a.v[i];
  }
  static M tail_mask(int n) {
    M m;
    for (int i = 0; i < N; ++i) m.v[i] = i < n;
    return m;
  }
  static F load_tail(const float* p, M m) {
    F r;
    for (int i = 0; i < N; ++i) r.v[i] = m.v[i] ? p[i] : 0.f;
    return r;
  }
  static void store_tail(float* p, M m, F a) {
    for (int i = 0; i < N; ++i)
      if (m.v[i]) p[i] = a.v[i];
  }
  static F add(F a, F b) {
    return map2([](float x, float y) { return x + y; }, a, b);
  }
  static F sub(F a, F b) {
    return map2([](float x, float y) { return x - y; }, a, b);
  }
  static F mul(F a, F b) {
    return map2([](float x, float y) { return x * y; }, a, b);
  }
  static F div(F a, F b) {
    return map2([](float x, float y) { return x / y; }, a, b);
  }
  static F fmadd(F a, F b, F c) {
    F r;
    for (int i = 0; i < N; ++i) r.v[i] = std::fma(a.v[i], b.v[i], c.v[i]);
    return r;
  }
  static F fmsub(F a, F b, F c) {
    F r;
    for (int i = 0; i < N; ++i) r.v[i] = std::fma(a.v[i], b.v[i], -c.v[i]);
    return r;
  }
  static F fnmadd(F a, F b, F c) {
    F r;
    for (int i = 0; i < N; ++i) r.v[i] = std::fma(-a.v[i], b.v[i], c.v[i]);
    return r;
  }
  static F min(F a, F b) {
    return map2([](float x, float y) { return x < y ? x : y; }, a, b);
  }
  static F max(F a, F b) {
    return map2([](float x, float y) { return x > y ? x : y; }, a, b);
  }
  static F abs(F a) {
    return map([](float x) { return from_bits(bits(x) & 0x7fffffffu); }, a);
  }
  static F sign(F a) {
    return map([](float x) { return from_bits(bits(x) & 0x80000000u); }, a);
  }
  static F or_(F a, F b) {
    return map2([](float x, float y) { return from_bits(bits(x) | bits(y)); }, a, b);
  }
  static F select(M m, F a, F b) {
    F r;
    for (int i = 0; i < N; ++i) r.v[i] = m.v[i] ? a.v[i] : b.v[i];
    return r;
  }
  static M lt(F a, F b) {
    M m;
    for (int i = 0; i < N; ++i) m.v[i] = a.v[i] < b.v[i];
    return m;
  }
  static F round(F a) {
    return map([](float x) { return std::nearbyint(x); }, a);
  }
  static I cvt(F a) {
    I r;
    for (int i = 0; i < N; ++i) {
      const float x = a.v[i];
      r.v[i] = (x >= -2147483648.f && x < 2147483648.f) ? static_cast<int32_t>(x) : INT32_MIN;
    }
    return r;
  }
  static I srai1(I a) {
    for (auto& v : a.v) v = v >> 1;
    return a;
  }
  static I sub_i(I a, I b) {
    for (int i = 0; i < N; ++i)
      a.v[i] = static_cast<int32_t>(static_cast<uint32_t>(a.v[i]) - static_cast<uint32_t>(b.v[i]));
    return a;
  }
  static F pow2(I n) {
    F r;
    for (int i = 0; i < N; ++i) r.v[i] = from_bits((static_cast<uint32_t>(n.v[i]) + 127u) << 23);
    return r;
  }
  static float reduce_add(F a) {
    float s = 0.f;
    for (float v : a.v) s += v;
    return s;
  }
  static float reduce_max(F a) {
    float s = a.v[0];
    for (int i = 1; i < N; ++i) s = s > a.v[i] ? s : a.v[i];
    return s;
  }
  static bool any(M m) {
    for (bool b : m.v)
      if (b) return true;
    return false;
  }
  static M key_mask(const int32_t* p) {
    M m;
    for (int i = 0; i < N; ++i) m.v[i] = p[i] != 0;
    return m;
  }
  static M key_mask_tail(const int32_t* p, M t) {
    M m;
    for (int i = 0; i < N; ++i) m.v[i] = t.v[i] && p[i] != 0;
    return m;
  }
};
using Emu16 = Emu<16>;

// ---- the variants under test ---------------------------------------------------------------------
enum class Variant { kAvx2, kAvx512, kEmu16 };

const char* variant_name(Variant v) {
  switch (v) {
    case Variant::kAvx2:
      return "avx2";
    case Variant::kAvx512:
      return "avx512";
    case Variant::kEmu16:
      return "emu16";
  }
  return "?";
}

const CpuKernels& emu16_kernels() {
  static const CpuKernels k{CpuIsa::kScalar,
                            [](const LayerNormArgs& a) { simd::layernorm_all<Emu16>(a); },
                            [](const SoftmaxMaskedArgs& a) { simd::softmax_all<Emu16>(a); },
                            [](const ActivationArgs& a) { simd::activation_all<Emu16>(a); },
                            [](const EmbedArgs& a) { simd::embed_all<Emu16>(a); },
                            convert_f16_to_f32_ref,
                            convert_bf16_to_f32_ref,
                            convert_f32_to_f16_ref,
                            convert_f32_to_bf16_ref};
  return k;
}

// detect_cpu_isa() honours BERT_CPU_ISA, so BERT_CPU_ISA=avx2 limits the run to the AVX2 variants.
bool isa_usable(CpuIsa isa) { return static_cast<int>(detect_cpu_isa()) >= static_cast<int>(isa); }

class KernelTest : public ::testing::TestWithParam<Variant> {
 protected:
  void SetUp() override {
    const Variant v = GetParam();
    if (v == Variant::kAvx2 && !isa_usable(CpuIsa::kAvx2)) {
      GTEST_SKIP() << "AVX2+FMA+F16C not available (CPU: " << cpu_isa_name(cpu_isa_supported())
                   << ", BERT_CPU_ISA limit: " << cpu_isa_name(detect_cpu_isa()) << ")";
    }
    if (v == Variant::kAvx512 && !isa_usable(CpuIsa::kAvx512)) {
      GTEST_SKIP() << "AVX-512 F/BW/DQ/VL not available (CPU: " << cpu_isa_name(cpu_isa_supported())
                   << ", BERT_CPU_ISA limit: " << cpu_isa_name(detect_cpu_isa()) << ")";
    }
  }
  const CpuKernels& k() const {
    switch (GetParam()) {
      case Variant::kAvx2:
        return cpu_kernels(CpuIsa::kAvx2);
      case Variant::kAvx512:
        return cpu_kernels(CpuIsa::kAvx512);
      case Variant::kEmu16:
        break;
    }
    return emu16_kernels();
  }
};

std::string param_name(const ::testing::TestParamInfo<Variant>& info) { return variant_name(info.param); }

const int64_t kSizes[] = {1, 3, 7, 15, 16, 17, 31, 32, 33, 63, 64, 65, 127, 128, 129, 768, 1000};

// ---- comparison helpers --------------------------------------------------------------------------
// Not all zeros and no NaN.
void expect_sane(const std::vector<float>& v, const std::string& what) {
  bool nonzero = false;
  size_t nans = 0;
  for (float x : v) {
    if (std::isnan(x)) ++nans;
    if (x != 0.f) nonzero = true;
  }
  EXPECT_TRUE(nonzero) << what << ": output is all zeros";
  EXPECT_EQ(nans, 0u) << what << ": output has NaNs";
}

// Every |got - want| <= atol + rtol*|want|; returns the max abs error seen.
double expect_close(const std::vector<float>& got, const std::vector<float>& want, double atol, double rtol,
                    const std::string& what) {
  EXPECT_EQ(got.size(), want.size());
  size_t bad = 0, first = 0;
  double worst = 0.0;
  for (size_t i = 0; i < got.size() && i < want.size(); ++i) {
    const double g = got[i], w = want[i];
    const double d = std::fabs(g - w);
    if (d > worst) worst = d;
    if (!(d <= atol + rtol * std::fabs(w))) {
      if (bad++ == 0) first = i;
    }
  }
  EXPECT_EQ(bad, 0u) << what << ": " << bad << " elements out of tolerance; first at " << first << " got " << got[first]
                     << " want " << want[first] << " (max abs err " << worst << ")";
  expect_sane(got, what);
  return worst;
}

// ================================ LayerNorm =======================================================
TEST(LayerNormRef, HandComputed) {
  std::vector<float> x = {1, 2, 3, 4}, g = {1, 1, 1, 1}, b = {0, 0, 0, 0}, y(4);
  LayerNormArgs a{x.data(), nullptr, g.data(), b.data(), y.data(), 1, 4};
  layernorm_f32_ref(a);
  const double want[4] = {-1.3416407864998738, -0.4472135954999579, 0.4472135954999579, 1.3416407864998738};
  for (int i = 0; i < 4; ++i) EXPECT_NEAR(y[i], want[i], 1e-6) << i;
  // x + residual = [1,2,3,4] + 10, gamma/beta applied, in place on the residual.
  std::vector<float> x2 = {-9, -8, -7, -6}, r2 = {10, 10, 10, 10}, g2 = {2, 1, 0.5f, -1}, b2 = {0.5f, 0, 1, 0};
  LayerNormArgs a2{x2.data(), r2.data(), g2.data(), b2.data(), r2.data(), 1, 4};
  layernorm_f32_ref(a2);
  for (int i = 0; i < 4; ++i) EXPECT_NEAR(r2[i], want[i] * g2[i] + b2[i], 1e-6) << i;
  // One column: the centred value is 0, the output is beta.
  std::vector<float> x3 = {5}, g3 = {3}, b3 = {0.25f}, y3(1);
  layernorm_f32_ref({x3.data(), nullptr, g3.data(), b3.data(), y3.data(), 1, 1});
  EXPECT_EQ(y3[0], 0.25f);
}

TEST_P(KernelTest, LayerNormMatchesRef) {
  double worst = 0.0;
  for (int64_t cols : kSizes) {
    for (int64_t rows : {1, 4, 37}) {
      const size_t n = static_cast<size_t>(rows * cols);
      const auto x = random_floats(n, 1000 + static_cast<uint32_t>(cols), -2.f, 2.f);
      const auto r = random_floats(n, 2000 + static_cast<uint32_t>(cols), -1.f, 1.f);
      const auto g = random_floats(static_cast<size_t>(cols), 3000, 0.5f, 1.5f);
      const auto b = random_floats(static_cast<size_t>(cols), 4000, -0.5f, 0.5f);
      for (int mode = 0; mode < 5; ++mode) {
        // 0: out of place; 1: in place on x; 2: residual, out of place; 3: residual, y = x; 4: y = residual
        const bool with_res = mode >= 2;
        std::vector<float> xw = x, rw = r, yw(n, -7.f), xr = x, rr = r, yr(n, -7.f);
        auto make = [&](std::vector<float>& xv, std::vector<float>& rv, std::vector<float>& yv) {
          float* y = mode == 1 || mode == 3 ? xv.data() : mode == 4 ? rv.data() : yv.data();
          return LayerNormArgs{xv.data(), with_res ? rv.data() : nullptr, g.data(), b.data(), y, rows, cols};
        };
        const LayerNormArgs got_args = make(xw, rw, yw), want_args = make(xr, rr, yr);
        k().layernorm(got_args);
        layernorm_f32_ref(want_args);
        const std::vector<float> got(got_args.y, got_args.y + n), want(want_args.y, want_args.y + n);
        const std::string what = "layernorm rows=" + std::to_string(rows) + " cols=" + std::to_string(cols) +
                                 " mode=" + std::to_string(mode);
        worst = std::max(worst, expect_close(got, want, 4e-6, 4e-6, what));
        if (HasFailure()) return;
      }
    }
  }
  std::cout << "[ info ] layernorm " << variant_name(GetParam()) << " max abs err " << worst << "\n";
}

// ================================ masked softmax ==================================================
TEST(SoftmaxMaskedRef, HandComputed) {
  // Mask the last key; scale 1.
  std::vector<float> s = {1, 2, 3, 4, 0.5f, 1.0f, 1.5f, 2.0f};
  std::vector<int32_t> mask = {1, 1, 1, 0, 1, 1, 1, 1};
  SoftmaxMaskedArgs a{s.data(), mask.data(), 2, 1, 1, 4, 1.f};
  softmax_masked_f32_ref(a);
  EXPECT_NEAR(s[0], 0.09003057317038046, 1e-7);
  EXPECT_NEAR(s[1], 0.24472847105479764, 1e-7);
  EXPECT_NEAR(s[2], 0.6652409557748218, 1e-7);
  EXPECT_EQ(s[3], 0.f);
  // Second batch row: no key masked, scale 2 applied -> softmax([0.5, 1, 1.5, 2]).
  std::vector<float> s2 = {0.25f, 0.5f, 0.75f, 1.0f};
  softmax_masked_f32_ref({s2.data(), nullptr, 1, 1, 1, 4, 2.f});
  const double want[4] = {0.1015363240915518, 0.16740509727844333, 0.27600434470659363, 0.45505423392341127};
  for (int i = 0; i < 4; ++i) EXPECT_NEAR(s2[i], want[i], 1e-7) << i;
  for (int i = 0; i < 4; ++i) EXPECT_NEAR(s[4 + i], want[i], 1e-7) << i;  // batch 1 of the first call
}

TEST(SoftmaxMaskedRef, FullyMaskedRowIsUniform) {
  std::vector<float> s = {3, -1, 7, 0.5f, 2};
  std::vector<int32_t> mask = {0, 0, 0, 0, 0};
  softmax_masked_f32_ref({s.data(), mask.data(), 1, 1, 1, 5, 0.125f});
  for (float p : s) EXPECT_FLOAT_EQ(p, 0.2f);
}

TEST_P(KernelTest, SoftmaxMaskedMatchesRef) {
  double worst = 0.0;
  std::mt19937 rng(77);
  for (int64_t k_len : kSizes) {
    for (int shape = 0; shape < 3; ++shape) {
      const int64_t batch = shape == 0 ? 1 : 3, heads = shape == 2 ? 4 : 2, q_len = shape == 0 ? 1 : 5;
      for (int mask_mode = 0; mask_mode < 2; ++mask_mode) {
        for (float scale : {1.f, 0.125f}) {
          const size_t n = static_cast<size_t>(batch * heads * q_len * k_len);
          const auto s = random_floats(n, 500 + static_cast<uint32_t>(k_len * 7 + shape), -8.f, 8.f);
          std::vector<int32_t> mask(static_cast<size_t>(batch * k_len), 1);
          if (mask_mode == 1) {
            for (int64_t b = 0; b < batch; ++b) {
              // Batch 0: padded tail (random valid length >= 1, with a hole); batch 1: fully masked
              // (when k_len > 1 so the output stays non-trivial); others: random holes.
              int64_t valid = 1 + static_cast<int64_t>(rng() % static_cast<uint32_t>(k_len));
              for (int64_t k = 0; k < k_len; ++k) {
                int32_t m = k < valid ? 1 : 0;
                if (b == 0 && k == valid / 2 && valid > 2) m = 0;
                if (b == 1 && k_len > 1) m = 0;
                if (b >= 2) m = (rng() % 3) != 0 ? static_cast<int32_t>(rng() % 5 + 1) : 0;
                mask[static_cast<size_t>(b * k_len + k)] = m;
              }
            }
          }
          std::vector<float> got = s, want = s;
          const int32_t* mp = mask_mode ? mask.data() : nullptr;
          k().softmax_masked({got.data(), mp, batch, heads, q_len, k_len, scale});
          softmax_masked_f32_ref({want.data(), mp, batch, heads, q_len, k_len, scale});
          const std::string what = "softmax k_len=" + std::to_string(k_len) + " shape=" + std::to_string(shape) +
                                   " mask=" + std::to_string(mask_mode) + " scale=" + std::to_string(scale);
          worst = std::max(worst, expect_close(got, want, 1e-7, 3e-6, what));
          // Masked keys are exactly zero (unless the whole row is masked); each row sums to 1.
          const int64_t per_b = heads * q_len;
          for (int64_t row = 0; row < batch * per_b; ++row) {
            const int32_t* m = mp ? mp + (row / per_b) * k_len : nullptr;
            bool any = m == nullptr;
            for (int64_t kk = 0; m && kk < k_len; ++kk) any = any || m[kk] != 0;
            double sum = 0.0;
            for (int64_t kk = 0; kk < k_len; ++kk) {
              const float p = got[static_cast<size_t>(row * k_len + kk)];
              sum += p;
              if (m && any && m[kk] == 0) {
                ASSERT_EQ(p, 0.f) << what << " row " << row << " key " << kk;
              }
              if (!any) {
                ASSERT_NEAR(p, 1.0 / static_cast<double>(k_len), 1e-7) << what << " (fully masked)";
              }
            }
            ASSERT_NEAR(sum, 1.0, 2e-6) << what << " row " << row;
          }
          if (HasFailure()) return;
        }
      }
    }
  }
  std::cout << "[ info ] softmax " << variant_name(GetParam()) << " max abs err " << worst << "\n";
}

TEST_P(KernelTest, SoftmaxScaleAndInfinities) {
  // Scale is applied before the softmax, and -inf scores (pre-masked) give exactly 0.
  std::vector<float> s = {0.25f, 0.5f, 0.75f, 1.0f, -std::numeric_limits<float>::infinity()};
  k().softmax_masked({s.data(), nullptr, 1, 1, 1, 5, 2.f});
  const double want[4] = {0.1015363240915518, 0.16740509727844333, 0.27600434470659363, 0.45505423392341127};
  for (int i = 0; i < 4; ++i) EXPECT_NEAR(s[i], want[i], 1e-7) << i;
  EXPECT_EQ(s[4], 0.f);
  // A fully masked row of 37 keys: uniform.
  std::vector<float> u = random_floats(37, 9);
  std::vector<int32_t> none(37, 0);
  k().softmax_masked({u.data(), none.data(), 1, 1, 1, 37, 1.f});
  for (float p : u) EXPECT_FLOAT_EQ(p, 1.f / 37.f);
}

// ================================ activations =====================================================
double gelu_erf_exact(double x) { return 0.5 * x * std::erfc(-x / std::sqrt(2.0)); }
double gelu_erf_naive(double x) { return 0.5 * x * (1.0 + std::erf(x / std::sqrt(2.0))); }
double gelu_tanh_naive(double x) {
  return 0.5 * x * (1.0 + std::tanh(std::sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x)));
}

TEST(ActivationRef, HandComputed) {
  auto run = [](Activation kind, float x) {
    float v = x;
    activation_f32_ref({&v, 1, kind});
    return v;
  };
  EXPECT_NEAR(run(Activation::kGeluErf, 1.f), 0.8413447460685429, 1e-7);
  EXPECT_NEAR(run(Activation::kGeluTanh, 1.f), 0.8411919906082768, 1e-7);
  EXPECT_NEAR(run(Activation::kGeluQuick, 1.f), 0.8457957659328212, 1e-7);
  EXPECT_NEAR(run(Activation::kTanh, 1.f), 0.7615941559557649, 1e-7);
  EXPECT_NEAR(run(Activation::kGeluErf, -3.f), -0.004049694094890287, 1e-9);
  EXPECT_EQ(run(Activation::kRelu, -2.f), 0.f);
  EXPECT_EQ(run(Activation::kRelu, 2.5f), 2.5f);
  EXPECT_EQ(run(Activation::kIdentity, -1.25f), -1.25f);
  EXPECT_TRUE(std::signbit(run(Activation::kGeluErf, -0.f)));
  EXPECT_EQ(run(Activation::kGeluErf, -std::numeric_limits<float>::infinity()), 0.f);
  EXPECT_TRUE(std::isnan(run(Activation::kGeluTanh, std::nanf(""))));
  EXPECT_STREQ(activation_name(Activation::kGeluErf), "gelu");
  EXPECT_STREQ(activation_name(Activation::kGeluTanh), "gelu_new");
  EXPECT_STREQ(activation_name(Activation::kGeluQuick), "quick_gelu");
  EXPECT_STREQ(activation_name(Activation::kRelu), "relu");
  EXPECT_STREQ(activation_name(Activation::kTanh), "tanh");
  EXPECT_STREQ(activation_name(Activation::kIdentity), "identity");
  // The cancellation-free ref equals the textbook formulas where those are accurate.
  for (double x = -5.0; x <= 5.0; x += 0.37) {
    EXPECT_NEAR(gelu_erf_exact(x), gelu_erf_naive(x), 1e-15);
    float v = static_cast<float>(x);
    activation_f32_ref({&v, 1, Activation::kGeluTanh});
    EXPECT_NEAR(v, gelu_tanh_naive(static_cast<float>(x)), 1e-6 * std::fabs(v) + 1e-12);
  }
}

const Activation kAllActivations[] = {Activation::kIdentity,  Activation::kGeluErf, Activation::kGeluTanh,
                                      Activation::kGeluQuick, Activation::kRelu,    Activation::kTanh};

TEST_P(KernelTest, ActivationMatchesRef) {
  for (Activation kind : kAllActivations) {
    double worst_rel = 0.0;
    for (int64_t n : {int64_t{1}, int64_t{3}, int64_t{7}, int64_t{15}, int64_t{16}, int64_t{17}, int64_t{31},
                      int64_t{32}, int64_t{33}, int64_t{63}, int64_t{64}, int64_t{65}, int64_t{127}, int64_t{128},
                      int64_t{129}, int64_t{768}, int64_t{1000}, int64_t{40000}, int64_t{98309}}) {
      auto x = random_floats(static_cast<size_t>(n), 42 + static_cast<uint32_t>(n), -6.f, 6.f);
      x[0] = 0.5f + std::fabs(x[0]);  // so that even relu of one element is not all zeros
      std::vector<float> got = x, want = x;
      k().activation({got.data(), n, kind});
      activation_f32_ref({want.data(), n, kind});
      const std::string what = std::string(activation_name(kind)) + " n=" + std::to_string(n);
      expect_close(got, want, 1e-30, 2e-6, what);
      for (size_t i = 0; i < got.size(); ++i) {
        if (want[i] != 0.f)
          worst_rel = std::max(worst_rel, std::fabs(double(got[i]) - want[i]) / std::fabs(double(want[i])));
      }
      if (HasFailure()) return;
    }
    std::cout << "[ info ] " << activation_name(kind) << " " << variant_name(GetParam()) << " max rel err vs ref "
              << worst_rel << "\n";
  }
}

TEST_P(KernelTest, ActivationEdgeCases) {
  const float inf = std::numeric_limits<float>::infinity();
  const std::vector<float> edge = {0.f,      -0.f,   inf,     -inf,   std::nanf(""), -std::nanf(""), FLT_MAX,
                                   -FLT_MAX, 1e-40f, -1e-40f, 1e-30f, -1e-30f,       1e10f,          -1e10f,
                                   88.f,     -88.f,  20.f,    -20.f,  15.f,          -15.f,          9.f,
                                   -9.f,     1e-4f,  -1e-4f,  0.75f,  -0.75f,        0.7499999f,     -0.7500001f};
  for (Activation kind : kAllActivations) {
    std::vector<float> got = edge, want = edge;
    k().activation({got.data(), static_cast<int64_t>(got.size()), kind});
    activation_f32_ref({want.data(), static_cast<int64_t>(want.size()), kind});
    for (size_t i = 0; i < edge.size(); ++i) {
      const std::string what = std::string(activation_name(kind)) + "(" + std::to_string(edge[i]) + ")";
      if (std::isnan(want[i])) {
        EXPECT_TRUE(std::isnan(got[i])) << what << " got " << got[i];
        continue;
      }
      EXPECT_EQ(std::signbit(got[i]), std::signbit(want[i])) << what << " got " << got[i] << " want " << want[i];
      if (std::isinf(want[i]) || want[i] == 0.f) {
        EXPECT_EQ(got[i], want[i]) << what;
      } else {
        EXPECT_NEAR(got[i], want[i], 2e-6 * std::fabs(want[i]) + 1e-44) << what;
      }
    }
  }
}

// Elementwise ops use the same sequence of correctly rounded operations in every variant, so the
// outputs must be bitwise identical to the portable emulation (this is what vouches for AVX-512 code
// paths on machines that lack AVX-512: emu16 runs the same bodies at the same width).
TEST_P(KernelTest, ActivationBitwiseEqualToEmulation) {
  std::vector<float> x = random_floats(4099, 5, -12.f, 12.f);
  const auto wide = random_floats(1000, 6, -100.f, 100.f);
  x.insert(x.end(), wide.begin(), wide.end());
  for (Activation kind : kAllActivations) {
    std::vector<float> got = x, emu = x;
    k().activation({got.data(), static_cast<int64_t>(got.size()), kind});
    emu16_kernels().activation({emu.data(), static_cast<int64_t>(emu.size()), kind});
    size_t diff = 0;
    for (size_t i = 0; i < x.size(); ++i) diff += std::memcmp(&got[i], &emu[i], 4) != 0;
    EXPECT_EQ(diff, 0u) << activation_name(kind);
  }
}

// Accuracy of the vector erf-GELU / tanh-GELU / quick-GELU / tanh against double precision on a dense
// sweep of [-10, 10] plus extremes. Reports the measured maxima.
struct AccuracyStats {
  double max_rel = 0.0;      // where |ref| > 1e-6
  double max_rel_all = 0.0;  // where |ref| > FLT_MIN (normal results)
  double max_abs_small = 0.0;
  double worst_x = 0.0;
};

AccuracyStats measure(const CpuKernels& k, Activation kind, double (*exact)(double)) {
  std::vector<float> x;
  for (int i = -200000; i <= 200000; ++i) x.push_back(static_cast<float>(i * 5e-5));
  for (float v : {1e-38f, -1e-38f, 1e-20f, -1e-20f, 1e-7f, -1e-7f, 30.f, -30.f, 50.f, -50.f, 1e5f, -1e5f})
    x.push_back(v);
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> d(-14.f, 14.f);
  for (int i = 0; i < 100000; ++i) x.push_back(d(rng));
  std::vector<float> y = x;
  k.activation({y.data(), static_cast<int64_t>(y.size()), kind});
  AccuracyStats s;
  for (size_t i = 0; i < x.size(); ++i) {
    const double want = exact(x[i]);
    const double err = std::fabs(double(y[i]) - want);
    if (std::fabs(want) > 1e-6) {
      if (err / std::fabs(want) > s.max_rel) {
        s.max_rel = err / std::fabs(want);
        s.worst_x = x[i];
      }
    } else {
      s.max_abs_small = std::max(s.max_abs_small, err);
    }
    if (std::fabs(want) > FLT_MIN) s.max_rel_all = std::max(s.max_rel_all, err / std::fabs(want));
  }
  return s;
}

double gelu_tanh_exact(double x) {
  return x / (1.0 + std::exp(-2.0 * std::sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x)));
}
double gelu_quick_exact(double x) { return x / (1.0 + std::exp(-1.702 * x)); }
double tanh_exact(double x) { return std::tanh(x); }

TEST_P(KernelTest, ActivationAccuracy) {
  struct Case {
    Activation kind;
    double (*exact)(double);
  };
  for (const Case& c : {Case{Activation::kGeluErf, gelu_erf_exact}, Case{Activation::kGeluTanh, gelu_tanh_exact},
                        Case{Activation::kGeluQuick, gelu_quick_exact}, Case{Activation::kTanh, tanh_exact}}) {
    const AccuracyStats s = measure(k(), c.kind, c.exact);
    std::cout << "[ info ] " << variant_name(GetParam()) << " " << activation_name(c.kind) << ": max rel err "
              << s.max_rel << " (|ref|>1e-6, worst at x=" << s.worst_x << "), " << s.max_rel_all
              << " (all normal results), max abs err where |ref|<=1e-6: " << s.max_abs_small << "\n";
    EXPECT_LE(s.max_rel, 2e-6) << activation_name(c.kind) << " worst at x=" << s.worst_x;
    EXPECT_LE(s.max_rel_all, 2e-6) << activation_name(c.kind);
    EXPECT_LE(s.max_abs_small, 1e-7) << activation_name(c.kind);
  }
  // The brief's textbook formula agrees wherever it is itself accurate (|ref| > 1e-6).
  const AccuracyStats naive = measure(k(), Activation::kGeluErf, gelu_erf_naive);
  EXPECT_LE(naive.max_rel, 2e-6);
}

// The linear layers' fast GELU epilogue (kernels/activation.h): bitwise equal to its scalar reference in
// every variant, within 3e-7 * max(1, |x|) of the exact GELU, and the documented special values.
TEST_P(KernelTest, GeluErfFast) {
  void (*fast)(const float*, float*, int64_t) = GetParam() == Variant::kAvx2     ? gelu_erf_fast_f32_avx2
                                                : GetParam() == Variant::kAvx512 ? gelu_erf_fast_f32_avx512
                                                                                 : [](const float* x, float* y, int64_t n) {
                                                                                     simd::gelu_erf_fast_span<Emu16>(x, y, n);
                                                                                   };
  double worst = 0.0, worst_x = 0.0;
  std::vector<int64_t> sizes(std::begin(kSizes), std::end(kSizes));
  sizes.push_back(40001);
  for (int64_t n : sizes) {
    auto x = random_floats(static_cast<size_t>(n), 77 + static_cast<uint32_t>(n), -12.f, 12.f);
    if (n == 40001)  // a dense sweep of [-12, 12]
      for (int64_t i = 0; i < n; ++i) x[size_t(i)] = -12.f + 24.f * float(i) / float(n - 1);
    x[0] = 0.25f + std::fabs(x[0]);
    std::vector<float> got = x, want = x, out(x.size(), -5.f), out_ref(x.size(), -5.f);
    fast(got.data(), got.data(), n);
    gelu_erf_fast_f32_ref(want.data(), want.data(), n);
    fast(x.data(), out.data(), n);  // out of place: the same bits
    gelu_erf_fast_f32_ref(x.data(), out_ref.data(), n);
    ASSERT_EQ(std::memcmp(out.data(), want.data(), sizeof(float) * size_t(n)), 0) << "out of place, n=" << n;
    ASSERT_EQ(std::memcmp(out_ref.data(), want.data(), sizeof(float) * size_t(n)), 0) << "reference out of place";
    for (int64_t i = 0; i < n; ++i) {
      ASSERT_EQ(std::memcmp(&got[size_t(i)], &want[size_t(i)], sizeof(float)), 0)
          << "x=" << x[size_t(i)] << " got " << got[size_t(i)] << " ref " << want[size_t(i)];
      const double xi = x[size_t(i)], err = std::fabs(double(got[size_t(i)]) - gelu_erf_exact(xi));
      if (err / std::max(1.0, std::fabs(xi)) > worst) worst = err / std::max(1.0, std::fabs(xi)), worst_x = xi;
    }
    expect_sane(got, "gelu_erf_fast n=" + std::to_string(n));
  }
  std::cout << "[ info ] gelu_erf_fast " << variant_name(GetParam()) << ": max |error| / max(1, |x|) " << worst
            << " at x=" << worst_x << "\n";
  EXPECT_LE(worst, 3e-7) << "at x=" << worst_x;
  const float inf = std::numeric_limits<float>::infinity();
  std::vector<float> edge = {-inf, inf, std::nanf(""), 0.f, -0.f, FLT_MAX, -FLT_MAX, 1e-40f, -7.f, 7.f};
  fast(edge.data(), edge.data(), static_cast<int64_t>(edge.size()));
  EXPECT_EQ(edge[0], 0.f);
  EXPECT_TRUE(std::signbit(edge[0])) << "gelu(-inf) is -0";
  EXPECT_EQ(edge[1], inf);
  EXPECT_TRUE(std::isnan(edge[2]));
  EXPECT_EQ(edge[3], 0.f);
  EXPECT_EQ(edge[5], FLT_MAX);
  EXPECT_LE(std::fabs(edge[6]), 3e-7f * 8.f);
  EXPECT_NEAR(edge[8], gelu_erf_exact(-7.0), 3e-7 * 7);
  EXPECT_NEAR(edge[9], 7.f, 3e-7 * 7);
}

// Direct accuracy of the vector exp / erfc / tanh bodies (through the portable emulation, which is
// bitwise identical to the SIMD variants).
TEST(VectorMath, ExpErfcTanhAccuracy) {
  using V = Emu16;
  double exp_rel = 0.0, exp_worst = 0.0, erfc_rel = 0.0, tanh_rel = 0.0;
  std::mt19937 rng(11);
  std::uniform_real_distribution<float> d(-103.f, 88.7f);
  std::vector<float> xs;
  for (int i = 0; i < 400000; ++i) xs.push_back(d(rng));
  for (int i = -20000; i <= 20000; ++i) xs.push_back(i * 1e-4f);
  for (size_t i = 0; i + 16 <= xs.size(); i += 16) {
    V::F x = V::load(&xs[i]), y = simd::exp<V>(x);
    for (int l = 0; l < 16; ++l) {
      const double want = std::exp(double(x.v[l]));
      if (want < FLT_MIN) continue;  // subnormal results: absolute accuracy only
      const double rel = std::fabs(y.v[l] - want) / want;
      if (rel > exp_rel) {
        exp_rel = rel;
        exp_worst = x.v[l];
      }
    }
  }
  // erfc(z) for z in [0, 10.6] through gelu_erf's building blocks: x*Phi(x) for x < 0 is x*erfc(|x|/sqrt2)/2.
  for (int i = 1; i <= 300000; ++i) {
    const float x = -static_cast<float>(i) * 5e-5f;
    V::F xv = V::set1(x), y = simd::gelu_erf<V>(xv);
    const double want = gelu_erf_exact(x);
    if (std::fabs(want) > FLT_MIN) erfc_rel = std::max(erfc_rel, std::fabs(y.v[0] - want) / std::fabs(want));
  }
  for (int i = -200000; i <= 200000; ++i) {
    const float x = static_cast<float>(i) * 5e-5f;
    V::F y = simd::tanh<V>(V::set1(x));
    const double want = std::tanh(double(x));
    if (want != 0.0) tanh_rel = std::max(tanh_rel, std::fabs(y.v[0] - want) / std::fabs(want));
  }
  std::cout << "[ info ] exp max rel err " << exp_rel << " (at " << exp_worst << ", normal results), erfc-based "
            << "gelu(x<0) max rel err " << erfc_rel << ", tanh max rel err " << tanh_rel << "\n";
  EXPECT_LE(exp_rel, 3e-7);
  EXPECT_LE(erfc_rel, 1e-6);
  EXPECT_LE(tanh_rel, 3e-7);
  // Gradual underflow and overflow.
  V::F e = simd::exp<V>(V::set1(-100.f));
  EXPECT_NEAR(e.v[0], std::exp(-100.0), 2e-45);
  EXPECT_EQ(simd::exp<V>(V::set1(89.f)).v[0], std::numeric_limits<float>::infinity());
  EXPECT_EQ(simd::exp<V>(V::set1(-std::numeric_limits<float>::infinity())).v[0], 0.f);
  EXPECT_TRUE(std::isnan(simd::exp<V>(V::set1(std::nanf(""))).v[0]));
}

// ================================ embedding =======================================================
TEST(EmbedRef, HandComputed) {
  // vocab 3, max_pos 2, type_vocab 2, width 4.
  const std::vector<float> word = {0, 0, 0, 0, 1, 2, 3, 4, 10, 20, 30, 40};
  const std::vector<float> pos = {0.5f, 0.5f, 0.5f, 0.5f, 1, 1, 1, 1};
  const std::vector<float> type = {0, 0, 0, 0, 100, 100, 100, 100};
  const std::vector<float> g = {1, 1, 1, 1}, b = {0, 0, 0, 0};
  const std::vector<int32_t> ids = {1, 2}, positions = {0, 1}, types = {1, 0};
  std::vector<float> out(8);
  // Sum only.
  embed_f32_ref({ids.data(), positions.data(), types.data(), word.data(), pos.data(), type.data(), nullptr, nullptr,
                 out.data(), 2, 4});
  const std::vector<float> sum = {101.5f, 102.5f, 103.5f, 104.5f, 11, 21, 31, 41};
  EXPECT_EQ(out, sum);
  // No token types given: row 0 of the type table; no positions: no position row.
  embed_f32_ref(
      {ids.data(), nullptr, nullptr, word.data(), pos.data(), type.data(), nullptr, nullptr, out.data(), 2, 4});
  EXPECT_EQ(out, (std::vector<float>{1, 2, 3, 4, 10, 20, 30, 40}));
  // With LayerNorm: each row is an affine image of [1,2,3,4].
  embed_f32_ref({ids.data(), positions.data(), types.data(), word.data(), pos.data(), type.data(), g.data(), b.data(),
                 out.data(), 2, 4});
  const double want[4] = {-1.3416407864998738, -0.4472135954999579, 0.4472135954999579, 1.3416407864998738};
  for (int i = 0; i < 4; ++i) {
    EXPECT_NEAR(out[i], want[i], 1e-6);
    EXPECT_NEAR(out[4 + i], want[i], 1e-6);
  }
}

TEST_P(KernelTest, EmbedMatchesRef) {
  double worst = 0.0;
  const int64_t vocab = 50, max_pos = 40, type_vocab = 2;
  std::mt19937 rng(99);
  for (int64_t w : kSizes) {
    const auto word = random_floats(static_cast<size_t>(vocab * w), 10, -1.f, 1.f);
    const auto pos = random_floats(static_cast<size_t>(max_pos * w), 11, -0.5f, 0.5f);
    const auto type = random_floats(static_cast<size_t>(type_vocab * w), 12, -0.5f, 0.5f);
    const auto g = random_floats(static_cast<size_t>(w), 13, 0.5f, 1.5f);
    const auto b = random_floats(static_cast<size_t>(w), 14, -0.5f, 0.5f);
    for (int64_t tokens : {1, 5, 37}) {
      std::vector<int32_t> ids(static_cast<size_t>(tokens)), positions(ids.size()), types(ids.size());
      for (int64_t t = 0; t < tokens; ++t) {
        ids[static_cast<size_t>(t)] = static_cast<int32_t>(rng() % vocab);
        positions[static_cast<size_t>(t)] = static_cast<int32_t>(t % max_pos);
        types[static_cast<size_t>(t)] = static_cast<int32_t>(rng() % type_vocab);
      }
      for (int mode = 0; mode < 5; ++mode) {
        // 0: all tables + LN; 1: no token_types (row 0); 2: no type table, no positions; 3: sum only;
        // 4: no position table but positions given.
        EmbedArgs a{ids.data(), positions.data(), types.data(), word.data(), pos.data(), type.data(),
                    g.data(),   b.data(),         nullptr,      tokens,      w};
        if (mode == 1) a.token_types = nullptr;
        if (mode == 2) a.type_table = nullptr, a.positions = nullptr;
        if (mode == 3) a.gamma = nullptr, a.beta = nullptr;
        if (mode == 4) a.position_table = nullptr;
        std::vector<float> got(static_cast<size_t>(tokens * w), -3.f), want(got.size(), -5.f);
        EmbedArgs ga = a, wa = a;
        ga.out = got.data();
        wa.out = want.data();
        k().embed(ga);
        embed_f32_ref(wa);
        const std::string what =
            "embed tokens=" + std::to_string(tokens) + " width=" + std::to_string(w) + " mode=" + std::to_string(mode);
        worst = std::max(worst, expect_close(got, want, 4e-6, 4e-6, what));
        if (HasFailure()) return;
      }
    }
  }
  std::cout << "[ info ] embed " << variant_name(GetParam()) << " max abs err " << worst << "\n";
}

// ================================ conversions =====================================================
// The conversions have no vector-generic body, so only the real ISA variants run.
class ConvertTest : public KernelTest {};
uint32_t bits_of(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
float float_of(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// Independent decoding of an fp16 value (NaN for NaN).
double f16_value(uint16_t h) {
  const int e = (h >> 10) & 0x1f, m = h & 0x3ff;
  const double s = (h & 0x8000) ? -1.0 : 1.0;
  if (e == 31) return m ? std::nan("") : s * INFINITY;
  if (e == 0) return s * std::ldexp(m, -24);
  return s * std::ldexp(1024 + m, e - 25);
}

TEST(ConvertRef, ToF32Exhaustive) {
  std::vector<uint16_t> all(65536);
  for (uint32_t i = 0; i < 65536; ++i) all[i] = static_cast<uint16_t>(i);
  std::vector<float> f16(65536), bf16(65536);
  convert_f16_to_f32_ref(all.data(), f16.data(), 65536);
  convert_bf16_to_f32_ref(all.data(), bf16.data(), 65536);
  for (uint32_t i = 0; i < 65536; ++i) {
    const double want = f16_value(static_cast<uint16_t>(i));
    if (std::isnan(want)) {
      ASSERT_TRUE(std::isnan(f16[i])) << std::hex << i;
    } else {
      ASSERT_EQ(static_cast<double>(f16[i]), want) << std::hex << i;
      ASSERT_EQ(std::signbit(f16[i]), (i & 0x8000) != 0) << std::hex << i;
    }
    ASSERT_EQ(bits_of(bf16[i]), i << 16);
  }
  EXPECT_EQ(f16[0x3c00], 1.f);
  EXPECT_EQ(f16[0x7bff], 65504.f);
  EXPECT_EQ(f16[0x0001], std::ldexp(1.f, -24));
  EXPECT_EQ(f16[0xfc00], -INFINITY);
  EXPECT_EQ(bf16[0x3f80], 1.f);
  EXPECT_EQ(bf16[0xc040], -3.f);
}

std::vector<float> convert_test_inputs() {
  std::vector<float> v = {0.f,
                          -0.f,
                          INFINITY,
                          -INFINITY,
                          std::nanf(""),
                          -std::nanf(""),
                          float_of(0x7f800001u),
                          float_of(0xff800001u),
                          float_of(0x7fa00000u),
                          float_of(0x7fbfffffu),
                          FLT_MAX,
                          -FLT_MAX,
                          FLT_MIN,
                          -FLT_MIN,
                          1e-40f,
                          -1e-40f,
                          float_of(1u),
                          65504.f,
                          65519.f,
                          65519.99f,
                          65520.f,
                          -65520.f,
                          65536.f,
                          1e6f,
                          std::ldexp(1.f, -24),
                          std::ldexp(1.f, -25),
                          -std::ldexp(1.f, -25),
                          std::nextafter(std::ldexp(1.f, -25), 1.f),
                          std::ldexp(3.f, -25),
                          std::ldexp(5.f, -25),
                          std::ldexp(1.f, -14),
                          std::nextafter(std::ldexp(1.f, -14), 0.f),
                          std::ldexp(1023.5f, -24),
                          1.f + std::ldexp(1.f, -11),
                          1.f + std::ldexp(3.f, -11),
                          1.f + std::ldexp(1.f, -8),
                          1.f + std::ldexp(3.f, -8),
                          1.f + std::ldexp(1.f, -9),
                          3.f,
                          -2.5f,
                          0.1f,
                          1.f / 3.f,
                          float_of(0x3f808000u),
                          float_of(0x3f818000u),
                          float_of(0x7f7f8000u),
                          float_of(0x7f7fffffu)};
  std::mt19937 rng(1234);
  for (int i = 0; i < 200000; ++i) v.push_back(float_of(rng()));  // every class: NaN, inf, sub/normal
  std::uniform_real_distribution<float> d(-70000.f, 70000.f), s(-1e-4f, 1e-4f);
  for (int i = 0; i < 50000; ++i) v.push_back(d(rng));
  for (int i = 0; i < 50000; ++i) v.push_back(s(rng));
  for (uint32_t i = 0; i < 65536; ++i) {  // exact ties of every fp16 value and its neighbours
    const double a = f16_value(static_cast<uint16_t>(i));
    if (std::isfinite(a)) v.push_back(static_cast<float>(a));
  }
  return v;
}

// The ref's fp16/bf16 rounding is the nearest representable, ties to even (checked against decoding).
TEST(ConvertRef, FromF32RoundsToNearestEven) {
  const auto in = convert_test_inputs();
  std::vector<uint16_t> h(in.size()), b(in.size());
  convert_f32_to_f16_ref(in.data(), h.data(), static_cast<int64_t>(in.size()));
  convert_f32_to_bf16_ref(in.data(), b.data(), static_cast<int64_t>(in.size()));
  auto bf16_value = [](uint16_t x) { return static_cast<double>(float_of(static_cast<uint32_t>(x) << 16)); };
  for (size_t i = 0; i < in.size(); ++i) {
    const float x = in[i];
    if (std::isnan(x)) {
      ASSERT_TRUE(std::isnan(f16_value(h[i]))) << i;
      ASSERT_TRUE(std::isnan(bf16_value(b[i]))) << i;
      continue;
    }
    ASSERT_EQ((h[i] & 0x8000) != 0, std::signbit(x)) << x;
    ASSERT_EQ((b[i] & 0x8000) != 0, std::signbit(x)) << x;
    for (int which = 0; which < 2; ++which) {
      const uint16_t r = which == 0 ? h[i] : b[i];
      auto value = [&](uint16_t q) { return which == 0 ? f16_value(q) : bf16_value(q); };
      const uint16_t inf_bits = which == 0 ? 0x7c00 : 0x7f80;
      const double ax = std::fabs(double(x));
      const uint16_t mag = r & 0x7fff;
      if (mag == inf_bits) {  // overflow: x must be at least halfway past the largest finite value
        const double maxv = value(inf_bits - 1), next = 2 * maxv - value(inf_bits - 2);
        ASSERT_GE(ax, (maxv + next) / 2) << x;
        continue;
      }
      const double v = value(mag);
      const double err = std::fabs(ax - v);
      if (mag > 0) {
        ASSERT_LE(err, std::fabs(ax - value(mag - 1))) << which << " " << x;
      }
      const double up = std::fabs(ax - value(mag + 1));
      ASSERT_LE(err, up) << which << " " << x;
      if (err == up || (mag > 0 && err == std::fabs(ax - value(mag - 1)))) {
        ASSERT_EQ(mag & 1, 0) << which << " tie " << x;
      }
    }
  }
}

TEST_P(ConvertTest, ConvertToF32Exhaustive) {
  for (int64_t n : {int64_t{65536}, int64_t{1}, int64_t{7}, int64_t{17}, int64_t{1000}}) {
    std::vector<uint16_t> all(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) all[static_cast<size_t>(i)] = static_cast<uint16_t>(n == 65536 ? i : i * 977 + 5);
    for (int which = 0; which < 2; ++which) {
      std::vector<float> got(all.size(), -1.f), want(all.size(), -2.f);
      (which == 0 ? k().convert_f16_to_f32 : k().convert_bf16_to_f32)(all.data(), got.data(), n);
      (which == 0 ? convert_f16_to_f32_ref : convert_bf16_to_f32_ref)(all.data(), want.data(), n);
      size_t bad = 0;
      for (size_t i = 0; i < got.size(); ++i) {
        const bool ok = std::isnan(want[i]) ? std::isnan(got[i]) : bits_of(got[i]) == bits_of(want[i]);
        if (!ok && bad++ < 5) ADD_FAILURE() << (which ? "bf16" : "f16") << " 0x" << std::hex << all[i];
      }
      EXPECT_EQ(bad, 0u) << (which ? "bf16" : "f16") << " n=" << n;
      std::vector<float> finite;  // sanity of the outputs for non-NaN inputs
      for (size_t i = 0; i < got.size(); ++i) {
        if (!std::isnan(want[i])) finite.push_back(got[i]);
      }
      expect_sane(finite, "to_f32");
    }
  }
}

TEST_P(ConvertTest, ConvertFromF32BitExact) {
  const auto in = convert_test_inputs();
  for (int64_t n : {static_cast<int64_t>(in.size()), int64_t{1}, int64_t{3}, int64_t{15}, int64_t{16}, int64_t{17},
                    int64_t{33}, int64_t{65}, int64_t{129}, int64_t{1000}}) {
    for (int which = 0; which < 2; ++which) {
      std::vector<uint16_t> got(static_cast<size_t>(n) + 1, 0xabcd), want(static_cast<size_t>(n) + 1, 0xabcd);
      (which == 0 ? k().convert_f32_to_f16 : k().convert_f32_to_bf16)(in.data(), got.data(), n);
      (which == 0 ? convert_f32_to_f16_ref : convert_f32_to_bf16_ref)(in.data(), want.data(), n);
      size_t bad = 0;
      for (int64_t i = 0; i < n; ++i) {
        if (got[static_cast<size_t>(i)] != want[static_cast<size_t>(i)] && bad++ < 5) {
          ADD_FAILURE() << (which ? "bf16" : "f16") << " of " << in[static_cast<size_t>(i)] << " (0x" << std::hex
                        << bits_of(in[static_cast<size_t>(i)]) << "): got 0x" << got[static_cast<size_t>(i)]
                        << " want 0x" << want[static_cast<size_t>(i)];
        }
      }
      EXPECT_EQ(bad, 0u) << (which ? "bf16" : "f16") << " n=" << n;
      EXPECT_EQ(got[static_cast<size_t>(n)], 0xabcd) << "wrote past the end";
      bool nonzero = false;
      for (int64_t i = 0; i < n; ++i) nonzero = nonzero || (got[static_cast<size_t>(i)] & 0x7fff) != 0;
      EXPECT_TRUE(nonzero || n < 16);
    }
  }
}

TEST_P(ConvertTest, ConvertRoundTrip) {
  for (int64_t n : kSizes) {
    const auto x = random_floats(static_cast<size_t>(n), 31 + static_cast<uint32_t>(n), -3.f, 3.f);
    std::vector<uint16_t> h(x.size()), b(x.size());
    std::vector<float> xh(x.size()), xb(x.size());
    k().convert_f32_to_f16(x.data(), h.data(), n);
    k().convert_f16_to_f32(h.data(), xh.data(), n);
    k().convert_f32_to_bf16(x.data(), b.data(), n);
    k().convert_bf16_to_f32(b.data(), xb.data(), n);
    expect_close(xh, x, 1e-7, 1.0 / 2048, "f16 round trip n=" + std::to_string(n));
    expect_close(xb, x, 1e-7, 1.0 / 256, "bf16 round trip n=" + std::to_string(n));
  }
}

// ================================ dispatch ========================================================
TEST(Dispatch, TablesAndDetection) {
  const CpuKernels& s = cpu_kernels(CpuIsa::kScalar);
  EXPECT_EQ(s.isa, CpuIsa::kScalar);
  EXPECT_EQ(s.layernorm, &layernorm_f32_ref);
  EXPECT_EQ(s.softmax_masked, &softmax_masked_f32_ref);
  EXPECT_EQ(s.activation, &activation_f32_ref);
  EXPECT_EQ(s.embed, &embed_f32_ref);
  EXPECT_EQ(s.convert_f32_to_bf16, &convert_f32_to_bf16_ref);
  EXPECT_EQ(cpu_kernels(CpuIsa::kAvx2).layernorm, &layernorm_f32_avx2);
  EXPECT_EQ(cpu_kernels(CpuIsa::kAvx2).isa, CpuIsa::kAvx2);
  EXPECT_EQ(cpu_kernels(CpuIsa::kAvx512).activation, &activation_f32_avx512);
  EXPECT_EQ(cpu_kernels(CpuIsa::kAvx512).isa, CpuIsa::kAvx512);
  EXPECT_STREQ(cpu_isa_name(CpuIsa::kScalar), "scalar");
  EXPECT_STREQ(cpu_isa_name(CpuIsa::kAvx2), "avx2");
  EXPECT_STREQ(cpu_isa_name(CpuIsa::kAvx512), "avx512");
  const CpuIsa det = detect_cpu_isa();
  EXPECT_LE(static_cast<int>(det), static_cast<int>(cpu_isa_supported()));
  EXPECT_EQ(cpu_kernels().isa, det);
  EXPECT_EQ(&cpu_kernels(), &cpu_kernels());
  if (const char* env = std::getenv("BERT_CPU_ISA")) {
    if (std::string(env) == "scalar") {
      EXPECT_EQ(det, CpuIsa::kScalar);
    }
    if (std::string(env) == "avx2") {
      EXPECT_LE(static_cast<int>(det), static_cast<int>(CpuIsa::kAvx2));
    }
  }
  std::cout << "[ info ] CPU supports " << cpu_isa_name(cpu_isa_supported()) << ", using " << cpu_isa_name(det) << "\n";
}

TEST(Dispatch, EnvCanOnlyLower) {
  const char* old = std::getenv("BERT_CPU_ISA");
  const std::string saved = old ? old : "";
  setenv("BERT_CPU_ISA", "scalar", 1);
  EXPECT_EQ(detect_cpu_isa(), CpuIsa::kScalar);
  setenv("BERT_CPU_ISA", "avx512", 1);
  EXPECT_EQ(detect_cpu_isa(), cpu_isa_supported());
  setenv("BERT_CPU_ISA", "avx2", 1);
  EXPECT_EQ(static_cast<int>(detect_cpu_isa()),
            std::min(static_cast<int>(CpuIsa::kAvx2), static_cast<int>(cpu_isa_supported())));
  if (old) {
    setenv("BERT_CPU_ISA", saved.c_str(), 1);
  } else {
    unsetenv("BERT_CPU_ISA");
  }
}

// ================================ the registry's variant list =====================================
// Every registered non-reference forward entry (kernels/registry.h) against its reference entry at
// sizes below, at, above and between SIMD tile edges, random non-zero inputs, per-op/per-dtype
// tolerances element-wise; the output must not be all zero. Entries the CPU cannot run skip, naming the
// missing ISA.
struct Tolerance {
  double atol, rtol;
};
Tolerance tolerance(Op op, DType dtype) {
  if (dtype != DType::kF32) return {0, 0};  // conversions: bit-exact with the ref
  switch (op) {
    case Op::kSoftmaxMasked: return {1e-7, 3e-6};
    case Op::kActivation: return {1e-30, 2e-6};
    case Op::kAttention: return {3e-6, 2e-5};
    default: return {4e-6, 4e-6};
  }
}

// Empty when the output is within tolerance of the reference and not all zero (NaN never matches).
std::string mismatch(const std::vector<float>& got, const std::vector<float>& want, Tolerance t) {
  if (got.size() != want.size()) return "sizes differ";
  size_t bad = 0, first = 0;
  bool nonzero = false;
  for (size_t i = 0; i < got.size(); ++i) {
    nonzero = nonzero || got[i] != 0.f;
    const bool same_nan = std::isnan(got[i]) && std::isnan(want[i]);
    if (!same_nan && !(std::fabs(double(got[i]) - want[i]) <= t.atol + t.rtol * std::fabs(double(want[i]))) &&
        bad++ == 0)
      first = i;
  }
  if (!nonzero) return "output is all zeros";
  if (bad == 0) return "";
  return std::to_string(bad) + " of " + std::to_string(got.size()) + " out of tolerance; first at " +
         std::to_string(first) + ": got " + std::to_string(got[first]) + " want " + std::to_string(want[first]);
}

TEST(RegistryHarness, RejectsZerosNaNsAndErrors) {
  const std::vector<float> want = {0.5f, -2.f, 1e-3f};
  const Tolerance t = tolerance(Op::kLayerNorm, DType::kF32);
  EXPECT_EQ(mismatch(want, want, t), "");
  EXPECT_EQ(mismatch(std::vector<float>(3, 0.f), want, {1e9, 1e9}), "output is all zeros");
  EXPECT_NE(mismatch({0.5f, -2.f, std::nanf("")}, want, {1e9, 1e9}), "");
  EXPECT_NE(mismatch({0.5f, -2.00002f, 1e-3f}, want, t), "");
}

const int64_t kEdgeSizes[] = {1, 3, 7, 8, 9, 15, 16, 17, 24, 31, 32, 33, 48, 63, 64, 65, 127, 128, 129, 768, 1000};

std::vector<std::string> forward_variants() {
  std::vector<std::string> names;
  for (const KernelEntry& e : kernel_registry()) {
    const bool forward = e.op == Op::kLayerNorm || e.op == Op::kSoftmaxMasked || e.op == Op::kActivation ||
                         e.op == Op::kEmbed || e.op == Op::kConvertToF32 || e.op == Op::kConvertFromF32 ||
                         e.op == Op::kAttention || e.op == Op::kPoolTokens;
    if (forward && e.device != Device::kRef) names.push_back(e.name);
  }
  return names;
}

class RegistryVariant : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    e_ = find_kernel(GetParam());
    ASSERT_NE(e_, nullptr);
    ref_ = reference_of(*e_);
    ASSERT_NE(ref_, nullptr) << GetParam() << " has no reference entry";
    if (e_->device == Device::kCuda) GTEST_SKIP() << GetParam() << ": CUDA entries are tested by the CUDA tests";
    if (!isa_usable(e_->isa)) {
      GTEST_SKIP() << GetParam() << " needs " << cpu_isa_name(e_->isa) << "; CPU supports "
                   << cpu_isa_name(cpu_isa_supported()) << ", BERT_CPU_ISA limit " << cpu_isa_name(detect_cpu_isa());
    }
  }
  template <class Args>
  void both(const Args& got, const Args& want) const {
    ASSERT_TRUE(check(got).ok()) << check(got).to_string();
    e_->fn_as<typename OpTraits<Args>::Fn>()(got);
    ref_->fn_as<typename OpTraits<Args>::Fn>()(want);
  }
  void expect_match(const std::vector<float>& got, const std::vector<float>& want, const std::string& what) {
    const std::string m = mismatch(got, want, tolerance(e_->op, e_->dtype));
    EXPECT_EQ(m, "") << GetParam() << " " << what;
  }
  const KernelEntry* e_ = nullptr;
  const KernelEntry* ref_ = nullptr;
};

TEST_P(RegistryVariant, MatchesItsReference) {
  int cases = 0;
  std::mt19937 rng(2024);
  for (int64_t n : kEdgeSizes) {
    const uint32_t seed = 77 + static_cast<uint32_t>(n);
    const std::string what = "size " + std::to_string(n);
    switch (e_->op) {
      case Op::kLayerNorm: {
        for (int64_t rows : {1, 5}) {
          const auto x = random_floats(static_cast<size_t>(rows * n), seed, -2.f, 2.f);
          const auto r = random_floats(x.size(), seed + 1, -1.f, 1.f);
          const auto g = random_floats(static_cast<size_t>(n), seed + 2, 0.5f, 1.5f);
          const auto b = random_floats(static_cast<size_t>(n), seed + 3, -0.5f, 0.5f);
          std::vector<float> got(x.size(), -3.f), want(x.size(), -4.f);
          both(LayerNormArgs{x.data(), r.data(), g.data(), b.data(), got.data(), rows, n},
               LayerNormArgs{x.data(), r.data(), g.data(), b.data(), want.data(), rows, n});
          expect_match(got, want, what);
        }
        break;
      }
      case Op::kSoftmaxMasked: {
        const auto s = random_floats(static_cast<size_t>(2 * 3 * 2 * n), seed, -6.f, 6.f);
        std::vector<int32_t> mask(static_cast<size_t>(2 * n));
        for (auto& m : mask) m = (rng() % 4) != 0;
        mask[0] = 1;
        std::vector<float> got = s, want = s;
        both(SoftmaxMaskedArgs{got.data(), mask.data(), 2, 3, 2, n, 0.125f},
             SoftmaxMaskedArgs{want.data(), mask.data(), 2, 3, 2, n, 0.125f});
        expect_match(got, want, what);
        break;
      }
      case Op::kActivation: {
        for (Activation kind : {Activation::kGeluErf, Activation::kGeluTanh, Activation::kGeluQuick, Activation::kRelu,
                                Activation::kTanh}) {
          auto x = random_floats(static_cast<size_t>(n), seed, -5.f, 5.f);
          x[0] = 0.5f + std::fabs(x[0]);  // relu of a single element is not zero
          std::vector<float> got = x, want = x;
          both(ActivationArgs{got.data(), n, kind}, ActivationArgs{want.data(), n, kind});
          expect_match(got, want, what + " " + activation_name(kind));
        }
        break;
      }
      case Op::kEmbed: {
        const int64_t vocab = 30, tokens = 9;
        const auto word = random_floats(static_cast<size_t>(vocab * n), seed, -1.f, 1.f);
        const auto pos = random_floats(static_cast<size_t>(tokens * n), seed + 1, -0.5f, 0.5f);
        const auto type = random_floats(static_cast<size_t>(2 * n), seed + 2, -0.5f, 0.5f);
        const auto g = random_floats(static_cast<size_t>(n), seed + 3, 0.5f, 1.5f);
        const auto b = random_floats(static_cast<size_t>(n), seed + 4, -0.5f, 0.5f);
        std::vector<int32_t> ids(tokens), positions(tokens), types(tokens);
        for (int64_t t = 0; t < tokens; ++t) {
          ids[size_t(t)] = int32_t(rng() % vocab), positions[size_t(t)] = int32_t(t), types[size_t(t)] = int32_t(t & 1);
        }
        std::vector<float> got(static_cast<size_t>(tokens * n), -1.f), want(got.size(), -2.f);
        EmbedArgs a{ids.data(), positions.data(), types.data(), word.data(), pos.data(), type.data(), g.data(),
                    b.data(),   got.data(),       tokens,       n};
        EmbedArgs w = a;
        w.out = want.data();
        both(a, w);
        expect_match(got, want, what);
        break;
      }
      case Op::kConvertToF32: {
        std::vector<uint16_t> src(static_cast<size_t>(n));
        for (auto& v : src) v = static_cast<uint16_t>(rng());
        std::vector<float> got(src.size() + 1, -1.f), want(src.size() + 1, -1.f);
        ASSERT_TRUE(check(ConvertArgs{src.data(), got.data(), n, true}).ok());
        e_->fn_as<ConvertToF32Fn>()(src.data(), got.data(), n);
        ref_->fn_as<ConvertToF32Fn>()(src.data(), want.data(), n);
        for (size_t i = 0; i < src.size(); ++i) {  // bit-exact (NaN payloads included)
          uint32_t gb, wb;
          std::memcpy(&gb, &got[i], 4), std::memcpy(&wb, &want[i], 4);
          ASSERT_EQ(gb, wb) << GetParam() << " " << what << " element " << i;
        }
        EXPECT_EQ(got.back(), -1.f) << "wrote past the end";
        expect_match(got, want, what);
        break;
      }
      case Op::kConvertFromF32: {
        const auto x = random_floats(static_cast<size_t>(n), seed, -70000.f, 70000.f);
        std::vector<uint16_t> got(x.size() + 1, 0xabcd), want(x.size() + 1, 0xabcd);
        ASSERT_TRUE(check(ConvertArgs{x.data(), got.data(), n, false}).ok());
        e_->fn_as<ConvertFromF32Fn>()(x.data(), got.data(), n);
        ref_->fn_as<ConvertFromF32Fn>()(x.data(), want.data(), n);
        EXPECT_EQ(got, want) << GetParam() << " " << what;
        bool nonzero = false;
        for (int64_t i = 0; i < n; ++i) nonzero = nonzero || (got[size_t(i)] & 0x7fff) != 0;
        EXPECT_TRUE(nonzero) << GetParam() << " " << what << ": all zeros";
        break;
      }
      case Op::kAttention: {
        if (n > 129) break;  // attention_test.cc covers the long sequences and head sizes in depth
        for (int64_t dh : {32, 80}) {
          const int64_t heads = 2, batch = 2, H = heads * dh;
          const auto qkv = random_floats(static_cast<size_t>(batch * n * 3 * H), seed, -2.f, 2.f);
          std::vector<int32_t> mask(static_cast<size_t>(batch * n));
          for (auto& m : mask) m = (rng() % 5) != 0;
          mask[0] = 1;
          std::vector<float> got(static_cast<size_t>(batch * n * H), -1.f), want(got.size(), -2.f);
          AttentionArgs a;
          a.q = qkv.data(), a.k = qkv.data() + H, a.v = qkv.data() + 2 * H, a.ld = 3 * H;
          a.key_mask = mask.data(), a.batch = batch, a.seq = n, a.heads = heads, a.head_dim = dh;
          a.scale = static_cast<float>(1 / std::sqrt(double(dh)));
          AttentionArgs w = a;
          a.out = got.data(), w.out = want.data();
          both(a, w);
          expect_match(got, want, what + " head_dim " + std::to_string(dh));
        }
        break;
      }
      default:
        FAIL() << GetParam() << ": no test case for op " << op_name(e_->op);
    }
    ++cases;
    if (HasFailure()) return;
  }
  std::cout << "[ info ] " << GetParam() << " vs " << ref_->name << ": " << cases << " sizes\n";
}

INSTANTIATE_TEST_SUITE_P(Registry, RegistryVariant, ::testing::ValuesIn(forward_variants()),
                         [](const ::testing::TestParamInfo<std::string>& info) { return info.param; });

// The attention body at 16 lanes through the portable emulation (stands in for AVX-512 where the CPU
// lacks it), against the reference.
TEST(Emu16Attention, MatchesRef) {
  std::mt19937 rng(5);
  for (int64_t seq : {1, 17, 65, 129}) {
    for (int64_t dh : {32, 80}) {
      const int64_t heads = 2, batch = 3, H = heads * dh;
      const auto qkv = random_floats(static_cast<size_t>(batch * seq * 3 * H), 9 + uint32_t(seq), -2.f, 2.f);
      std::vector<int32_t> mask(static_cast<size_t>(batch * seq));
      for (auto& m : mask) m = (rng() % 4) != 0;
      mask[0] = 1;
      for (int64_t j = 0; j < seq; ++j) mask[size_t(seq + j)] = 0;  // sequence 1 fully masked
      std::vector<float> got(static_cast<size_t>(batch * seq * H), -1.f), want(got.size(), -2.f);
      AttentionArgs a;
      a.q = qkv.data(), a.k = qkv.data() + H, a.v = qkv.data() + 2 * H, a.ld = 3 * H;
      a.key_mask = mask.data(), a.batch = batch, a.seq = seq, a.heads = heads, a.head_dim = dh;
      a.scale = static_cast<float>(1 / std::sqrt(double(dh)));
      AttentionArgs w = a;
      a.out = got.data(), w.out = want.data();
      simd::attention_all<Emu16>(a);
      attention_f32_ref(w);
      EXPECT_EQ(mismatch(got, want, tolerance(Op::kAttention, DType::kF32)), "")
          << "seq " << seq << " head_dim " << dh;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Isa, KernelTest, ::testing::Values(Variant::kAvx2, Variant::kAvx512, Variant::kEmu16),
                         param_name);
INSTANTIATE_TEST_SUITE_P(Isa, ConvertTest, ::testing::Values(Variant::kAvx2, Variant::kAvx512), param_name);

}  // namespace
}  // namespace bert::kernels
