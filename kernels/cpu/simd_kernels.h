// Vector-width-generic bodies of the CPU kernels (exp/erfc/tanh approximations, LayerNorm, masked
// softmax, activations, embedding), written once against a small "vector traits" interface V and
// instantiated by layernorm_avx2.cc / *_avx512.cc etc. with their own intrinsic-backed traits.
//
// Everything here sits in an unnamed namespace and is a template over V, so each ISA translation unit
// gets private copies compiled with its own -m flags (no inline function compiled for AVX-512 can be
// picked by the linker for baseline code). Use no std:: inline functions here for the same reason.
//
// A traits type V provides (F = float vector, I = int32 vector, M = lane mask, W = lanes):
//   zero() set1(f) load(p) store(p,v) tail_mask(n<W) load_tail(p,m) (zero-filled) store_tail(p,m,v)
//   add sub mul div fmadd(a,b,c)=a*b+c fmsub(a,b,c)=a*b-c fnmadd(a,b,c)=c-a*b
//   min(a,b) max(a,b) (x86 semantics: b is returned when either is NaN) abs(a) sign(a) (sign bit only)
//   or_(a,b) (bitwise) select(m,a,b) (m ? a : b) lt(a,b) (ordered a<b)
//   round(a) (to nearest even) cvt(a) (float -> int32) srai1(i) sub_i(i,j) pow2(i) (2^i, i normal)
//   reduce_add(v) reduce_max(v) any(m)
//   key_mask(const int32_t*) / key_mask_tail(const int32_t*, m): lanes whose int is nonzero
#pragma once

#include <cstdint>

#if defined(__AVX2__) || defined(__AVX512F__)
#if defined(__AVX512F__) && defined(__GNUC__) && !defined(__clang__)
// GCC 12 false positive: the "undefined" pass-through of _mm512_min_ps & co. (GCC PR105593).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>
#endif

#include "kernels/activation.h"
#include "kernels/embed.h"
#include "kernels/layernorm.h"
#include "kernels/softmax_masked.h"

