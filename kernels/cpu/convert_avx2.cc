// AVX2/F16C fp16/bf16 <-> fp32 conversions; bit-exact with kernels/ref/convert_ref.cc. Tails go through
// a small stack buffer so they use the same instructions as the body.
#include <immintrin.h>

#include "kernels/convert.h"

#ifndef __AVX2__
#error "compile this file with the AVX2 flags (see CMakeLists.txt)"
#endif

namespace bert::kernels {
namespace {

constexpr int64_t kBlock = int64_t{1} << 14;        // elements per parallel block (multiple of 8)
constexpr int64_t kParallelMin = int64_t{1} << 18;  // below this, one thread

// Runs body(lo, len) over [0, n) in blocks, in parallel when n is large.
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

inline __m256 f16x8_to_f32(__m128i h) { return _mm256_cvtph_ps(h); }
inline __m256 bf16x8_to_f32(__m128i h) { return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16)); }
inline __m128i f32x8_to_f16(__m256 v) { return _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT); }
inline __m128i f32x8_to_bf16(__m256 v) {
  const __m256i u = _mm256_castps_si256(v);
  const __m256i hi = _mm256_srli_epi32(u, 16);
  const __m256i lsb = _mm256_and_si256(hi, _mm256_set1_epi32(1));
  const __m256i rounded = _mm256_srli_epi32(_mm256_add_epi32(_mm256_add_epi32(u, _mm256_set1_epi32(0x7fff)), lsb), 16);
  const __m256i quiet_nan = _mm256_or_si256(hi, _mm256_set1_epi32(0x40));
  const __m256i is_nan = _mm256_castps_si256(_mm256_cmp_ps(v, v, _CMP_UNORD_Q));
  const __m256i r = _mm256_blendv_epi8(rounded, quiet_nan, is_nan);
  // All values fit in 16 bits: pack within 128-bit lanes, then gather lanes 0 and 2.
  const __m256i packed = _mm256_packus_epi32(r, r);
  return _mm256_castsi256_si128(_mm256_permute4x64_epi64(packed, 0x08));
}

template <class Cvt>
void widen(const uint16_t* src, float* dst, int64_t n, const Cvt& cvt) {
  for_blocks(n, [&](int64_t lo, int64_t len) {
    const uint16_t* s = src + lo;
    float* d = dst + lo;
    int64_t i = 0;
    for (; i + 8 <= len; i += 8) _mm256_storeu_ps(d + i, cvt(_mm_loadu_si128(reinterpret_cast<const __m128i*>(s + i))));
    if (i < len) {
      alignas(32) uint16_t in[8] = {};
      alignas(32) float out[8];
      const int64_t r = len - i;
      for (int64_t j = 0; j < r; ++j) in[j] = s[i + j];
      _mm256_store_ps(out, cvt(_mm_load_si128(reinterpret_cast<const __m128i*>(in))));
      for (int64_t j = 0; j < r; ++j) d[i + j] = out[j];
    }
  });
}

template <class Cvt>
void narrow(const float* src, uint16_t* dst, int64_t n, const Cvt& cvt) {
  for_blocks(n, [&](int64_t lo, int64_t len) {
    const float* s = src + lo;
    uint16_t* d = dst + lo;
    int64_t i = 0;
    for (; i + 8 <= len; i += 8) _mm_storeu_si128(reinterpret_cast<__m128i*>(d + i), cvt(_mm256_loadu_ps(s + i)));
    if (i < len) {
      alignas(32) float in[8] = {};
      alignas(32) uint16_t out[8];
      const int64_t r = len - i;
      for (int64_t j = 0; j < r; ++j) in[j] = s[i + j];
      _mm_store_si128(reinterpret_cast<__m128i*>(out), cvt(_mm256_load_ps(in)));
      for (int64_t j = 0; j < r; ++j) d[i + j] = out[j];
    }
  });
}

}  // namespace

void convert_f16_to_f32_avx2(const uint16_t* src, float* dst, int64_t n) {
  widen(src, dst, n, [](__m128i h) { return f16x8_to_f32(h); });
}
void convert_bf16_to_f32_avx2(const uint16_t* src, float* dst, int64_t n) {
  widen(src, dst, n, [](__m128i h) { return bf16x8_to_f32(h); });
}
void convert_f32_to_f16_avx2(const float* src, uint16_t* dst, int64_t n) {
  narrow(src, dst, n, [](__m256 v) { return f32x8_to_f16(v); });
}
void convert_f32_to_bf16_avx2(const float* src, uint16_t* dst, int64_t n) {
  narrow(src, dst, n, [](__m256 v) { return f32x8_to_bf16(v); });
}

}  // namespace bert::kernels
