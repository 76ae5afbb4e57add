// Fused attention with bf16 products (kernels/attention.h, attention_bf16_avx512bf16): the schedule of
// attention_simd.h (tasks of kAttnBq queries, blocks of attended keys, the same online softmax) with both
// products on pairs of bf16 values by vdpbf16ps, which accumulates in fp32:
//   S^T = K Q^T    pairs along head_dim: broadcast (k_j[2p], k_j[2p+1]), load Q^T's pairs for 16 queries
//   O  += P V      pairs along the keys: broadcast (P[i, 2p], P[i, 2p+1]), load (v_2p[d], v_2p+1[d])
// Q (scaled), K, V and P are rounded to bf16 (nearest even) as they are packed; the scores, the softmax
// with its running max and sum, and O stay fp32. Compiled with AVX512_BF16 (CMakeLists.txt); the engine
// runs it for precision bf16 on CPUs that have it.
#include <immintrin.h>

#include <cstdint>

#include "kernels/attention.h"
#include "kernels/cpu/attention_simd.h"
#include "kernels/isa.h"

#ifndef __AVX512BF16__
#error "compile this file with the AVX-512 BF16 flags (see CMakeLists.txt)"
#endif

namespace bert::kernels {
namespace {

using simd::kAttnBk;
using simd::kAttnBq;
using V = simd::Avx512;
constexpr int64_t kMaxPairs = kAttentionMaxHeadDim / 2;
constexpr int kRows = 6, kCols = 4;  // register tiles: 24 accumulators, 4 loads, 1 broadcast

// 16 lanes of bf16 pairs: lane i = bf16(lo[i]) | bf16(hi[i]) << 16 (the order vdpbf16ps pairs them in).
inline __m512i bf16_pairs(__m512 lo, __m512 hi) {
  const __m512i l = _mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(lo));
  const __m512i h = _mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(hi));
  return _mm512_or_si512(l, _mm512_slli_epi32(h, 16));
}

// A row of n floats times s as bf16 pairs: dst[p] = (s*x[2p], s*x[2p+1]), zero past n; (n+1)/2 pairs.
inline void row_pairs(const float* x, int64_t n, float s, uint32_t* dst) {
  const __m512 sv = _mm512_set1_ps(s);
  for (int64_t d = 0; d < n; d += 32) {
    const auto lane = [&](int64_t at) {  // 16 floats from at, zero past n
      if (at >= n) return _mm512_setzero_ps();
      const __mmask16 m = n - at >= 16 ? __mmask16(0xffff) : __mmask16((1u << (n - at)) - 1u);
      return _mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + at), sv);
    };
    // Consecutive bf16 values are already pairs: 32 floats -> 16 pairs.
    const __m256i a = (__m256i)_mm512_cvtneps_pbh(lane(d)), b = (__m256i)_mm512_cvtneps_pbh(lane(d + 16));
    const __m512i both = _mm512_inserti64x4(_mm512_castsi256_si512(a), b, 1);
    const int64_t pairs = (n - d + 1) / 2;
    _mm512_mask_storeu_epi32(dst + d / 2, pairs >= 16 ? __mmask16(0xffff) : __mmask16((1u << pairs) - 1u), both);
  }
}

// st[r, i0 + 16c ..] = sum_p dot(kb[r, p], qt[p, i0 + 16c ..]) for R keys and C query vectors.
template <int R, int C>
inline void qk_tile(const uint32_t* kb, const uint32_t* qt, int64_t np, float* st, int64_t i0) {
  __m512 acc[R][C];
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c) acc[r][c] = _mm512_setzero_ps();
  for (int64_t p = 0; p < np; ++p) {
    __m512bh qv[C];
    for (int c = 0; c < C; ++c) qv[c] = (__m512bh)_mm512_loadu_si512(qt + p * kAttnBq + i0 + 16 * c);
    for (int r = 0; r < R; ++r) {
      const __m512bh kv = (__m512bh)_mm512_set1_epi32(int(kb[r * kMaxPairs + p]));
      for (int c = 0; c < C; ++c) acc[r][c] = _mm512_dpbf16_ps(acc[r][c], kv, qv[c]);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c) _mm512_storeu_ps(st + r * kAttnBq + i0 + 16 * c, acc[r][c]);
}

template <int R>
inline void qk_keys(const uint32_t* kb, const uint32_t* qt, int64_t np, float* st, int64_t nv) {
  int64_t c = 0;
  for (; c + kCols <= nv; c += kCols) qk_tile<R, kCols>(kb, qt, np, st, 16 * c);
  for (; c < nv; ++c) qk_tile<R, 1>(kb, qt, np, st, 16 * c);
}

// o[i0 + r, d0 + 16c ..] += sum_p dot(pp[p, i0 + r], vp[p, d0 + 16c ..]) for R queries, C head_dim vectors.
template <int R, int C>
inline void pv_tile(const uint32_t* pp, const uint32_t* vp, int64_t npk, float* o, int64_t dhp, int64_t i0,
                    int64_t d0) {
  __m512 acc[R][C];
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c) acc[r][c] = _mm512_loadu_ps(o + (i0 + r) * dhp + d0 + 16 * c);
  for (int64_t p = 0; p < npk; ++p) {
    __m512bh vv[C];
    for (int c = 0; c < C; ++c) vv[c] = (__m512bh)_mm512_loadu_si512(vp + p * dhp + d0 + 16 * c);
    for (int r = 0; r < R; ++r) {
      const __m512bh pv = (__m512bh)_mm512_set1_epi32(int(pp[p * kAttnBq + i0 + r]));
      for (int c = 0; c < C; ++c) acc[r][c] = _mm512_dpbf16_ps(acc[r][c], pv, vv[c]);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c) _mm512_storeu_ps(o + (i0 + r) * dhp + d0 + 16 * c, acc[r][c]);
}

