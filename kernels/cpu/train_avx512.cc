// AVX-512 training kernels (kernels/train.h): the portable loops of train_portable.h compiled for
// AVX-512, and hand-written forms of two kernels that the portable code runs one element at a time:
// dropout (the counter hash needs 64-bit multiplies, vpmullq from AVX512DQ) and the erf-GELU backward
// (the epilogue GELU's fast erf and simd_kernels.h's exp). Same contract as the portable variants:
// element-wise, so the result does not depend on the thread count. Dropout gives the reference's bits
// exactly (same hash, same double-precision scaling); the GELU derivative is within 2.5e-7 of it (tests/
// train_kernels_test.cc compares every registered variant with its reference at awkward sizes).
#include <cstring>

#include "kernels/cpu/simd_kernels.h"
#include "kernels/cpu/train_portable.h"
#include "kernels/train.h"

#ifndef __AVX512F__
#error "compile this file with the AVX-512 flags (see CMakeLists.txt)"
#endif

namespace bert::kernels {
namespace {

constexpr int64_t kParallelMinWork = int64_t{1} << 15;  // as train_cpu.cc
constexpr int64_t kChunk = 1024;                        // elements per OpenMP task (a multiple of 16)

// splitmix64(seed ^ (golden * (index + 1))) for 8 indices (kernels/ref/train_ref.cc's dropout_keep).
inline __m512i dropout_hash(__m512i seed, __m512i index_plus_1) {
  __m512i z = _mm512_xor_si512(seed, _mm512_mullo_epi64(index_plus_1, _mm512_set1_epi64(0x9E3779B97F4A7C15ll)));
  z = _mm512_add_epi64(z, _mm512_set1_epi64(0x9E3779B97F4A7C15ll));
  z = _mm512_mullo_epi64(_mm512_xor_si512(z, _mm512_srli_epi64(z, 30)), _mm512_set1_epi64(0xBF58476D1CE4E5B9ll));
  z = _mm512_mullo_epi64(_mm512_xor_si512(z, _mm512_srli_epi64(z, 27)), _mm512_set1_epi64(0x94D049BB133111EBll));
  return _mm512_xor_si512(z, _mm512_srli_epi64(z, 31));
}

// x[0..len) = drop(src[0..len)) of the stream starting at element `first` (len <= 16).
inline void dropout_16(const float* src, float* x, int64_t len, uint64_t seed, uint64_t first, float p,
                       double inv_keep) {
  const __mmask16 m = len >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << len) - 1);
  const __m512i s = _mm512_set1_epi64(static_cast<long long>(seed));
  const __m512i base = _mm512_add_epi64(_mm512_set1_epi64(static_cast<long long>(first + 1)),
                                        _mm512_setr_epi64(0, 1, 2, 3, 4, 5, 6, 7));
  const __m512i h_lo = _mm512_srli_epi64(dropout_hash(s, base), 40);
  const __m512i h_hi = _mm512_srli_epi64(dropout_hash(s, _mm512_add_epi64(base, _mm512_set1_epi64(8))), 40);
  // 24-bit values: exact as int32 and as float.
  const __m512i h32 = _mm512_inserti64x4(_mm512_castsi256_si512(_mm512_cvtepi64_epi32(h_lo)), _mm512_cvtepi64_epi32(h_hi), 1);
  const __m512 uniform = _mm512_mul_ps(_mm512_cvtepi32_ps(h32), _mm512_set1_ps(0x1p-24f));
  const __mmask16 keep = _mm512_cmp_ps_mask(uniform, _mm512_set1_ps(p), _CMP_GE_OQ) & m;
  const __m512 v = _mm512_maskz_loadu_ps(m, src);
  const __m512d k = _mm512_set1_pd(inv_keep);
  const __m256 lo = _mm512_cvtpd_ps(_mm512_mul_pd(_mm512_cvtps_pd(_mm512_castps512_ps256(v)), k));
  const __m256 hi = _mm512_cvtpd_ps(_mm512_mul_pd(_mm512_cvtps_pd(_mm512_extractf32x8_ps(v, 1)), k));
  const __m512 scaled = _mm512_insertf32x8(_mm512_castps256_ps512(lo), hi, 1);
  _mm512_mask_storeu_ps(x, m, _mm512_maskz_mov_ps(keep, scaled));
}

