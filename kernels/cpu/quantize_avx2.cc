// AVX2 variants of the activation quantizer of the CPU's int8 linear layers (kernels/quantize.h):
// max |x| over a strided matrix, and x / scale rounded half to even, clamped to [-127, 127], NaN -> 0.
// Bit-exact with kernels/ref/quantize_ref.cc. OpenMP over rows for large inputs.
#include <immintrin.h>

#include <algorithm>
#include <cmath>

#include "kernels/quantize.h"

#ifndef __AVX2__
#error "compile this file with the AVX2 flags (see CMakeLists.txt)"
#endif

namespace bert::kernels {
namespace {

constexpr int64_t kParallelMin = int64_t{1} << 16;  // elements; below this, one thread

// 8 lanes of x / scale: NaN -> 0, clamped, rounded half to even (explicitly, not via MXCSR), as int32.
inline __m256i quantize8(__m256 x, __m256 scale) {
  __m256 v = _mm256_div_ps(x, scale);
  v = _mm256_and_ps(v, _mm256_cmp_ps(v, v, _CMP_ORD_Q));
  v = _mm256_min_ps(_mm256_max_ps(v, _mm256_set1_ps(-127.f)), _mm256_set1_ps(127.f));
  return _mm256_cvttps_epi32(_mm256_round_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
}

}  // namespace

float absmax_f32_avx2(const float* x, int64_t rows, int64_t cols, int64_t ldx) {
  float amax = 0.f;
  const __m256 sign = _mm256_set1_ps(-0.f);
#pragma omp parallel for schedule(static) reduction(max : amax) if (rows * cols >= kParallelMin)
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = x + r * ldx;
    __m256 acc = _mm256_setzero_ps();
    int64_t c = 0;
    for (; c + 8 <= cols; c += 8) acc = _mm256_max_ps(_mm256_andnot_ps(sign, _mm256_loadu_ps(row + c)), acc);  // NaN: acc
    alignas(32) float lanes[8];
    _mm256_store_ps(lanes, acc);
    float m = 0.f;
    for (float v : lanes) m = std::max(m, v);
    for (; c < cols; ++c) m = std::max(m, std::fabs(row[c]));
    amax = std::max(amax, m);
  }
  return amax;
}

void quantize_i8_avx2(const float* x, int64_t rows, int64_t cols, int64_t ldx, float scale, int8_t* q) {
  if (!(scale > 0.f)) scale = 1.f;
  const __m256 s = _mm256_set1_ps(scale);
#pragma omp parallel for schedule(static) if (rows * cols >= kParallelMin)
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = x + r * ldx;
    int8_t* out = q + r * cols;
    int64_t c = 0;
    for (; c + 8 <= cols; c += 8) {
      const __m256i i32 = quantize8(_mm256_loadu_ps(row + c), s);
      const __m128i i16 = _mm_packs_epi32(_mm256_castsi256_si128(i32), _mm256_extracti128_si256(i32, 1));
      _mm_storel_epi64(reinterpret_cast<__m128i*>(out + c), _mm_packs_epi16(i16, i16));
    }
    if (c < cols) {  // the tail through a zero-padded block of 8
      alignas(32) float block[8] = {0, 0, 0, 0, 0, 0, 0, 0};
      alignas(32) int32_t ints[8];
      std::copy(row + c, row + cols, block);
      _mm256_store_si256(reinterpret_cast<__m256i*>(ints), quantize8(_mm256_load_ps(block), s));
      for (int64_t i = c; i < cols; ++i) out[i] = static_cast<int8_t>(ints[i - c]);
    }
  }
}

}  // namespace bert::kernels
