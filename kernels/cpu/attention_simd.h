// Vector-width-generic body of the flash-style fused attention (kernels/attention.h), written against
// the vector traits of simd_kernels.h and instantiated by attention_avx2.cc / attention_avx512.cc (and
// by the tests with a portable 16-lane emulation).
//
// One task = (batch b, head h, block of up to kAttnBq query rows). The block's queries are packed once,
// transposed and scaled (Q^T [head_dim, kAttnBq], zero-padded); then the attended keys (masked keys are
// skipped, not computed) are visited in blocks of up to kAttnBk:
//   S^T = K Q^T        register tiles of kAttnRows keys x kAttnCols query vectors: broadcast k_j[d] (K
//                      read in place), load Q^T[d]
//   online softmax     vectorised over the queries (the key axis runs down S^T's rows): running max m
//                      and sum l per query; a row of O is rescaled by exp(m_old - m_new) when its max grows
//   O += P V           register tiles of kAttnRows queries x kAttnCols vectors of head_dim: broadcast
//                      P[i, j] (read down a column of P^T), load the row v_j (the block's V rows copied
//                      contiguous first: rows ld apart share a few cache sets)
// and finally out = O / l. Nothing is [seq, seq]; per-task scratch is on the stack (~210 KiB at the
// largest head_dim). Tasks never share outputs and each runs serially, so the bits do not depend on
// the thread count. A sequence whose keys are all masked runs unmasked with scale 0: every score is
// equal, so P is exactly uniform, as the spec demands.
#pragma once

#include <cstdint>
#include <type_traits>

#include "kernels/attention.h"
#include "kernels/cpu/simd_kernels.h"

