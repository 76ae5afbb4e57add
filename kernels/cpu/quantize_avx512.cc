// AVX-512 variants of the activation quantizer of the CPU's int8 linear layers (kernels/quantize.h):
// max |x| over a strided matrix, and x / scale rounded half to even, clamped to [-127, 127], NaN -> 0.
// Bit-exact with kernels/ref/quantize_ref.cc. OpenMP over rows for large inputs.
#if defined(__GNUC__) && !defined(__clang__)
// GCC 12 false positive: the "undefined" pass-through of the AVX-512 intrinsics (GCC PR105593).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>

#include <algorithm>
#include <cmath>

#include "kernels/quantize.h"

#ifndef __AVX512F__
#error "compile this file with the AVX-512 flags (see CMakeLists.txt)"
#endif

namespace bert::kernels {
namespace {

constexpr int64_t kParallelMin = int64_t{1} << 16;  // elements; below this, one thread
inline __mmask16 tail16(int64_t r) { return static_cast<__mmask16>((1u << r) - 1u); }

// 16 lanes of x / scale -> int8: NaN -> 0, clamp, round half to even (explicitly, not via MXCSR).
inline __m512i quantize16(__m512 x, __m512 scale) {
  __m512 v = _mm512_div_ps(x, scale);
  v = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(v, v, _CMP_ORD_Q), v);
  v = _mm512_min_ps(_mm512_max_ps(v, _mm512_set1_ps(-127.f)), _mm512_set1_ps(127.f));
  return _mm512_cvt_roundps_epi32(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}

}  // namespace

float absmax_f32_avx512(const float* x, int64_t rows, int64_t cols, int64_t ldx) {
  float amax = 0.f;
#pragma omp parallel for schedule(static) reduction(max : amax) if (rows * cols >= kParallelMin)
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = x + r * ldx;
    __m512 acc = _mm512_setzero_ps();
    int64_t c = 0;
    for (; c + 16 <= cols; c += 16) acc = _mm512_max_ps(_mm512_abs_ps(_mm512_loadu_ps(row + c)), acc);  // NaN: acc
    if (c < cols) acc = _mm512_max_ps(_mm512_abs_ps(_mm512_maskz_loadu_ps(tail16(cols - c), row + c)), acc);
    amax = std::max(amax, _mm512_reduce_max_ps(acc));
  }
  return amax;
}

void quantize_i8_avx512(const float* x, int64_t rows, int64_t cols, int64_t ldx, float scale, int8_t* q) {
  if (!(scale > 0.f)) scale = 1.f;
  const __m512 s = _mm512_set1_ps(scale);
#pragma omp parallel for schedule(static) if (rows * cols >= kParallelMin)
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = x + r * ldx;
    int8_t* out = q + r * cols;
    int64_t c = 0;
    for (; c + 16 <= cols; c += 16) _mm512_mask_cvtepi32_storeu_epi8(out + c, 0xffff, quantize16(_mm512_loadu_ps(row + c), s));
    if (c < cols) {
      const __mmask16 m = tail16(cols - c);
      _mm512_mask_cvtepi32_storeu_epi8(out + c, m, quantize16(_mm512_maskz_loadu_ps(m, row + c), s));
    }
  }
}

}  // namespace bert::kernels
