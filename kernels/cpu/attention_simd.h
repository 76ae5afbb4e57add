// Vector-width-generic body of the flash-style fused attention (kernels/attention.h), written against
// the vector traits of simd_kernels.h and instantiated by attention_avx2.cc / attention_avx512.cc (and
// by the tests with a portable 16-lane emulation).
//
// One task = (batch b, head h, block of up to kAttnBq query rows). Keys are visited in blocks of
// kAttnBk: the block's K is packed transposed ([head_dim, kAttnBk], zero-padded) and its V row-major
// ([kAttnBk, head_dim rounded up to W], zero-padded), then
//   S = Q K^T          register tiles of 8 (AVX2: 4) query rows x 2 key vectors, vectorised over keys
//   online softmax     per row: running max m and sum l; the row's output accumulator is rescaled by
//                      exp(m_old - m_new) when the max grows; masked / padding keys are -inf -> p = 0
//   O += P V           register tiles of 8 (AVX2: 4) query rows x 2 vectors of head_dim
// and finally out = O / l. Nothing is [seq, seq]; per-task scratch is on the stack (~290 KiB at the
// largest head_dim). Tasks never share outputs and each runs serially, so the bits do not depend on
// the thread count. A sequence whose keys are all masked runs unmasked with scale 0: every score is
// equal, so P is exactly uniform, as the spec demands.
#pragma once

#include <cstdint>

#include "kernels/attention.h"
#include "kernels/cpu/simd_kernels.h"

