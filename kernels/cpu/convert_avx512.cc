// AVX-512 fp16/bf16 <-> fp32 conversions (VCVTPH2PS/VCVTPS2PH, integer round-to-nearest-even for bf16);
// bit-exact with kernels/ref/convert_ref.cc. Tails use masked loads/stores.
#if defined(__GNUC__) && !defined(__clang__)
// GCC 12 false positive: the "undefined" pass-through of _mm512_slli_epi32 & co. (GCC PR105593).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>

#include "kernels/convert.h"

#ifndef __AVX512F__
#error "compile this file with the AVX-512 flags (see CMakeLists.txt)"
#endif

namespace bert::kernels {
namespace {

constexpr int64_t kBlock = int64_t{1} << 14;        // elements per parallel block (multiple of 16)
constexpr int64_t kParallelMin = int64_t{1} << 18;  // below this, one thread

template <class Body>
void for_blocks(int64_t n, const Body& body) {
  if (n <= 0) return;
  if (n < kParallelMin) return body(0, n);  // (no parallel region: short rows are converted one by one)
  const int64_t blocks = (n + kBlock - 1) / kBlock;
#pragma omp parallel for schedule(static)
  for (int64_t b = 0; b < blocks; ++b) {
    const int64_t lo = b * kBlock;
    body(lo, (n - lo < kBlock) ? n - lo : kBlock);
  }
}

inline __mmask16 tail16(int64_t r) { return static_cast<__mmask16>((1u << r) - 1u); }

inline __m512 f16x16_to_f32(__m256i h) { return _mm512_cvtph_ps(h); }
inline __m512 bf16x16_to_f32(__m256i h) { return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16)); }
inline __m256i f32x16_to_f16(__m512 v) { return _mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT); }
inline __m256i f32x16_to_bf16(__m512 v) {
  const __m512i u = _mm512_castps_si512(v);
  const __m512i hi = _mm512_srli_epi32(u, 16);
  const __m512i lsb = _mm512_and_si512(hi, _mm512_set1_epi32(1));
  __m512i r = _mm512_srli_epi32(_mm512_add_epi32(_mm512_add_epi32(u, _mm512_set1_epi32(0x7fff)), lsb), 16);
  const __mmask16 is_nan = _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
  r = _mm512_mask_or_epi32(r, is_nan, hi, _mm512_set1_epi32(0x40));  // quiet NaN, top payload bits
  return _mm512_cvtepi32_epi16(r);                                   // values fit: truncation is exact
}

template <class Cvt>
void widen(const uint16_t* src, float* dst, int64_t n, const Cvt& cvt) {
  for_blocks(n, [&](int64_t lo, int64_t len) {
    const uint16_t* s = src + lo;
    float* d = dst + lo;
    int64_t i = 0;
    for (; i + 16 <= len; i += 16)
      _mm512_storeu_ps(d + i, cvt(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(s + i))));
    if (i < len) {
      const __mmask16 m = tail16(len - i);
      _mm512_mask_storeu_ps(d + i, m, cvt(_mm256_maskz_loadu_epi16(m, s + i)));
    }
  });
}

template <class Cvt>
void narrow(const float* src, uint16_t* dst, int64_t n, const Cvt& cvt) {
  for_blocks(n, [&](int64_t lo, int64_t len) {
    const float* s = src + lo;
    uint16_t* d = dst + lo;
    int64_t i = 0;
    for (; i + 16 <= len; i += 16) _mm256_storeu_si256(reinterpret_cast<__m256i*>(d + i), cvt(_mm512_loadu_ps(s + i)));
    if (i < len) {
      const __mmask16 m = tail16(len - i);
      _mm256_mask_storeu_epi16(d + i, m, cvt(_mm512_maskz_loadu_ps(m, s + i)));
    }
  });
}

}  // namespace

void convert_f16_to_f32_avx512(const uint16_t* src, float* dst, int64_t n) {
  widen(src, dst, n, [](__m256i h) { return f16x16_to_f32(h); });
}
void convert_bf16_to_f32_avx512(const uint16_t* src, float* dst, int64_t n) {
  widen(src, dst, n, [](__m256i h) { return bf16x16_to_f32(h); });
}
void convert_f32_to_f16_avx512(const float* src, uint16_t* dst, int64_t n) {
  narrow(src, dst, n, [](__m512 v) { return f32x16_to_f16(v); });
}
void convert_f32_to_bf16_avx512(const float* src, uint16_t* dst, int64_t n) {
  narrow(src, dst, n, [](__m512 v) { return f32x16_to_bf16(v); });
}

}  // namespace bert::kernels