namespace bert::kernels::simd {
namespace {

constexpr int64_t kAttnBq = 64;  // query rows per task (a multiple of every W)
constexpr int64_t kAttnBk = 64;  // attended keys per block

// Register tiles: R x C accumulators, C vector loads and one broadcast must fit the register file.
template <class V>
constexpr int kAttnRows = V::W >= 16 ? 6 : 4;
template <class V>
constexpr int kAttnCols = V::W >= 16 ? 4 : 2;

// st[r * kAttnBq + i0 + c*W ..] = sum_d kr[r][d] * qt[d, i0 + c*W ..] for R keys, C query vectors.
template <class V, int R, int C>
inline void attn_qk_tile(const float* const* kr, const float* qt, int64_t dh, float* st, int64_t i0) {
  using F = typename V::F;
  constexpr int W = V::W;
  F acc[R][C];
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c) acc[r][c] = V::zero();
  for (int64_t d = 0; d < dh; ++d) {
    F qv[C];
    for (int c = 0; c < C; ++c) qv[c] = V::load(qt + d * kAttnBq + i0 + c * W);
    for (int r = 0; r < R; ++r) {
      const F kv = V::set1(kr[r][d]);
      for (int c = 0; c < C; ++c) acc[r][c] = V::fmadd(kv, qv[c], acc[r][c]);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c) V::store(st + r * kAttnBq + i0 + c * W, acc[r][c]);
}

// S^T for the kn keys (rows kr) and query vectors [0, nv).
template <class V>
inline void attn_qk(const float* const* kr, int64_t kn, const float* qt, int64_t dh, float* st, int64_t nv) {
  constexpr int R = kAttnRows<V>, C = kAttnCols<V>, W = V::W;
  auto keys = [&](auto rows, int64_t j) {
    constexpr int Rj = decltype(rows)::value;
    int64_t c = 0;
    for (; c + C <= nv; c += C) attn_qk_tile<V, Rj, C>(kr + j, qt, dh, st + j * kAttnBq, c * W);
    for (; c < nv; ++c) attn_qk_tile<V, Rj, 1>(kr + j, qt, dh, st + j * kAttnBq, c * W);
  };
  int64_t j = 0;
  for (; j + R <= kn; j += R) keys(std::integral_constant<int, R>(), j);
  for (; j + 2 <= kn; j += 2) keys(std::integral_constant<int, 2>(), j);
  for (; j < kn; ++j) keys(std::integral_constant<int, 1>(), j);
}

// o[i0 + r, c*W ..] += sum_{j < kn} pt[j, i0 + r] * vb[j, c*W ..] for R queries and C head_dim vectors.
template <class V, int R, int C>
inline void attn_pv_tile(const float* pt, const float* vb, int64_t kn, float* o, int64_t dhp, int64_t i0,
                         int64_t c0) {
  using F = typename V::F;
  constexpr int W = V::W;
  F acc[R][C];
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c) acc[r][c] = V::load(o + (i0 + r) * dhp + c0 + c * W);
  for (int64_t j = 0; j < kn; ++j) {
    F vv[C];
    for (int c = 0; c < C; ++c) vv[c] = V::load(vb + j * dhp + c0 + c * W);
    for (int r = 0; r < R; ++r) {
      const F p = V::set1(pt[j * kAttnBq + i0 + r]);
      for (int c = 0; c < C; ++c) acc[r][c] = V::fmadd(p, vv[c], acc[r][c]);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c) V::store(o + (i0 + r) * dhp + c0 + c * W, acc[r][c]);
}

// R query rows from i0, every head_dim vector.
template <class V, int R>
inline void attn_pv_rows(const float* pt, const float* vb, int64_t kn, float* o, int64_t dhp, int64_t i0) {
  constexpr int C = kAttnCols<V>, W = V::W;
  int64_t c = 0;
  for (; c + C * W <= dhp; c += C * W) attn_pv_tile<V, R, C>(pt, vb, kn, o, dhp, i0, c);
  for (; c < dhp; c += W) attn_pv_tile<V, R, 1>(pt, vb, kn, o, dhp, i0, c);
}

// dst = src[0, n), zero-padded to a whole vector.
template <class V>
inline void copy_row(const float* src, int64_t n, float* dst) {
  constexpr int W = V::W;
  int64_t d = 0;
  for (; d + W <= n; d += W) V::store(dst + d, V::load(src + d));
  if (d < n) V::store(dst + d, V::load_tail(src + d, V::tail_mask(static_cast<int>(n - d))));
}

// A task's running state: the max m and sum l per query (nv*W of them) and O [qn, dhp], zeroed.
template <class V>
inline void attn_begin(float* m, float* l, float* o, int64_t nv, int64_t qn, int64_t dhp) {
  constexpr int W = V::W;
  for (int64_t i = 0; i < nv * W; i += W) {
    V::store(m + i, V::set1(-kInf));
    V::store(l + i, V::zero());
  }
  for (int64_t i = 0; i < qn; ++i)
    for (int64_t d = 0; d < dhp; d += W) V::store(o + i * dhp + d, V::zero());
}

// One key block's online softmax, down S^T's kn key rows, W queries at a time: st becomes P^T relative to
// the new running max, l gains the block's sums, and the rows of O whose max grew are rescaled.
template <class V>
inline void attn_softmax_block(float* st, int64_t kn, int64_t nv, float* m, float* l, float* o, int64_t qn,
                               int64_t dhp) {
  using F = typename V::F;
  constexpr int W = V::W;
  alignas(64) float alpha[kAttnBq];
  for (int64_t i = 0; i < nv * W; i += W) {
    F mx = V::load(m + i);
    const F mold = mx;
    for (int64_t k = 0; k < kn; ++k) mx = V::max(mx, V::load(st + k * kAttnBq + i));
    F sum = V::zero();
    for (int64_t k = 0; k < kn; ++k) {
      const F p = exp_nonpositive<V>(V::sub(V::load(st + k * kAttnBq + i), mx));
      V::store(st + k * kAttnBq + i, p);
      sum = V::add(sum, p);
    }
    const F al = exp_nonpositive<V>(V::sub(mold, mx));  // ~0 on the first block (m = -inf), where l = o = 0
    V::store(alpha + i, al);
    V::store(l + i, V::fmadd(V::load(l + i), al, sum));
    V::store(m + i, mx);
  }
  for (int64_t i = 0; i < qn; ++i) {
    if (alpha[i] == 1.f) continue;
    const F av = V::set1(alpha[i]);
    for (int64_t d = 0; d < dhp; d += W) V::store(o + i * dhp + d, V::mul(V::load(o + i * dhp + d), av));
  }
}

// out row i (ldo apart, head_dim wide) = O[i] / l[i] for the task's qn queries.
template <class V>
inline void attn_end(const float* o, const float* l, int64_t qn, int64_t dh, int64_t dhp, float* out, int64_t ldo) {
  using F = typename V::F;
  constexpr int W = V::W;
  for (int64_t i = 0; i < qn; ++i, out += ldo) {
    const F inv = V::set1(1.f / l[i]);
    int64_t d = 0;
    for (; d + W <= dh; d += W) V::store(out + d, V::mul(V::load(o + i * dhp + d), inv));
    if (d < dh) {
      const auto tm = V::tail_mask(static_cast<int>(dh - d));
      V::store_tail(out + d, tm, V::mul(V::load(o + i * dhp + d), inv));
    }
  }
}

// Query rows [q0, q0 + qn) of (sequence at rows [row0, row0 + S), head h). mask: its key mask or nullptr.
template <class V>
void attention_task(const AttentionArgs& a, int64_t row0, int64_t S, int64_t h, int64_t q0, int64_t qn,
                    const int32_t* mask, float scale, int64_t ld, int64_t ldo) {
  constexpr int W = V::W, R = kAttnRows<V>;
  const int64_t dh = a.head_dim;
  const int64_t dhp = (dh + W - 1) / W * W;  // <= kAttentionMaxHeadDim (a multiple of every W)
  const int64_t nv = (qn + W - 1) / W;       // query vectors
  alignas(64) float qt[kAttentionMaxHeadDim * kAttnBq];  // scale * Q^T [head_dim, kAttnBq], zero beyond qn
  alignas(64) float st[kAttnBk * kAttnBq];               // S^T, then P^T
  alignas(64) float o[kAttnBq * kAttentionMaxHeadDim];   // O, row-major [query, dhp]
  alignas(64) float vb[kAttnBk * kAttentionMaxHeadDim];  // the key block's V rows [kn, dhp], zero-padded
  alignas(64) float m[kAttnBq], l[kAttnBq];
  const float* kr[kAttnBk];                              // and its K rows, read in place
  for (int64_t i = 0; i < nv * W; ++i) {  // row by row: the query rows are ld apart, qt stays in L1
    const float* q = a.q + (row0 + q0 + i) * ld + h * dh;
    if (i < qn)
      for (int64_t d = 0; d < dh; ++d) qt[d * kAttnBq + i] = scale * q[d];
    else
      for (int64_t d = 0; d < dh; ++d) qt[d * kAttnBq + i] = 0.f;
  }
  attn_begin<V>(m, l, o, nv, qn, dhp);
  for (int64_t j = 0; j < S;) {
    // The next block of attended keys; V copied contiguous (rows ld apart would share a few cache sets).
    int64_t kn = 0;
    for (; j < S && kn < kAttnBk; ++j) {
      if (mask != nullptr && mask[j] == 0) continue;
      kr[kn] = a.k + (row0 + j) * ld + h * dh;
      copy_row<V>(a.v + (row0 + j) * ld + h * dh, dh, vb + kn * dhp);
      ++kn;
    }
    if (kn == 0) break;
    attn_qk<V>(kr, kn, qt, dh, st, nv);
    attn_softmax_block<V>(st, kn, nv, m, l, o, qn, dhp);
    // O += P V
    int64_t i = 0;
    for (; i + R <= qn; i += R) attn_pv_rows<V, R>(st, vb, kn, o, dhp, i);
    for (; i + 2 <= qn; i += 2) attn_pv_rows<V, 2>(st, vb, kn, o, dhp, i);
    for (; i < qn; ++i) attn_pv_rows<V, 1>(st, vb, kn, o, dhp, i);
  }
  attn_end<V>(o, l, qn, dh, dhp, a.out + (row0 + q0) * ldo + h * dh, ldo);
}

// The task grid of a call: OpenMP over (batch, head, block of block_q query rows), each task run as
// task(row0, len, h, q0, qn, mask, scale, ld, ldo) (attention_task's arguments after a). In the packed
// layout the grid is sized by the longest sequence and shorter ones skip their missing blocks.
template <class Task>
void attention_tasks(const AttentionArgs& a, int64_t block_q, const Task& task) {
  if (a.batch <= 0 || a.seq <= 0 || a.heads <= 0 || a.head_dim <= 0) return;
  const int64_t width = a.heads * a.head_dim;
  const int64_t ld = a.ld ? a.ld : width, ldo = a.ldo ? a.ldo : width;
  const int64_t qblocks = (a.seq + block_q - 1) / block_q;
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
    const int64_t q0 = qb * block_q;
    if (q0 >= len) continue;  // (packed: a shorter sequence has fewer query blocks)
    const int64_t qn = len - q0 < block_q ? len - q0 : block_q;
    // All keys masked: unmasked with every score 0 -> uniform P, exactly as the spec.
    task(row0, len, h, q0, qn, any ? mask : nullptr, any ? a.scale : 0.f, ld, ldo);
  }
}

// The whole call; head_dim <= kAttentionMaxHeadDim.
template <class V>
void attention_all(const AttentionArgs& a) {
  attention_tasks(a, kAttnBq, [&a](int64_t row0, int64_t S, int64_t h, int64_t q0, int64_t qn, const int32_t* mask,
                                   float scale, int64_t ld, int64_t ldo) {
    attention_task<V>(a, row0, S, h, q0, qn, mask, scale, ld, ldo);
  });
}

}  // namespace
}  // namespace bert::kernels::simd