namespace bert::kernels::simd {
namespace {

constexpr int64_t kAttnBq = 128;  // query rows per task (bert-base: one task per (batch, head) at seq 128)
constexpr int64_t kAttnBk = 64;  // keys per block: a multiple of every W

// s[r, jv + c*W .. +W) = sum_d q_r[d] * kt[d, jv + c*W ..] for R rows and C key vectors.
template <class V, int R, int C>
inline void attn_qk_tile(const float* const* qr, const float* kt, int64_t dh, float* s, int64_t jv) {
  using F = typename V::F;
  constexpr int W = V::W;
  F acc[R][C];
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c) acc[r][c] = V::zero();
  for (int64_t d = 0; d < dh; ++d) {
    F kv[C];
    for (int c = 0; c < C; ++c) kv[c] = V::load(kt + d * kAttnBk + jv + c * W);
    for (int r = 0; r < R; ++r) {
      const F qv = V::set1(qr[r][d]);
      for (int c = 0; c < C; ++c) acc[r][c] = V::fmadd(qv, kv[c], acc[r][c]);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c) V::store(s + r * kAttnBk + jv + c * W, acc[r][c]);
}

// o[r, dc + c*W ..] += sum_{j < kn} p[r, j] * vp[j, dc + c*W ..] for R rows and C vectors.
template <class V, int R, int C>
inline void attn_pv_tile(const float* p, const float* vp, int64_t dhp, int64_t kn, float* o, int64_t dc) {
  using F = typename V::F;
  constexpr int W = V::W;
  F acc[R][C];
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c) acc[r][c] = V::load(o + r * dhp + dc + c * W);
  for (int64_t j = 0; j < kn; ++j) {
    F vv[C];
    for (int c = 0; c < C; ++c) vv[c] = V::load(vp + j * dhp + dc + c * W);
    for (int r = 0; r < R; ++r) {
      const F pr = V::set1(p[r * kAttnBk + j]);
      for (int c = 0; c < C; ++c) acc[r][c] = V::fmadd(pr, vv[c], acc[r][c]);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c) V::store(o + r * dhp + dc + c * W, acc[r][c]);
}

template <class V, int R>
inline void attn_qk_rows(const float* const* qr, const float* kt, int64_t dh, float* s, int64_t knv) {
  constexpr int W = V::W;
  int64_t jv = 0;
  for (; jv + 2 * W <= knv; jv += 2 * W) attn_qk_tile<V, R, 2>(qr, kt, dh, s, jv);
  if (jv < knv) attn_qk_tile<V, R, 1>(qr, kt, dh, s, jv);
}

template <class V, int R>
inline void attn_pv_rows(const float* p, const float* vp, int64_t dhp, int64_t kn, float* o) {
  constexpr int W = V::W;
  int64_t dc = 0;
  for (; dc + 2 * W <= dhp; dc += 2 * W) attn_pv_tile<V, R, 2>(p, vp, dhp, kn, o, dc);
  if (dc < dhp) attn_pv_tile<V, R, 1>(p, vp, dhp, kn, o, dc);
}

// Query rows [q0, q0 + qn) of (sequence at rows [row0, row0 + S), head h). mask: its key mask or nullptr.
template <class V>
void attention_task(const AttentionArgs& a, int64_t row0, int64_t S, int64_t h, int64_t q0, int64_t qn,
                    const int32_t* mask, float scale, int64_t ld, int64_t ldo) {
  using F = typename V::F;
  constexpr int W = V::W;
  constexpr int kRows = W >= 16 ? 8 : 4;  // rows per register tile: 8x2 accumulators need 32 registers
  const int64_t dh = a.head_dim;
  const int64_t dhp = (dh + W - 1) / W * W;  // <= kAttentionMaxHeadDim (a multiple of every W)
  alignas(64) float kt[kAttentionMaxHeadDim * kAttnBk];
  alignas(64) float vp[kAttnBk * kAttentionMaxHeadDim];
  alignas(64) float sp[kAttnBq * kAttnBk];
  alignas(64) float o[kAttnBq * kAttentionMaxHeadDim];
  alignas(64) float kbias[kAttnBk];
  float m[kAttnBq], l[kAttnBq];
  const float* qr[kAttnBq];
  for (int64_t i = 0; i < qn; ++i) {
    qr[i] = a.q + (row0 + q0 + i) * ld + h * dh;
    m[i] = -kInf;
    l[i] = 0.f;
    for (int64_t d = 0; d < dhp; d += W) V::store(o + i * dhp + d, V::zero());
  }
  const F sc = V::set1(scale);
  for (int64_t k0 = 0; k0 < S; k0 += kAttnBk) {
    const int64_t kn = S - k0 < kAttnBk ? S - k0 : kAttnBk;
    const int64_t knv = (kn + W - 1) / W * W;
    // Pack this key block: K^T [dh, kAttnBk] and V [kAttnBk, dhp], zero-padded.
    for (int64_t j = 0; j < kn; ++j) {
      const float* kr = a.k + (row0 + k0 + j) * ld + h * dh;
      const float* vr = a.v + (row0 + k0 + j) * ld + h * dh;
      for (int64_t d = 0; d < dh; ++d) kt[d * kAttnBk + j] = kr[d];
      for (int64_t d = 0; d < dh; ++d) vp[j * dhp + d] = vr[d];
      for (int64_t d = dh; d < dhp; ++d) vp[j * dhp + d] = 0.f;
    }
    for (int64_t j = kn; j < knv; ++j)
      for (int64_t d = 0; d < dh; ++d) kt[d * kAttnBk + j] = 0.f;
    for (int64_t j = 0; j < knv; ++j) kbias[j] = (j < kn && (mask == nullptr || mask[k0 + j] != 0)) ? 0.f : -kInf;
    // S = Q K^T
    int64_t i = 0;
    for (; i + kRows <= qn; i += kRows) attn_qk_rows<V, kRows>(qr + i, kt, dh, sp + i * kAttnBk, knv);
    for (; i + 4 <= qn; i += 4) attn_qk_rows<V, 4>(qr + i, kt, dh, sp + i * kAttnBk, knv);
    for (; i < qn; ++i) attn_qk_rows<V, 1>(qr + i, kt, dh, sp + i * kAttnBk, knv);
    // Online softmax: sp becomes P (unnormalised, relative to the new running max).
    for (i = 0; i < qn; ++i) {
      float* s = sp + i * kAttnBk;
      F mx = V::set1(-kInf);
      for (int64_t j = 0; j < knv; j += W) {
        const F x = V::fmadd(V::load(s + j), sc, V::load(kbias + j));
        V::store(s + j, x);
        mx = V::max(mx, x);
      }
      const float bm = V::reduce_max(mx);
      if (bm == -kInf) {  // no attended key in this block (yet): contributes nothing
        for (int64_t j = 0; j < knv; j += W) V::store(s + j, V::zero());
        continue;
      }
      const float mnew = m[i] > bm ? m[i] : bm;
      const float alpha = m[i] == -kInf ? 0.f : __builtin_expf(m[i] - mnew);
      const F mv = V::set1(mnew);
      F sum = V::zero();
      for (int64_t j = 0; j < knv; j += W) {
        const F p = exp<V>(V::sub(V::load(s + j), mv));
        V::store(s + j, p);
        sum = V::add(sum, p);
      }
      l[i] = l[i] * alpha + V::reduce_add(sum);
      if (alpha != 1.f) {
        const F av = V::set1(alpha);
        for (int64_t d = 0; d < dhp; d += W) V::store(o + i * dhp + d, V::mul(V::load(o + i * dhp + d), av));
      }
      m[i] = mnew;
    }
    // O += P V
    for (i = 0; i + kRows <= qn; i += kRows) attn_pv_rows<V, kRows>(sp + i * kAttnBk, vp, dhp, kn, o + i * dhp);
    for (; i + 4 <= qn; i += 4) attn_pv_rows<V, 4>(sp + i * kAttnBk, vp, dhp, kn, o + i * dhp);
    for (; i < qn; ++i) attn_pv_rows<V, 1>(sp + i * kAttnBk, vp, dhp, kn, o + i * dhp);
  }
  for (int64_t i = 0; i < qn; ++i) {
    float* out = a.out + (row0 + q0 + i) * ldo + h * dh;
    const F inv = V::set1(1.f / l[i]);
    int64_t d = 0;
    for (; d + W <= dh; d += W) V::store(out + d, V::mul(V::load(o + i * dhp + d), inv));
    if (d < dh) {
      const auto tm = V::tail_mask(static_cast<int>(dh - d));
      V::store_tail(out + d, tm, V::mul(V::load(o + i * dhp + d), inv));
    }
  }
}

// The whole call: OpenMP over (batch, head, query block); head_dim <= kAttentionMaxHeadDim. In the
// packed layout the grid is sized by the longest sequence and shorter ones skip their missing blocks.
template <class V>
void attention_all(const AttentionArgs& a) {
  if (a.batch <= 0 || a.seq <= 0 || a.heads <= 0 || a.head_dim <= 0) return;
  const int64_t width = a.heads * a.head_dim;
  const int64_t ld = a.ld ? a.ld : width, ldo = a.ldo ? a.ldo : width;
  const int64_t qblocks = (a.seq + kAttnBq - 1) / kAttnBq;
  const int64_t tasks = a.batch * a.heads * qblocks;
  const int64_t work = a.batch * a.heads * a.seq * a.seq * a.head_dim;
#pragma omp parallel for schedule(static) if (tasks > 1 && work >= (int64_t{1} << 16))
  for (int64_t t = 0; t < tasks; ++t) {
    const int64_t qb = t % qblocks, bh = t / qblocks;
    const int64_t h = bh % a.heads, b = bh / a.heads;
    // This sequence's rows: [b*seq, (b+1)*seq), or its packed rows (its own length, no mask).
    const int64_t row0 = a.seq_starts ? a.seq_starts[b] : b * a.seq;
    const int64_t len = a.seq_starts ? a.seq_starts[b + 1] - a.seq_starts[b] : a.seq;
    const int32_t* mask = a.key_mask ? a.key_mask + b * a.seq : nullptr;
    bool any = mask == nullptr;
    for (int64_t j = 0; !any && j < len; ++j) any = mask[j] != 0;
    const int64_t q0 = qb * kAttnBq;
    if (q0 >= len) continue;  // (packed: a shorter sequence has fewer query blocks)
    const int64_t qn = len - q0 < kAttnBq ? len - q0 : kAttnBq;
    // All keys masked: unmasked with every score 0 -> uniform P, exactly as the spec.
    attention_task<V>(a, row0, len, h, q0, qn, any ? mask : nullptr, any ? a.scale : 0.f, ld, ldo);
  }
}

}  // namespace
}  // namespace bert::kernels::simd