namespace bert::kernels::simd {
namespace {

// ---- constants ------------------------------------------------------------------------------------
// ln2 split for Cody-Waite range reduction: kLn2Hi has 16 significant bits, so n*kLn2Hi is exact
// for |n| < 256 and s - n*kLn2Hi is exact (Sterbenz) once n = round(s/ln2).
constexpr float kLn2Hi = 0.693145751953125f;
constexpr float kLn2Lo = 1.42860682030941723212e-6f;
constexpr float kLog2e = 1.44269504088896340736f;
constexpr float kInf = __builtin_inff();

// exp(r) = 1 + r + r^2 * P(r) on |r| <= 0.35 (own Chebyshev fit; |error of P| < 6.9e-8, i.e. < 9e-9
// relative in exp).
constexpr float kExpP[5] = {1.39269180559e-3f, 8.36376702329e-3f, 4.16665501627e-2f, 1.66665734239e-1f, 0.5f};

// erfc(z) = t * exp(-z^2 + F(u)), t = 2/(2+z), u = (t - 0.5775)/0.4225 in [-1, 1] for z in [0, 10.9]
// (own Chebyshev fit of F(t) = log(erfc(z)/t) + z^2; |error| < 3.3e-9).
constexpr float kErfcC = 0.5775f;
constexpr float kErfcInvH = 2.36686390532544378698f;
constexpr float kErfcP[12] = {-6.40842668894e-6f, -2.48072676289e-5f, 8.26310616886e-5f, 1.3398763371e-4f,
                              -6.20614297831e-4f, -2.39843746599e-4f, 4.0035642914e-3f,  -1.38126248258e-3f,
                              -3.06580124662e-2f, 1.74603863902e-2f,  5.77826864343e-1f, -5.66576487623e-1f};

// tanh(x) = x + x^3 * Q(x^2) for |x| < 0.75 (own Chebyshev fit; |error of Q| < 6.1e-10).
constexpr float kTanhSmall = 0.75f;
constexpr float kTanhQ[7] = {-6.96533033416e-4f, 3.08992639457e-3f, -8.68471699025e-3f, 2.18357814011e-2f,
                             -5.3965167732e-2f,  1.33333226112e-1f, -3.33333332719e-1f};

// GELU constants, each split hi + lo so the exponent argument is formed to ~2^-40 relative.
constexpr double kSqrt2OverPiD = 0.79788456080286535588;
constexpr float kGeluTanhKHi = static_cast<float>(2.0 * kSqrt2OverPiD);  // 2*sqrt(2/pi)
constexpr float kGeluTanhKLo = static_cast<float>(2.0 * kSqrt2OverPiD - static_cast<double>(kGeluTanhKHi));
constexpr float kGeluTanhCHi = 0.044715f;
constexpr float kGeluTanhCLo = static_cast<float>(0.044715 - static_cast<double>(kGeluTanhCHi));
constexpr float kGeluQuickHi = 1.702f;
constexpr float kGeluQuickLo = static_cast<float>(1.702 - static_cast<double>(kGeluQuickHi));
constexpr float kInvSqrt2 = 0.70710678118654752440f;

template <class V, int N>
inline typename V::F horner(typename V::F x, const float (&c)[N]) {
  typename V::F p = V::set1(c[0]);
  for (int i = 1; i < N; ++i) p = V::fmadd(p, x, V::set1(c[i]));
  return p;
}

// exp(s + e) = y * 2^n with y in [0.7, 1.42], for a float pair (s, e) where e is a small correction
// (|e| < ~2). Splitting off 2^n lets callers multiply by other factors before scaling, so results in
// the subnormal range are rounded only once. NaN survives the clamps (it is max/min's second operand).
template <class V>
struct ExpParts {
  typename V::F y;
  typename V::I n;
};

template <class V>
inline ExpParts<V> exp_parts(typename V::F s, typename V::F e) {
  using F = typename V::F;
  s = V::min(V::set1(100.f), V::max(V::set1(-160.f), s));
  const F nf = V::round(V::mul(s, V::set1(kLog2e)));
  F r = V::fnmadd(nf, V::set1(kLn2Hi), s);  // exact
  r = V::fnmadd(nf, V::set1(kLn2Lo), r);
  r = V::add(r, e);
  const F p = horner<V>(r, kExpP);
  return {V::add(V::fmadd(p, V::mul(r, r), r), V::set1(1.f)), V::cvt(nf)};
}

// v * 2^n for n in [-231, 145], as two normal-range factors (one rounding at most).
template <class V>
inline typename V::F scale2(typename V::F v, typename V::I n) {
  const typename V::I n1 = V::srai1(n);
  return V::mul(V::mul(v, V::pow2(n1)), V::pow2(V::sub_i(n, n1)));
}

// exp(a) for a float vector (a may be +-inf or NaN); ~1 ulp.
template <class V>
inline typename V::F exp(typename V::F a) {
  const ExpParts<V> q = exp_parts<V>(a, V::zero());
  return scale2<V>(q.y, q.n);
}

// exp(a) for a <= 0 (softmax's exp(s - max)): a is clamped at -87 (exp(-87) = 1.6e-38, the normal range,
// so 2^n is one factor), which leaves exp(-inf) at 1.6e-38 rather than 0; NaN stays NaN. ~1 ulp.
template <class V>
inline typename V::F exp_nonpositive(typename V::F a) {
  using F = typename V::F;
  a = V::max(V::set1(-87.f), a);
  const F nf = V::round(V::mul(a, V::set1(kLog2e)));
  F r = V::fnmadd(nf, V::set1(kLn2Hi), a);
  r = V::fnmadd(nf, V::set1(kLn2Lo), r);
  const F y = V::add(V::fmadd(horner<V>(r, kExpP), V::mul(r, r), r), V::set1(1.f));
  return V::mul(y, V::pow2(V::cvt(nf)));
}

// exp(hi + lo) for finite hi, lo, as parts: renormalises the pair (two-sum) so the reduction stays exact.
template <class V>
inline ExpParts<V> exp_hilo_parts(typename V::F hi, typename V::F lo) {
  using F = typename V::F;
  const F s = V::add(hi, lo);
  const F bb = V::sub(s, hi);
  const F err = V::add(V::sub(hi, V::sub(s, bb)), V::sub(lo, bb));
  return exp_parts<V>(s, err);
}

// 0.5x(1+erf(x/sqrt2)) = x * Phi(x), Phi(x) = erfc(-x/sqrt2)/2, with erfc(|x|/sqrt2) computed as
// t*exp(-x^2/2 + F(u)) and x^2 carried exactly as a float pair: no cancellation for x << 0.
template <class V>
inline typename V::F gelu_erf(typename V::F x) {
  using F = typename V::F;
  const F ax = V::min(V::abs(x), V::set1(15.f));  // erfc(15/sqrt2) underflows; NaN -> 15 (x keeps it)
  const F z = V::mul(ax, V::set1(kInvSqrt2));
  const F t = V::div(V::set1(2.f), V::add(V::set1(2.f), z));
  const F u = V::mul(V::sub(t, V::set1(kErfcC)), V::set1(kErfcInvH));
  const F f = horner<V>(u, kErfcP);
  const F p = V::mul(ax, ax);
  const F pe = V::fmsub(ax, ax, p);  // ax^2 = p + pe exactly
  const ExpParts<V> q = exp_hilo_parts<V>(V::mul(p, V::set1(-0.5f)), V::fmadd(pe, V::set1(-0.5f), f));
  const F h = V::mul(V::mul(t, q.y), V::set1(0.5f));  // erfc(|x|/sqrt2)/2 = h * 2^n
  // x < 0: (x*h)*2^n (x clamped like ax: below -15 the result underflows anyway); else x*(1 - h*2^n).
  const auto is_neg = V::lt(x, V::zero());  // NaN and -0 take the second form: NaN, -0
  const F sc = scale2<V>(V::select(is_neg, V::mul(V::max(V::set1(-15.f), x), h), h), q.n);
  return V::select(is_neg, sc, V::mul(x, V::sub(V::set1(1.f), sc)));
}

// x * sigmoid(k|x|) for x >= 0, x * sigmoid(-k|x|) for x < 0, given -(k|x|) as the float pair
// (neg_hi, neg_lo) and |x| clamped to clamp: x/(1+e) or x*e/(1+e) with e = exp(-k|x|) <= 1.
template <class V>
inline typename V::F x_sigmoid(typename V::F x, typename V::F neg_hi, typename V::F neg_lo, float clamp) {
  using F = typename V::F;
  const ExpParts<V> q = exp_hilo_parts<V>(neg_hi, neg_lo);
  const F den = V::add(V::set1(1.f), scale2<V>(q.y, q.n));
  const F neg = scale2<V>(V::div(V::mul(V::max(V::set1(-clamp), x), q.y), den), q.n);
  const F pos = V::div(x, den);
  return V::select(V::lt(x, V::zero()), neg, pos);
}

// 0.5x(1+tanh(u)) = x*sigmoid(2u), 2u = 2*sqrt(2/pi)*(x + 0.044715x^3) (odd in x), formed from |x| in
// float-pair arithmetic (relative error ~2^-40) so that exp(-2u) keeps full accuracy.
template <class V>
inline typename V::F gelu_tanh(typename V::F x) {
  using F = typename V::F;
  constexpr float kClamp = 20.f;  // beyond: sigmoid is 1 or the result underflows
  const F ax = V::min(V::abs(x), V::set1(kClamp));
  const F x2 = V::mul(ax, ax);
  const F x2e = V::fmsub(ax, ax, x2);
  const F x3 = V::mul(x2, ax);
  const F x3e = V::fmadd(x2e, ax, V::fmsub(x2, ax, x3));
  const F ch = V::set1(kGeluTanhCHi);
  const F c3 = V::mul(ch, x3);
  const F c3e = V::fmadd(V::set1(kGeluTanhCLo), x3, V::fmadd(ch, x3e, V::fmsub(ch, x3, c3)));
  const F w = V::add(ax, c3);  // w + we = ax + 0.044715 ax^3
  const F bb = V::sub(w, ax);
  const F we = V::add(V::add(V::sub(ax, V::sub(w, bb)), V::sub(c3, bb)), c3e);
  const F k = V::set1(kGeluTanhKHi);
  const F ah = V::mul(k, w);
  const F al = V::fmadd(V::set1(kGeluTanhKLo), w, V::fmadd(k, we, V::fmsub(k, w, ah)));
  return x_sigmoid<V>(x, V::sub(V::zero(), ah), V::sub(V::zero(), al), kClamp);
}

// x*sigmoid(1.702x)
template <class V>
inline typename V::F gelu_quick(typename V::F x) {
  using F = typename V::F;
  constexpr float kClamp = 100.f;
  const F ax = V::min(V::abs(x), V::set1(kClamp));
  const F ah = V::mul(V::set1(kGeluQuickHi), ax);
  const F al = V::fmadd(V::set1(kGeluQuickLo), ax, V::fmsub(V::set1(kGeluQuickHi), ax, ah));
  return x_sigmoid<V>(x, V::sub(V::zero(), ah), V::sub(V::zero(), al), kClamp);
}

// tanh: odd polynomial near 0, (1-e)/(1+e) with e = exp(-2|x|) beyond; the sign is put back last.
template <class V>
inline typename V::F tanh(typename V::F x) {
  using F = typename V::F;
  const F ax = V::abs(x);
  const F s = V::mul(ax, ax);
  const F small = V::fmadd(V::mul(ax, s), horner<V>(s, kTanhQ), ax);
  const F e = exp<V>(V::mul(V::min(V::set1(10.f), ax), V::set1(-2.f)));  // NaN stays NaN
  const F big = V::div(V::sub(V::set1(1.f), e), V::add(V::set1(1.f), e));
  return V::or_(V::select(V::lt(ax, V::set1(kTanhSmall)), small, big), V::sign(x));
}

// GELU (erf), the epilogue's fast form (kernels/activation.h): x * (1 + erf(x/sqrt2))/2 with the rational
// erf; the same operations, in the same order, as gelu_erf_fast_f32_ref.
template <class V>
inline typename V::F gelu_erf_fast(typename V::F x) {
  using F = typename V::F;
  const F z = V::min(V::set1(4.f), V::max(V::set1(-4.f), V::mul(x, V::set1(kInvSqrt2))));  // NaN stays NaN
  const F t = V::mul(z, z);
  const F e = V::div(V::mul(z, horner<V>(t, kGeluFastErfP)), horner<V>(t, kGeluFastErfQ));
  const F phi = V::fmadd(V::min(V::set1(1.f), V::max(V::set1(-1.f), e)), V::set1(0.5f), V::set1(0.5f));
  return V::mul(V::max(V::set1(-8.f), x), phi);
}

// y[0..n) = gelu(x[0..n)); x == y: in place.
template <class V>
void gelu_erf_fast_span(const float* x, float* y, int64_t n) {
  constexpr int W = V::W;
  int64_t i = 0;
  for (; i + W <= n; i += W) V::store(y + i, gelu_erf_fast<V>(V::load(x + i)));
  if (i < n) {
    const auto m = V::tail_mask(static_cast<int>(n - i));
    V::store_tail(y + i, m, gelu_erf_fast<V>(V::load_tail(x + i, m)));
  }
}

template <class V>
inline typename V::F relu(typename V::F x) {
  return V::select(V::lt(x, V::zero()), V::zero(), x);
}

template <class V, Activation K>
inline typename V::F activate(typename V::F x) {
  if constexpr (K == Activation::kGeluErf)
    return gelu_erf<V>(x);
  else if constexpr (K == Activation::kGeluTanh)
    return gelu_tanh<V>(x);
  else if constexpr (K == Activation::kGeluQuick)
    return gelu_quick<V>(x);
  else if constexpr (K == Activation::kRelu)
    return relu<V>(x);
  else if constexpr (K == Activation::kTanh)
    return tanh<V>(x);
  else
    return x;
}

template <class V, Activation K>
void activation_span_k(float* x, int64_t n) {
  constexpr int W = V::W;
  int64_t i = 0;
  for (; i + W <= n; i += W) V::store(x + i, activate<V, K>(V::load(x + i)));
  if (i < n) {
    const auto m = V::tail_mask(static_cast<int>(n - i));
    V::store_tail(x + i, m, activate<V, K>(V::load_tail(x + i, m)));
  }
}

template <class V>
void activation_span(float* x, int64_t n, Activation kind) {
  switch (kind) {
    case Activation::kIdentity:
      return;
    case Activation::kGeluErf:
      return activation_span_k<V, Activation::kGeluErf>(x, n);
    case Activation::kGeluTanh:
      return activation_span_k<V, Activation::kGeluTanh>(x, n);
    case Activation::kGeluQuick:
      return activation_span_k<V, Activation::kGeluQuick>(x, n);
    case Activation::kRelu:
      return activation_span_k<V, Activation::kRelu>(x, n);
    case Activation::kTanh:
      return activation_span_k<V, Activation::kTanh>(x, n);
  }
}

// Whole-array activation, OpenMP-parallel over blocks once the work is large enough.
template <class V>
void activation_all(const ActivationArgs& a) {
  if (a.kind == Activation::kIdentity || a.n <= 0) return;
  constexpr int64_t kBlock = 4096;  // multiple of every W
  const int64_t blocks = (a.n + kBlock - 1) / kBlock;
  const bool cheap = a.kind == Activation::kRelu;
#pragma omp parallel for schedule(static) if (blocks > 1 && a.n >= (cheap ? (int64_t{1} << 20) : 16384))
  for (int64_t b = 0; b < blocks; ++b) {
    const int64_t lo = b * kBlock;
    const int64_t len = (a.n - lo < kBlock) ? a.n - lo : kBlock;
    activation_span<V>(a.x + lo, len, a.kind);
  }
}

// ---- LayerNorm ----------------------------------------------------------------------------------
// y = (v - mean) * rstd * gamma + beta, v = x (+ residual). y may alias x or residual: with a residual,
// the sum is written to y in the first pass and re-read from y after that.
template <class V>
void layernorm_row(const float* x, const float* res, const float* gamma, const float* beta, float* y, int64_t cols,
                   float eps) {
  using F = typename V::F;
  constexpr int W = V::W;
  F acc0 = V::zero(), acc1 = V::zero();
  const float* src = x;
  int64_t i = 0;
  if (res) {
    for (; i + W <= cols; i += W) {
      const F v = V::add(V::load(x + i), V::load(res + i));
      V::store(y + i, v);
      acc0 = V::add(acc0, v);
    }
    if (i < cols) {
      const auto m = V::tail_mask(static_cast<int>(cols - i));
      const F v = V::add(V::load_tail(x + i, m), V::load_tail(res + i, m));
      V::store_tail(y + i, m, v);
      acc1 = V::add(acc1, v);
    }
    src = y;
  } else {
    for (; i + 2 * W <= cols; i += 2 * W) {
      acc0 = V::add(acc0, V::load(x + i));
      acc1 = V::add(acc1, V::load(x + i + W));
    }
    for (; i + W <= cols; i += W) acc0 = V::add(acc0, V::load(x + i));
    if (i < cols) acc1 = V::add(acc1, V::load_tail(x + i, V::tail_mask(static_cast<int>(cols - i))));
  }
  const float mean = V::reduce_add(V::add(acc0, acc1)) / static_cast<float>(cols);
  const F mv = V::set1(mean);
  acc0 = V::zero();
  acc1 = V::zero();
  i = 0;
  for (; i + 2 * W <= cols; i += 2 * W) {
    const F d0 = V::sub(V::load(src + i), mv);
    const F d1 = V::sub(V::load(src + i + W), mv);
    acc0 = V::fmadd(d0, d0, acc0);
    acc1 = V::fmadd(d1, d1, acc1);
  }
  for (; i + W <= cols; i += W) {
    const F d = V::sub(V::load(src + i), mv);
    acc0 = V::fmadd(d, d, acc0);
  }
  if (i < cols) {
    const auto m = V::tail_mask(static_cast<int>(cols - i));
    const F d = V::select(m, V::sub(V::load_tail(src + i, m), mv), V::zero());
    acc1 = V::fmadd(d, d, acc1);
  }
  const float var = V::reduce_add(V::add(acc0, acc1)) / static_cast<float>(cols);
  const F rs = V::set1(1.f / __builtin_sqrtf(var + eps));
  i = 0;
  for (; i + W <= cols; i += W) {
    const F d = V::mul(V::sub(V::load(src + i), mv), rs);
    V::store(y + i, V::fmadd(d, V::load(gamma + i), V::load(beta + i)));
  }
  if (i < cols) {
    const auto m = V::tail_mask(static_cast<int>(cols - i));
    const F d = V::mul(V::sub(V::load_tail(src + i, m), mv), rs);
    V::store_tail(y + i, m, V::fmadd(d, V::load_tail(gamma + i, m), V::load_tail(beta + i, m)));
  }
}

// Rows in parallel once rows*cols is large enough to pay for the thread team.
constexpr int64_t kParallelMinWork = 16384;

template <class V>
void layernorm_all(const LayerNormArgs& a) {
  if (a.cols <= 0) return;
#pragma omp parallel for schedule(static) if (a.rows > 1 && a.rows * a.cols >= kParallelMinWork)
  for (int64_t r = 0; r < a.rows; ++r) {
    const int64_t off = r * a.cols;
    layernorm_row<V>(a.x + off, a.residual ? a.residual + off : nullptr, a.gamma, a.beta, a.y + off, a.cols, a.eps);
  }
}

// ---- masked softmax -----------------------------------------------------------------------------
template <class V>
void softmax_row(float* s, const int32_t* mask, int64_t k_len, float scale) {
  using F = typename V::F;
  constexpr int W = V::W;
  const F sc = V::set1(scale);
  const F ninf = V::set1(-kInf);
  // Pass 1: max of scale*s over attended keys (-inf when there is none).
  F mx = ninf;
  bool any = mask == nullptr;
  int64_t i = 0;
  for (; i + W <= k_len; i += W) {
    F v = V::mul(V::load(s + i), sc);
    if (mask) {
      const auto km = V::key_mask(mask + i);
      any = any || V::any(km);
      v = V::select(km, v, ninf);
    }
    mx = V::max(mx, v);
  }
  if (i < k_len) {
    auto m = V::tail_mask(static_cast<int>(k_len - i));
    if (mask) {
      m = V::key_mask_tail(mask + i, m);
      any = any || V::any(m);
    }
    mx = V::max(mx, V::select(m, V::mul(V::load_tail(s + i, m), sc), ninf));
  }
  if (!any) {
    const F u = V::set1(1.f / static_cast<float>(k_len));
    for (i = 0; i + W <= k_len; i += W) V::store(s + i, u);
    if (i < k_len) V::store_tail(s + i, V::tail_mask(static_cast<int>(k_len - i)), u);
    return;
  }
  const F m = V::set1(V::reduce_max(mx));
  // Pass 2: e = exp(scale*s - max) (one rounding: fma), 0 for masked keys; accumulate the sum.
  F acc = V::zero();
  for (i = 0; i + W <= k_len; i += W) {
    F e = exp<V>(V::fmsub(V::load(s + i), sc, m));
    if (mask) e = V::select(V::key_mask(mask + i), e, V::zero());
    V::store(s + i, e);
    acc = V::add(acc, e);
  }
  if (i < k_len) {
    const auto tm = V::tail_mask(static_cast<int>(k_len - i));
    const auto km = mask ? V::key_mask_tail(mask + i, tm) : tm;
    const F e = V::select(km, exp<V>(V::fmsub(V::load_tail(s + i, tm), sc, m)), V::zero());
    V::store_tail(s + i, tm, e);
    acc = V::add(acc, e);
  }
  // Pass 3: normalise.
  const F inv = V::set1(1.f / V::reduce_add(acc));
  for (i = 0; i + W <= k_len; i += W) V::store(s + i, V::mul(V::load(s + i), inv));
  if (i < k_len) {
    const auto tm = V::tail_mask(static_cast<int>(k_len - i));
    V::store_tail(s + i, tm, V::mul(V::load_tail(s + i, tm), inv));
  }
}

template <class V>
void softmax_all(const SoftmaxMaskedArgs& a) {
  if (a.k_len <= 0) return;
  const int64_t per_batch = a.heads * a.q_len;
  const int64_t rows = a.batch * per_batch;
#pragma omp parallel for schedule(static) if (rows > 1 && rows * a.k_len >= kParallelMinWork)
  for (int64_t r = 0; r < rows; ++r) {
    const int32_t* mask = a.key_mask ? a.key_mask + (r / per_batch) * a.k_len : nullptr;
    softmax_row<V>(a.scores + r * a.k_len, mask, a.k_len, a.scale);
  }
}

// ---- embedding ----------------------------------------------------------------------------------
template <class V>
void embed_row(const float* word, const float* pos, const float* type, const float* gamma, const float* beta,
               float* out, int64_t width, float eps) {
  using F = typename V::F;
  constexpr int W = V::W;
  int64_t i = 0;
  for (; i + W <= width; i += W) {
    F v = V::load(word + i);
    if (pos) v = V::add(v, V::load(pos + i));
    if (type) v = V::add(v, V::load(type + i));
    V::store(out + i, v);
  }
  if (i < width) {
    const auto m = V::tail_mask(static_cast<int>(width - i));
    F v = V::load_tail(word + i, m);
    if (pos) v = V::add(v, V::load_tail(pos + i, m));
    if (type) v = V::add(v, V::load_tail(type + i, m));
    V::store_tail(out + i, m, v);
  }
  if (gamma) layernorm_row<V>(out, nullptr, gamma, beta, out, width, eps);
}

template <class V>
void embed_all(const EmbedArgs& a) {
  const int64_t w = a.width;
  if (w <= 0) return;
#pragma omp parallel for schedule(static) if (a.tokens > 1 && a.tokens * w >= kParallelMinWork)
  for (int64_t t = 0; t < a.tokens; ++t) {
    const float* word = a.word_table + static_cast<int64_t>(a.input_ids[t]) * w;
    const float* pos =
        (a.position_table && a.positions) ? a.position_table + static_cast<int64_t>(a.positions[t]) * w : nullptr;
    const float* type =
        a.type_table ? a.type_table + (a.token_types ? static_cast<int64_t>(a.token_types[t]) : 0) * w : nullptr;
    embed_row<V>(word, pos, type, a.gamma, a.beta, a.out + t * w, w, a.eps);
  }
}

// ---- intrinsic-backed traits (only in translation units compiled with the matching -m flags) --------
#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512DQ__) && defined(__AVX512VL__) && defined(__FMA__)
struct Avx512 {
  using F = __m512;
  using I = __m512i;
  using M = __mmask16;
  static constexpr int W = 16;
  static F zero() { return _mm512_setzero_ps(); }
  static F set1(float v) { return _mm512_set1_ps(v); }
  static F load(const float* p) { return _mm512_loadu_ps(p); }
  static void store(float* p, F v) { _mm512_storeu_ps(p, v); }
  static M tail_mask(int n) { return static_cast<M>((1u << n) - 1u); }
  static F load_tail(const float* p, M m) { return _mm512_maskz_loadu_ps(m, p); }
  static void store_tail(float* p, M m, F v) { _mm512_mask_storeu_ps(p, m, v); }
  static F add(F a, F b) { return _mm512_add_ps(a, b); }
  static F sub(F a, F b) { return _mm512_sub_ps(a, b); }
  // The empty asm keeps GCC (whose C++ default is -ffp-contract=fast) from fusing this product into a
  // following add: every variant then performs exactly the operations written, bit-identically.
  static F mul(F a, F b) {
    F r = _mm512_mul_ps(a, b);
    __asm__("" : "+v"(r));
    return r;
  }
  static F div(F a, F b) { return _mm512_div_ps(a, b); }
  static F fmadd(F a, F b, F c) { return _mm512_fmadd_ps(a, b, c); }
  static F fmsub(F a, F b, F c) { return _mm512_fmsub_ps(a, b, c); }
  static F fnmadd(F a, F b, F c) { return _mm512_fnmadd_ps(a, b, c); }
  static F min(F a, F b) { return _mm512_min_ps(a, b); }
  static F max(F a, F b) { return _mm512_max_ps(a, b); }
  static F abs(F a) {
    return _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(a), _mm512_set1_epi32(0x7fffffff)));
  }
  static F sign(F a) {
    return _mm512_castsi512_ps(
        _mm512_and_si512(_mm512_castps_si512(a), _mm512_set1_epi32(static_cast<int>(0x80000000u))));
  }
  static F or_(F a, F b) {
    return _mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(a), _mm512_castps_si512(b)));
  }
  static F select(M m, F a, F b) { return _mm512_mask_blend_ps(m, b, a); }  // blend takes b where m is 0
  static M lt(F a, F b) { return _mm512_cmp_ps_mask(a, b, _CMP_LT_OQ); }
  static F round(F a) { return _mm512_roundscale_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
  static I cvt(F a) { return _mm512_cvttps_epi32(a); }
  static I srai1(I a) { return _mm512_srai_epi32(a, 1); }
  static I sub_i(I a, I b) { return _mm512_sub_epi32(a, b); }
  static F pow2(I n) { return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_add_epi32(n, _mm512_set1_epi32(127)), 23)); }
  static float reduce_add(F v) {
    const __m256 h = _mm256_add_ps(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps(v, 1));
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
  }
  static float reduce_max(F v) {
    const __m256 h = _mm256_max_ps(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps(v, 1));
    __m128 s = _mm_max_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    s = _mm_max_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
  }
  static bool any(M m) { return m != 0; }
  static M key_mask(const int32_t* p) {
    const __m512i v = _mm512_loadu_si512(p);
    return _mm512_test_epi32_mask(v, v);
  }
  static M key_mask_tail(const int32_t* p, M m) {
    const __m512i v = _mm512_maskz_loadu_epi32(m, p);
    return _mm512_mask_test_epi32_mask(m, v, v);
  }
};
#endif