// d/dx [x Phi(x)] = Phi(x) + x phi(x), in the fast form of the forward that training runs (the linear
// layers' epilogue GELU, kernels/activation.h): Phi(x) = (1 + erf(x/sqrt2))/2 through the same rational
// erf (|error| < 3e-8 for |z| <= 4, +-1 beyond) and phi(x) = exp(-x^2/2)/sqrt(2 pi) (simd::exp_nonpositive,
// ~1 ulp). Within 2.5e-7 of the exact derivative anywhere (absolute; the derivative lies in [-0.17, 1.13])
// for a third of the erfc form's work. x is clamped to +-15 (beyond, phi underflows); NaN stays NaN.
using V = simd::Avx512;
inline __m512 gelu_erf_derivative(__m512 x) {
  using F = V::F;
  constexpr float kInvSqrt2Pi = 0.39894228040143267794f;
  const F xc = V::max(V::set1(-15.f), V::min(V::set1(15.f), x));  // (min/max keep a NaN x)
  const F z = V::min(V::set1(4.f), V::max(V::set1(-4.f), V::mul(xc, V::set1(simd::kInvSqrt2))));
  const F t = V::mul(z, z);
  const F e = V::div(V::mul(z, simd::horner<V>(t, kGeluFastErfP)), simd::horner<V>(t, kGeluFastErfQ));
  const F phi_cdf = V::fmadd(V::min(V::set1(1.f), V::max(V::set1(-1.f), e)), V::set1(0.5f), V::set1(0.5f));
  const F arg = V::mul(V::mul(xc, xc), V::set1(-0.5f));
  const F density = V::select(V::lt(arg, V::set1(-87.f)), V::zero(),  // (exp_nonpositive stops at exp(-87))
                              V::mul(simd::exp_nonpositive<V>(arg), V::set1(kInvSqrt2Pi)));
  return V::fmadd(xc, density, phi_cdf);
}

}  // namespace

void dropout_f32_avx512(const DropoutArgs& a) {
  const float* src = a.src ? a.src : a.x;
  if (a.p <= 0.f || a.n <= 0) {
    if (src != a.x && a.n > 0) std::memcpy(a.x, src, sizeof(float) * a.n);
    return;
  }
  const double inv_keep = 1.0 / (1.0 - static_cast<double>(a.p));
  const int64_t chunks = (a.n + kChunk - 1) / kChunk;
#pragma omp parallel for schedule(static) if (a.n >= kParallelMinWork)
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t end = c * kChunk + kChunk < a.n ? c * kChunk + kChunk : a.n;
    for (int64_t i = c * kChunk; i < end; i += 16)
      dropout_16(src + i, a.x + i, end - i, a.seed, a.offset + static_cast<uint64_t>(i), a.p, inv_keep);
  }
}

void activation_backward_f32_avx512(const ActivationBackwardArgs& a) {
  if (a.kind != Activation::kGeluErf) return portable::activation_backward(a);  // the others: portable code
  if (a.n <= 0) return;
  const int64_t chunks = (a.n + kChunk - 1) / kChunk;
#pragma omp parallel for schedule(static) if (a.n >= kParallelMinWork)
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t end = c * kChunk + kChunk < a.n ? c * kChunk + kChunk : a.n;
    int64_t i = c * kChunk;
    for (; i + 16 <= end; i += 16)
      V::store(a.grad + i, V::mul(V::load(a.grad + i), gelu_erf_derivative(V::load(a.x + i))));
    if (i < end) {
      const V::M m = V::tail_mask(static_cast<int>(end - i));
      V::store_tail(a.grad + i, m, V::mul(V::load_tail(a.grad + i, m), gelu_erf_derivative(V::load_tail(a.x + i, m))));
    }
  }
}

void layernorm_backward_f32_avx512(const LayerNormBackwardArgs& a) { portable::layernorm_backward(a); }
void softmax_backward_f32_avx512(const SoftmaxBackwardArgs& a) { portable::softmax_backward(a); }
void embed_backward_f32_avx512(const EmbedBackwardArgs& a) { portable::embed_backward(a); }
void column_sum_f32_avx512(const ColumnSumArgs& a) { portable::column_sum(a); }
LossSum cross_entropy_f32_avx512(const CrossEntropyArgs& a) { return portable::cross_entropy(a); }

}  // namespace bert::kernels