template <int R>
inline void pv_rows(const uint32_t* pp, const uint32_t* vp, int64_t npk, float* o, int64_t dhp, int64_t i0) {
  int64_t d = 0;
  for (; d + 16 * kCols <= dhp; d += 16 * kCols) pv_tile<R, kCols>(pp, vp, npk, o, dhp, i0, d);
  for (; d < dhp; d += 16) pv_tile<R, 1>(pp, vp, npk, o, dhp, i0, d);
}

void task(const AttentionArgs& a, int64_t row0, int64_t S, int64_t h, int64_t q0, int64_t qn, const int32_t* mask,
          float scale, int64_t ld, int64_t ldo) {
  const int64_t dh = a.head_dim;
  const int64_t dhp = (dh + 15) / 16 * 16;
  const int64_t np = (dh + 1) / 2;    // head_dim pairs
  const int64_t nv = (qn + 15) / 16;  // query vectors
  alignas(64) uint32_t qt[kMaxPairs * kAttnBq];              // Q^T pairs [np, kAttnBq], zero beyond qn
  alignas(64) uint32_t kb[kAttnBk * kMaxPairs];              // the key block's K rows as pairs [kn, kMaxPairs]
  alignas(64) uint32_t vp[kAttnBk / 2 * kAttentionMaxHeadDim];  // its V as key pairs [kn/2, dhp]
  alignas(64) uint32_t pp[kAttnBk / 2 * kAttnBq];            // P as key pairs [kn/2, kAttnBq]
  alignas(64) float st[kAttnBk * kAttnBq];                   // S^T, then P^T (fp32)
  alignas(64) float o[kAttnBq * kAttentionMaxHeadDim];       // O [qn, dhp]
  alignas(64) float m[kAttnBq], l[kAttnBq];
  alignas(64) uint32_t row[kMaxPairs];
  const float* vr[kAttnBk];
  for (int64_t i = 0; i < nv * 16; ++i) {
    if (i < qn) row_pairs(a.q + (row0 + q0 + i) * ld + h * dh, dh, scale, row);
    for (int64_t p = 0; p < np; ++p) qt[p * kAttnBq + i] = i < qn ? row[p] : 0u;
  }
  simd::attn_begin<V>(m, l, o, nv, qn, dhp);
  for (int64_t j = 0; j < S;) {
    int64_t kn = 0;
    for (; j < S && kn < kAttnBk; ++j) {
      if (mask != nullptr && mask[j] == 0) continue;
      row_pairs(a.k + (row0 + j) * ld + h * dh, dh, 1.f, kb + kn * kMaxPairs);
      vr[kn++] = a.v + (row0 + j) * ld + h * dh;
    }
    if (kn == 0) break;
    const int64_t npk = (kn + 1) / 2;  // key pairs (an odd block ends with a zero key)
    for (int64_t p = 0; p < npk; ++p)
      for (int64_t d = 0; d < dhp; d += 16) {
        const __mmask16 m16 = dh - d >= 16 ? __mmask16(0xffff) : __mmask16((1u << (dh - d)) - 1u);
        const __m512 lo = _mm512_maskz_loadu_ps(m16, vr[2 * p] + d);
        const __m512 hi = 2 * p + 1 < kn ? _mm512_maskz_loadu_ps(m16, vr[2 * p + 1] + d) : _mm512_setzero_ps();
        _mm512_storeu_si512(vp + p * dhp + d, bf16_pairs(lo, hi));
      }
    int64_t k = 0;
    for (; k + kRows <= kn; k += kRows) qk_keys<kRows>(kb + k * kMaxPairs, qt, np, st + k * kAttnBq, nv);
    for (; k + 2 <= kn; k += 2) qk_keys<2>(kb + k * kMaxPairs, qt, np, st + k * kAttnBq, nv);
    for (; k < kn; ++k) qk_keys<1>(kb + k * kMaxPairs, qt, np, st + k * kAttnBq, nv);
    simd::attn_softmax_block<V>(st, kn, nv, m, l, o, qn, dhp);
    for (int64_t p = 0; p < npk; ++p)
      for (int64_t i = 0; i < nv * 16; i += 16) {
        const __m512 lo = _mm512_loadu_ps(st + 2 * p * kAttnBq + i);
        const __m512 hi = 2 * p + 1 < kn ? _mm512_loadu_ps(st + (2 * p + 1) * kAttnBq + i) : _mm512_setzero_ps();
        _mm512_storeu_si512(pp + p * kAttnBq + i, bf16_pairs(lo, hi));
      }
    int64_t i = 0;
    for (; i + kRows <= qn; i += kRows) pv_rows<kRows>(pp, vp, npk, o, dhp, i);
    for (; i + 2 <= qn; i += 2) pv_rows<2>(pp, vp, npk, o, dhp, i);
    for (; i < qn; ++i) pv_rows<1>(pp, vp, npk, o, dhp, i);
  }
  simd::attn_end<V>(o, l, qn, dh, dhp, a.out + (row0 + q0) * ldo + h * dh, ldo);
}

}  // namespace

void attention_bf16_avx512bf16(const AttentionArgs& a) {
  simd::attention_tasks(a, kAttnBq, [&a](int64_t row0, int64_t S, int64_t h, int64_t q0, int64_t qn,
                                         const int32_t* mask, float scale, int64_t ld, int64_t ldo) {
    task(a, row0, S, h, q0, qn, mask, scale, ld, ldo);
  });
}

}  // namespace bert::kernels