#if defined(__AVX2__) && defined(__FMA__)
struct Avx2 {
  using F = __m256;
  using I = __m256i;
  using M = __m256;  // all-ones / all-zeros lanes
  static constexpr int W = 8;
  static F zero() { return _mm256_setzero_ps(); }
  static F set1(float v) { return _mm256_set1_ps(v); }
  static F load(const float* p) { return _mm256_loadu_ps(p); }
  static void store(float* p, F v) { _mm256_storeu_ps(p, v); }
  static M tail_mask(int n) {
    return _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)));
  }
  static F load_tail(const float* p, M m) { return _mm256_maskload_ps(p, _mm256_castps_si256(m)); }
  static void store_tail(float* p, M m, F v) { _mm256_maskstore_ps(p, _mm256_castps_si256(m), v); }
  static F add(F a, F b) { return _mm256_add_ps(a, b); }
  static F sub(F a, F b) { return _mm256_sub_ps(a, b); }
  static F mul(F a, F b) {  // no fusing into a following add (see Avx512::mul)
    F r = _mm256_mul_ps(a, b);
    __asm__("" : "+x"(r));
    return r;
  }
  static F div(F a, F b) { return _mm256_div_ps(a, b); }
  static F fmadd(F a, F b, F c) { return _mm256_fmadd_ps(a, b, c); }
  static F fmsub(F a, F b, F c) { return _mm256_fmsub_ps(a, b, c); }
  static F fnmadd(F a, F b, F c) { return _mm256_fnmadd_ps(a, b, c); }
  static F min(F a, F b) { return _mm256_min_ps(a, b); }
  static F max(F a, F b) { return _mm256_max_ps(a, b); }
  static F abs(F a) { return _mm256_andnot_ps(_mm256_set1_ps(-0.f), a); }
  static F sign(F a) { return _mm256_and_ps(a, _mm256_set1_ps(-0.f)); }
  static F or_(F a, F b) { return _mm256_or_ps(a, b); }
  static F select(M m, F a, F b) { return _mm256_blendv_ps(b, a, m); }  // blendv takes its 2nd operand where m
  static M lt(F a, F b) { return _mm256_cmp_ps(a, b, _CMP_LT_OQ); }
  static F round(F a) { return _mm256_round_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
  static I cvt(F a) { return _mm256_cvttps_epi32(a); }
  static I srai1(I a) { return _mm256_srai_epi32(a, 1); }
  static I sub_i(I a, I b) { return _mm256_sub_epi32(a, b); }
  static F pow2(I n) { return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n, _mm256_set1_epi32(127)), 23)); }
  static float reduce_add(F v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
  }
  static float reduce_max(F v) {
    __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    s = _mm_max_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
  }
  static bool any(M m) { return _mm256_movemask_ps(m) != 0; }
  static M key_mask(const int32_t* p) {
    const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
    return _mm256_castsi256_ps(_mm256_xor_si256(_mm256_cmpeq_epi32(v, _mm256_setzero_si256()), _mm256_set1_epi32(-1)));
  }
  static M key_mask_tail(const int32_t* p, M m) {
    const __m256i v = _mm256_maskload_epi32(reinterpret_cast<const int*>(p), _mm256_castps_si256(m));
    return _mm256_andnot_ps(_mm256_castsi256_ps(_mm256_cmpeq_epi32(v, _mm256_setzero_si256())), m);
  }
};
#endif

}  // namespace
}  // namespace bert::kernels::simd
