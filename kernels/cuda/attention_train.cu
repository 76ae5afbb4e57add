// Fused multi-head attention for training, fp32 on CUDA cores (kernels/cuda/attention_train.h).
//
// Forward (one CTA per (32-query tile, head, sequence), 128 threads): streams K and V through shared memory in
// tiles of 64 keys with an online softmax (running row max and row sum), like kernels/cuda/attention.cu's fp32
// kernel, and also writes the row's log-sum-exp lse = max + log(sum). Dropout is applied to the normalised
// probabilities on the fly: the P V product uses p * keep / (1 - p) while the row sum uses p itself.
//
// Backward: three kernels, no atomics (deterministic: the same inputs give the same bits).
//  1. delta_i = dout_i . out_i per (sequence, head, query row) (= rowsum(dP * P) of the CPU trainer, see the
//     header), one warp per row.
//  2. dK, dV: one CTA per (32-key tile, head, sequence) keeps its K / V tile in shared memory and its dK / dV
//     tile in registers, and loops over the sequence's queries in tiles of 64: recomputes the scores S = Q K^T
//     and dPraw = dout V^T of the [64 x 32] tile, P = exp(scale*S - lse), the dropout mask from the hash,
//     dS = scale * P * (dropout(dPraw) - delta), then dV += dropout(P)^T dout and dK += dS^T Q.
//  3. dQ: one CTA per (32-query tile, head, sequence) keeps Q, dout in shared memory and dQ in registers, loops
//     over key tiles of 64 recomputing the same P and dS, and accumulates dQ += dS K.
// Every score tile is [2048 / kBK queries x kBK keys] over 128 threads, each thread 4 query rows x 4 keys:
// rows 4*(t / (kBK/4)) + i, keys t % (kBK/4) + (kBK/4)*j.
//
// Masking follows kernels/softmax_masked.h exactly as attention.cu does: a masked key's scaled score is
// REPLACED by -1e30 (finite), so a real key drives it to exactly 0 and an all-masked row sees equal scores and
// becomes uniform over the `seq` keys; keys past the sequence end (tile padding) are excluded entirely. The
// forward's lse of an all-masked row is -1e30 + log(seq) = -1e30 in fp32, so exp(s - lse) cannot recover
// 1/seq there: the backward kernels detect an all-masked sequence from the key mask and use P = 1/seq.
//
// head_dim is a template parameter (16, 32, 64, 128); other head sizes use the next larger instance with the
// missing columns zero-filled on load (dot products then run over head_dim rounded up to 4) and never stored.
// Compiled here, tested against the CPU references only where a GPU exists.
#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <string>

#include "kernels/cuda/attention_train.h"
#include "kernels/cuda/launch_check.h"
#include "kernels/cuda/train_common.cuh"

namespace bert::kernels::cuda {

namespace {

constexpr int kThreads = 128;
constexpr float kMaskedScore = -1e30f;  // replaces the scaled score of a masked key (finite: see above)
constexpr unsigned kFullWarp = 0xffffffffu;

// Per key of the current tile: where it stands.
enum KeyFlag : signed char { kKeyOutside = -1, kKeyMasked = 0, kKeyAttends = 1 };

// The scaled score of a key as the softmax sees it.
__device__ __forceinline__ float masked_score(float raw, signed char flag, float scale) {
  return flag == kKeyAttends ? raw * scale : flag == kKeyMasked ? kMaskedScore : -INFINITY;
}

// The dropout of one attention layer call, as the kernels see it.
struct DropoutSpec {
  bool on;          // dropout_p > 0
  float p;
  float inv_keep;   // 1 / (1 - p)
  uint64_t seed;
  uint64_t offset;  // dropout_offset
};

// Hash index of element (query qi, key 0) of the [seq, seq] block of (sequence b, head h).
__device__ __forceinline__ uint64_t dropout_row_base(const DropoutSpec& dr, int64_t bh, int64_t seq, int64_t qi) {
  return dr.offset + (static_cast<uint64_t>(bh) * static_cast<uint64_t>(seq) + static_cast<uint64_t>(qi)) *
                         static_cast<uint64_t>(seq);
}

// The factor the dropout applies to element `index`: 0 (dropped) or 1 / (1 - p) (kept); 1 without dropout.
__device__ __forceinline__ float dropout_factor(const DropoutSpec& dr, uint64_t index) {
  if (!dr.on) return 1.f;
  return dropout_keep_device(dr.seed, index, dr.p) ? dr.inv_keep : 0.f;
}

// ---- shared tile helpers -------------------------------------------------------------------------------------

// Copies a [kRows, kD] tile into shared memory (row stride ld_dst): element (r, c) is src[r*ld_src + c] for
// r < rows and c < head_dim, and zero elsewhere (partial tiles, and the columns a smaller head_dim leaves).
// `vectorised`: src, ld_src and head_dim allow 16-byte global loads (stored to shared memory as scalars, since
// the odd shared strides are not 16-byte aligned).
template <int kRows, int kD>
__device__ void load_tile(float* dst, int ld_dst, const float* src, int64_t ld_src, int rows, int head_dim,
                          bool vectorised) {
  if (vectorised) {
    constexpr int kChunksPerRow = kD / 4;
    for (int i = threadIdx.x; i < kRows * kChunksPerRow; i += blockDim.x) {
      const int r = i / kChunksPerRow, c = (i % kChunksPerRow) * 4;
      float4 x = make_float4(0.f, 0.f, 0.f, 0.f);
      if (r < rows && c < head_dim) x = *reinterpret_cast<const float4*>(src + r * ld_src + c);
      float* d = dst + r * ld_dst + c;
      d[0] = x.x, d[1] = x.y, d[2] = x.z, d[3] = x.w;
    }
  } else {
    for (int i = threadIdx.x; i < kRows * kD; i += blockDim.x) {
      const int r = i / kD, c = i % kD;
      dst[r * ld_dst + c] = (r < rows && c < head_dim) ? src[r * ld_src + c] : 0.f;
    }
  }
}

// Flags of keys [k0, k0 + kKeys) of a sequence of `seq` keys with key mask row `mask` (nullptr = all attend).
template <int kKeys>
__device__ void load_key_flags(signed char* flags, const int32_t* mask, int64_t seq, int64_t k0) {
  for (int c = threadIdx.x; c < kKeys; c += blockDim.x) {
    const int64_t k = k0 + c;
    flags[c] = k >= seq ? kKeyOutside : (mask && mask[k] == 0) ? kKeyMasked : kKeyAttends;
  }
}

// Whether every key of the sequence is masked (then every P row is uniform). A block-wide barrier: every thread
// of the CTA must call it.
__device__ bool sequence_all_masked(const int32_t* mask, int64_t seq) {
  int attends = mask ? 0 : 1;
  if (mask)
    for (int64_t k = threadIdx.x; k < seq && !attends; k += blockDim.x) attends = mask[k] != 0;
  return __syncthreads_or(attends) == 0;
}

// How many of a tile's `block` rows exist when `remaining` (> 0) rows are left.
__device__ __forceinline__ int tile_rows(int64_t remaining, int block) {
  return remaining < block ? static_cast<int>(remaining) : block;
}

// Rows per thread and keys per thread of every score tile.
constexpr int kRowsPerThread = 4, kKeysPerThread = 4;

// Raw dot products of this thread's 4 query rows x 4 keys of a score tile: s = Q K^T and, with kWithDp,
// dp = dout V^T. Query row r of Q / dout at q_s / do_s[r*ld_q + d], key c of K / V at k_s / v_s[c*ld_k + d];
// the thread's rows are row0 + i, its keys col0 + kKeyStride*j. `dims`: head_dim rounded up to 4 (the
// columns past head_dim are zero in every tile).
template <int kKeyStride, bool kWithDp>
__device__ __forceinline__ void score_tile(const float* q_s, const float* do_s, int ld_q, const float* k_s,
                                           const float* v_s, int ld_k, int row0, int col0, int dims,
                                           float (&s)[kRowsPerThread][kKeysPerThread],
                                           float (&dp)[kRowsPerThread][kKeysPerThread]) {
#pragma unroll
  for (int i = 0; i < kRowsPerThread; ++i)
#pragma unroll
    for (int j = 0; j < kKeysPerThread; ++j) s[i][j] = 0.f, dp[i][j] = 0.f;
  for (int d0 = 0; d0 < dims; d0 += 4) {
#pragma unroll
    for (int d = d0; d < d0 + 4; ++d) {
      float qv[kRowsPerThread], kv[kKeysPerThread];
#pragma unroll
      for (int i = 0; i < kRowsPerThread; ++i) qv[i] = q_s[(row0 + i) * ld_q + d];
#pragma unroll
      for (int j = 0; j < kKeysPerThread; ++j) kv[j] = k_s[(col0 + kKeyStride * j) * ld_k + d];
#pragma unroll
      for (int i = 0; i < kRowsPerThread; ++i)
#pragma unroll
        for (int j = 0; j < kKeysPerThread; ++j) s[i][j] = fmaf(qv[i], kv[j], s[i][j]);
      if constexpr (kWithDp) {
        float ov[kRowsPerThread], vv[kKeysPerThread];
#pragma unroll
        for (int i = 0; i < kRowsPerThread; ++i) ov[i] = do_s[(row0 + i) * ld_q + d];
#pragma unroll
        for (int j = 0; j < kKeysPerThread; ++j) vv[j] = v_s[(col0 + kKeyStride * j) * ld_k + d];
#pragma unroll
        for (int i = 0; i < kRowsPerThread; ++i)
#pragma unroll
          for (int j = 0; j < kKeysPerThread; ++j) dp[i][j] = fmaf(ov[i], vv[j], dp[i][j]);
      }
    }
  }
}

// The probability P_ij recomputed by the backward (before dropout): 0 past the sequence end, 1/seq in an
// all-masked sequence (uniform), exp(masked scaled score - lse) otherwise (exactly 0 for a masked key).
__device__ __forceinline__ float recomputed_prob(float raw, signed char flag, float scale, float row_lse,
                                                 bool all_masked, float uniform) {
  if (flag == kKeyOutside) return 0.f;
  if (all_masked) return uniform;
  return expf(masked_score(raw, flag, scale) - row_lse);
}

// What every kernel needs to find its (sequence, head) in the [tokens, ld] row layouts.
struct HeadView {
  int64_t b, h, bh;     // sequence, head, and b*heads + h (the index of the [seq] slice of lse / delta)
  int64_t first_row;    // token row of query / key 0 of the sequence
  int64_t head_offset;  // h * head_dim
};

__device__ __forceinline__ HeadView head_view(const AttentionTrainArgs& a) {
  HeadView v;
  v.b = blockIdx.z, v.h = blockIdx.y, v.bh = v.b * a.heads + v.h;
  v.first_row = v.b * a.seq, v.head_offset = v.h * a.head_dim;
  return v;
}

// ---------------------------------------------------------------------------------------------------------------
// Forward: 32 query rows x 64-key tiles; thread t owns rows 4*(t/16) + i and keys / output columns
// (t%16) + 16*j, so the 16 threads sharing rows are one half-warp (row reductions are shuffles within it).

template <int kD>
struct ForwardLayout {
  static constexpr int kBlockK = 64, kBlockQ = 2048 / kBlockK, kKeyStride = kBlockK / 4;
  static constexpr int kLdQ = kD + 1, kLdK = kD + 1;  // odd strides: conflict-free column reads
  static constexpr int kLdV = kD;                     // read along rows
  static constexpr int kLdP = kBlockK + 1;
  static constexpr size_t kQ = 0;
  static constexpr size_t kK = kQ + size_t(kBlockQ) * kLdQ * 4;
  static constexpr size_t kV = kK + size_t(kBlockK) * kLdK * 4;
  static constexpr size_t kP = kV + size_t(kBlockK) * kLdV * 4;
  static constexpr size_t kFlags = kP + size_t(kBlockQ) * kLdP * 4;
  static constexpr size_t kBytes = kFlags + kBlockK;
  static_assert(kBlockQ == kRowsPerThread * kThreads / kKeyStride, "4 rows per thread cover the query tile");
};

template <int kD>
__global__ void __launch_bounds__(kThreads)
    attention_train_forward_kernel(AttentionTrainArgs a, float* out, int64_t ld_out, float* lse, DropoutSpec dr,
                                   bool vector_in) {
  using L = ForwardLayout<kD>;
  constexpr int kBlockQ = L::kBlockQ, kBlockK = L::kBlockK, kKeyStride = L::kKeyStride;
  constexpr int kCols = kD / 16;  // output columns per thread
  extern __shared__ __align__(128) unsigned char smem[];
  float* q_s = reinterpret_cast<float*>(smem + L::kQ);
  float* k_s = reinterpret_cast<float*>(smem + L::kK);
  float* v_s = reinterpret_cast<float*>(smem + L::kV);
  float* p_s = reinterpret_cast<float*>(smem + L::kP);
  signed char* flags = reinterpret_cast<signed char*>(smem + L::kFlags);

  const HeadView hv = head_view(a);
  const int64_t seq = a.seq, q0 = int64_t(blockIdx.x) * kBlockQ;
  const int head_dim = static_cast<int>(a.head_dim), dims = (head_dim + 3) & ~3;
  const int q_rows = tile_rows(seq - q0, kBlockQ);
  const int row0 = (threadIdx.x / kKeyStride) * kRowsPerThread, col0 = threadIdx.x % kKeyStride;
  const int32_t* mask = a.key_mask ? a.key_mask + hv.b * seq : nullptr;
  const float* q_g = a.q + hv.first_row * a.ld_qkv + hv.head_offset;
  const float* k_g = a.k + hv.first_row * a.ld_qkv + hv.head_offset;
  const float* v_g = a.v + hv.first_row * a.ld_qkv + hv.head_offset;

  load_tile<kBlockQ, kD>(q_s, L::kLdQ, q_g + q0 * a.ld_qkv, a.ld_qkv, q_rows, head_dim, vector_in);

  // Hash index of key 0 of each of this thread's rows (rows past the tile end are computed but never stored).
  uint64_t drop_base[kRowsPerThread];
#pragma unroll
  for (int i = 0; i < kRowsPerThread; ++i) drop_base[i] = dropout_row_base(dr, hv.bh, seq, q0 + row0 + i);

  float o[kRowsPerThread][kCols];
  float row_max[kRowsPerThread], row_sum[kRowsPerThread];
#pragma unroll
  for (int i = 0; i < kRowsPerThread; ++i) {
    row_max[i] = -INFINITY, row_sum[i] = 0.f;
#pragma unroll
    for (int n = 0; n < kCols; ++n) o[i][n] = 0.f;
  }

  for (int64_t k0 = 0; k0 < seq; k0 += kBlockK) {
    const int k_rows = tile_rows(seq - k0, kBlockK);
    __syncthreads();  // every thread is done with the previous K / V / P (and Q is loaded)
    load_tile<kBlockK, kD>(k_s, L::kLdK, k_g + k0 * a.ld_qkv, a.ld_qkv, k_rows, head_dim, vector_in);
    load_tile<kBlockK, kD>(v_s, L::kLdV, v_g + k0 * a.ld_qkv, a.ld_qkv, k_rows, head_dim, vector_in);
    load_key_flags<kBlockK>(flags, mask, seq, k0);
    __syncthreads();

    float score[kRowsPerThread][kKeysPerThread], unused[kRowsPerThread][kKeysPerThread];
    score_tile<kKeyStride, false>(q_s, nullptr, L::kLdQ, k_s, nullptr, L::kLdK, row0, col0, dims, score, unused);

#pragma unroll
    for (int i = 0; i < kRowsPerThread; ++i) {
      float tile_max = -INFINITY;
#pragma unroll
      for (int j = 0; j < kKeysPerThread; ++j) {
        score[i][j] = masked_score(score[i][j], flags[col0 + kKeyStride * j], a.scale);
        tile_max = fmaxf(tile_max, score[i][j]);
      }
#pragma unroll
      for (int m = kKeyStride / 2; m > 0; m >>= 1) tile_max = fmaxf(tile_max, __shfl_xor_sync(kFullWarp, tile_max, m));
      const float new_max = fmaxf(row_max[i], tile_max);  // finite: every tile holds a key in range
      const float alpha = expf(row_max[i] - new_max);     // 0 on the first tile
      float tile_sum = 0.f;
#pragma unroll
      for (int j = 0; j < kKeysPerThread; ++j) {
        const int c = col0 + kKeyStride * j;
        const float p = expf(score[i][j] - new_max);
        tile_sum += p;  // the normaliser sums the probabilities BEFORE dropout
        p_s[(row0 + i) * L::kLdP + c] = p * dropout_factor(dr, drop_base[i] + static_cast<uint64_t>(k0 + c));
      }
#pragma unroll
      for (int m = kKeyStride / 2; m > 0; m >>= 1) tile_sum += __shfl_xor_sync(kFullWarp, tile_sum, m);
      row_sum[i] = row_sum[i] * alpha + tile_sum;
      row_max[i] = new_max;
#pragma unroll
      for (int n = 0; n < kCols; ++n) o[i][n] *= alpha;
    }
    __syncwarp();  // P rows are written and read by the same half-warp

#pragma unroll 4
    for (int k = 0; k < k_rows; ++k) {  // P is 0 past the sequence end (and V is zero-filled there)
      float pv[kRowsPerThread], vv[kCols];
#pragma unroll
      for (int i = 0; i < kRowsPerThread; ++i) pv[i] = p_s[(row0 + i) * L::kLdP + k];
#pragma unroll
      for (int n = 0; n < kCols; ++n) vv[n] = v_s[k * L::kLdV + col0 + 16 * n];
#pragma unroll
      for (int i = 0; i < kRowsPerThread; ++i)
#pragma unroll
        for (int n = 0; n < kCols; ++n) o[i][n] = fmaf(pv[i], vv[n], o[i][n]);
    }
  }

  float* out_g = out + hv.first_row * ld_out + hv.head_offset;
#pragma unroll
  for (int i = 0; i < kRowsPerThread; ++i) {
    const int r = row0 + i;
    if (r >= q_rows) break;
    const float inv_sum = 1.f / row_sum[i];  // row_sum >= 1: the row max contributes exp(0)
    float* out_row = out_g + (q0 + r) * ld_out;
#pragma unroll
    for (int n = 0; n < kCols; ++n)
      if (col0 + 16 * n < head_dim) out_row[col0 + 16 * n] = o[i][n] * inv_sum;
    if (col0 == 0) lse[hv.bh * seq + q0 + r] = row_max[i] + logf(row_sum[i]);
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Backward 1: delta[bh*seq + i] = dout_i . out_i for head h of query row i, one warp per row.

__global__ void __launch_bounds__(kThreads)
    attention_train_delta_kernel(AttentionTrainArgs a, AttentionGradArgs g) {
  const int lane = threadIdx.x % 32;
  const int64_t rows = a.batch * a.heads * a.seq;
  const int64_t warps = int64_t(gridDim.x) * (kThreads / 32);
  for (int64_t r = int64_t(blockIdx.x) * (kThreads / 32) + threadIdx.x / 32; r < rows; r += warps) {
    const int64_t bh = r / a.seq, i = r % a.seq, b = bh / a.heads, h = bh % a.heads;
    const int64_t token = b * a.seq + i, col = h * a.head_dim;
    const float* o = g.out + token * g.ld_out + col;
    const float* d = g.d_out + token * g.ld_dout + col;
    float sum = 0.f;
    for (int64_t c = lane; c < a.head_dim; c += 32) sum = fmaf(o[c], d[c], sum);
#pragma unroll
    for (int m = 16; m > 0; m >>= 1) sum += __shfl_xor_sync(kFullWarp, sum, m);
    if (lane == 0) g.delta_workspace[r] = sum;
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Backward 2: dK and dV of a 32-key tile, looping over 64-query tiles. Score phase: thread t owns query rows
// 4*(t/8) + i and keys (t%8) + 8*j; accumulation phase: thread t owns keys 4*(t/16) + i and head columns
// (t%16) + 16*n of dK and dV (kept in registers across the query loop).

template <int kD>
struct KvGradLayout {
  static constexpr int kBlockK = 32, kBlockQ = 2048 / kBlockK, kKeyStride = kBlockK / 4;
  static constexpr int kLd = kD + 1;        // Q, dout, K, V rows: odd stride, conflict-free column reads
  static constexpr int kLdP = kBlockK + 1;  // dropped-P and dS rows
  static constexpr size_t kK = 0;
  static constexpr size_t kV = kK + size_t(kBlockK) * kLd * 4;
  static constexpr size_t kQ = kV + size_t(kBlockK) * kLd * 4;
  static constexpr size_t kDo = kQ + size_t(kBlockQ) * kLd * 4;
  static constexpr size_t kPd = kDo + size_t(kBlockQ) * kLd * 4;
  static constexpr size_t kDs = kPd + size_t(kBlockQ) * kLdP * 4;
  static constexpr size_t kLse = kDs + size_t(kBlockQ) * kLdP * 4;
  static constexpr size_t kDelta = kLse + size_t(kBlockQ) * 4;
  static constexpr size_t kFlags = kDelta + size_t(kBlockQ) * 4;
  static constexpr size_t kBytes = kFlags + kBlockK;
  static_assert(kBlockQ == kRowsPerThread * kThreads / kKeyStride, "4 rows per thread cover the query tile");
  static_assert(kBlockK == 4 * (kThreads / 16), "4 keys per thread cover the key tile when accumulating");
};

template <int kD>
__global__ void __launch_bounds__(kThreads)
    attention_train_dkdv_kernel(AttentionTrainArgs a, AttentionGradArgs g, DropoutSpec dr, bool vector_qkv,
                                bool vector_dout) {
  using L = KvGradLayout<kD>;
  constexpr int kBlockQ = L::kBlockQ, kBlockK = L::kBlockK, kKeyStride = L::kKeyStride, kLd = L::kLd;
  constexpr int kLdP = L::kLdP, kCols = kD / 16;
  extern __shared__ __align__(128) unsigned char smem[];
  float* k_s = reinterpret_cast<float*>(smem + L::kK);
  float* v_s = reinterpret_cast<float*>(smem + L::kV);
  float* q_s = reinterpret_cast<float*>(smem + L::kQ);
  float* do_s = reinterpret_cast<float*>(smem + L::kDo);
  float* pd_s = reinterpret_cast<float*>(smem + L::kPd);  // dropout(P), [query][key]
  float* ds_s = reinterpret_cast<float*>(smem + L::kDs);  // dS, [query][key]
  float* lse_s = reinterpret_cast<float*>(smem + L::kLse);
  float* delta_s = reinterpret_cast<float*>(smem + L::kDelta);
  signed char* flags = reinterpret_cast<signed char*>(smem + L::kFlags);

  const HeadView hv = head_view(a);
  const int64_t seq = a.seq, k0 = int64_t(blockIdx.x) * kBlockK;
  const int head_dim = static_cast<int>(a.head_dim), dims = (head_dim + 3) & ~3;
  const int k_rows = tile_rows(seq - k0, kBlockK);
  const int32_t* mask = a.key_mask ? a.key_mask + hv.b * seq : nullptr;
  const float* q_g = a.q + hv.first_row * a.ld_qkv + hv.head_offset;
  const float* do_g = g.d_out + hv.first_row * g.ld_dout + hv.head_offset;
  const float* lse_g = g.lse + hv.bh * seq;
  const float* delta_g = g.delta_workspace + hv.bh * seq;

  load_tile<kBlockK, kD>(k_s, kLd, a.k + (hv.first_row + k0) * a.ld_qkv + hv.head_offset, a.ld_qkv, k_rows,
                         head_dim, vector_qkv);
  load_tile<kBlockK, kD>(v_s, kLd, a.v + (hv.first_row + k0) * a.ld_qkv + hv.head_offset, a.ld_qkv, k_rows,
                         head_dim, vector_qkv);
  load_key_flags<kBlockK>(flags, mask, seq, k0);
  const bool all_masked = sequence_all_masked(mask, seq);  // also the barrier after the loads above
  const float uniform = 1.f / static_cast<float>(seq);

  // Score phase: query rows srow0 + i, keys scol0 + kKeyStride*j. Accumulation phase: keys arow0 + i, head
  // columns acol0 + 16*n.
  const int srow0 = (threadIdx.x / kKeyStride) * kRowsPerThread, scol0 = threadIdx.x % kKeyStride;
  const int arow0 = (threadIdx.x / 16) * 4, acol0 = threadIdx.x % 16;

  float dk[4][kCols], dv[4][kCols];
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int n = 0; n < kCols; ++n) dk[i][n] = 0.f, dv[i][n] = 0.f;

  for (int64_t q0 = 0; q0 < seq; q0 += kBlockQ) {
    const int q_rows = tile_rows(seq - q0, kBlockQ);
    __syncthreads();  // every thread is done with the previous Q / dout / dropped P / dS
    load_tile<kBlockQ, kD>(q_s, kLd, q_g + q0 * a.ld_qkv, a.ld_qkv, q_rows, head_dim, vector_qkv);
    load_tile<kBlockQ, kD>(do_s, kLd, do_g + q0 * g.ld_dout, g.ld_dout, q_rows, head_dim, vector_dout);
    for (int r = threadIdx.x; r < kBlockQ; r += blockDim.x) {
      lse_s[r] = r < q_rows ? lse_g[q0 + r] : 0.f;
      delta_s[r] = r < q_rows ? delta_g[q0 + r] : 0.f;
    }
    __syncthreads();

    float s[kRowsPerThread][kKeysPerThread], dp[kRowsPerThread][kKeysPerThread];
    score_tile<kKeyStride, true>(q_s, do_s, kLd, k_s, v_s, kLd, srow0, scol0, dims, s, dp);
#pragma unroll
    for (int i = 0; i < kRowsPerThread; ++i) {
      const int r = srow0 + i;
      const uint64_t base = dropout_row_base(dr, hv.bh, seq, q0 + r);
#pragma unroll
      for (int j = 0; j < kKeysPerThread; ++j) {
        const int c = scol0 + kKeyStride * j;
        const float p = r < q_rows ? recomputed_prob(s[i][j], flags[c], a.scale, lse_s[r], all_masked, uniform) : 0.f;
        const float keep = dropout_factor(dr, base + static_cast<uint64_t>(k0 + c));
        pd_s[r * kLdP + c] = p * keep;
        ds_s[r * kLdP + c] = a.scale * p * (dp[i][j] * keep - delta_s[r]);
      }
    }
    __syncthreads();

    // dV += dropout(P)^T dout, dK += dS^T Q over this tile's query rows.
    for (int r = 0; r < q_rows; ++r) {
      float pv[4], sv[4], ov[kCols], qv[kCols];
#pragma unroll
      for (int i = 0; i < 4; ++i) pv[i] = pd_s[r * kLdP + arow0 + i], sv[i] = ds_s[r * kLdP + arow0 + i];
#pragma unroll
      for (int n = 0; n < kCols; ++n) ov[n] = do_s[r * kLd + acol0 + 16 * n], qv[n] = q_s[r * kLd + acol0 + 16 * n];
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int n = 0; n < kCols; ++n) {
          dv[i][n] = fmaf(pv[i], ov[n], dv[i][n]);
          dk[i][n] = fmaf(sv[i], qv[n], dk[i][n]);
        }
    }
  }

  float* dk_g = g.dk + (hv.first_row + k0) * g.ld_dqkv + hv.head_offset;
  float* dv_g = g.dv + (hv.first_row + k0) * g.ld_dqkv + hv.head_offset;
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int key = arow0 + i;
    if (key >= k_rows) break;
#pragma unroll
    for (int n = 0; n < kCols; ++n) {
      const int c = acol0 + 16 * n;
      if (c < head_dim) dk_g[key * g.ld_dqkv + c] = dk[i][n], dv_g[key * g.ld_dqkv + c] = dv[i][n];
    }
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Backward 3: dQ of a 32-query tile, looping over 64-key tiles. Thread t owns query rows 4*(t/16) + i in both
// phases (keys (t%16) + 16*j of the score tile, head columns (t%16) + 16*n of dQ), so dS rows are written and
// read by the same half-warp.

template <int kD>
struct QGradLayout {
  static constexpr int kBlockK = 64, kBlockQ = 2048 / kBlockK, kKeyStride = kBlockK / 4;
  static constexpr int kLd = kD + 1;        // Q, dout, K, V rows
  static constexpr int kLdS = kBlockK + 1;  // dS rows
  static constexpr size_t kQ = 0;
  static constexpr size_t kDo = kQ + size_t(kBlockQ) * kLd * 4;
  static constexpr size_t kK = kDo + size_t(kBlockQ) * kLd * 4;
  static constexpr size_t kV = kK + size_t(kBlockK) * kLd * 4;
  static constexpr size_t kDs = kV + size_t(kBlockK) * kLd * 4;
  static constexpr size_t kLse = kDs + size_t(kBlockQ) * kLdS * 4;
  static constexpr size_t kDelta = kLse + size_t(kBlockQ) * 4;
  static constexpr size_t kFlags = kDelta + size_t(kBlockQ) * 4;
  static constexpr size_t kBytes = kFlags + kBlockK;
  static_assert(kBlockQ == kRowsPerThread * kThreads / kKeyStride, "4 rows per thread cover the query tile");
  static_assert(kKeyStride == 16, "the score and accumulation phases share the thread's rows");
};

template <int kD>
__global__ void __launch_bounds__(kThreads)
    attention_train_dq_kernel(AttentionTrainArgs a, AttentionGradArgs g, DropoutSpec dr, bool vector_qkv,
                              bool vector_dout) {
  using L = QGradLayout<kD>;
  constexpr int kBlockQ = L::kBlockQ, kBlockK = L::kBlockK, kKeyStride = L::kKeyStride, kLd = L::kLd;
  constexpr int kLdS = L::kLdS, kCols = kD / 16;
  extern __shared__ __align__(128) unsigned char smem[];
  float* q_s = reinterpret_cast<float*>(smem + L::kQ);
  float* do_s = reinterpret_cast<float*>(smem + L::kDo);
  float* k_s = reinterpret_cast<float*>(smem + L::kK);
  float* v_s = reinterpret_cast<float*>(smem + L::kV);
  float* ds_s = reinterpret_cast<float*>(smem + L::kDs);
  float* lse_s = reinterpret_cast<float*>(smem + L::kLse);
  float* delta_s = reinterpret_cast<float*>(smem + L::kDelta);
  signed char* flags = reinterpret_cast<signed char*>(smem + L::kFlags);

  const HeadView hv = head_view(a);
  const int64_t seq = a.seq, q0 = int64_t(blockIdx.x) * kBlockQ;
  const int head_dim = static_cast<int>(a.head_dim), dims = (head_dim + 3) & ~3;
  const int q_rows = tile_rows(seq - q0, kBlockQ);
  const int32_t* mask = a.key_mask ? a.key_mask + hv.b * seq : nullptr;
  const float* k_g = a.k + hv.first_row * a.ld_qkv + hv.head_offset;
  const float* v_g = a.v + hv.first_row * a.ld_qkv + hv.head_offset;

  load_tile<kBlockQ, kD>(q_s, kLd, a.q + (hv.first_row + q0) * a.ld_qkv + hv.head_offset, a.ld_qkv, q_rows,
                         head_dim, vector_qkv);
  load_tile<kBlockQ, kD>(do_s, kLd, g.d_out + (hv.first_row + q0) * g.ld_dout + hv.head_offset, g.ld_dout, q_rows,
                         head_dim, vector_dout);
  for (int r = threadIdx.x; r < kBlockQ; r += blockDim.x) {
    lse_s[r] = r < q_rows ? g.lse[hv.bh * seq + q0 + r] : 0.f;
    delta_s[r] = r < q_rows ? g.delta_workspace[hv.bh * seq + q0 + r] : 0.f;
  }
  const bool all_masked = sequence_all_masked(mask, seq);  // (the loop's first barrier publishes the loads)
  const float uniform = 1.f / static_cast<float>(seq);

  const int row0 = (threadIdx.x / kKeyStride) * kRowsPerThread, col0 = threadIdx.x % kKeyStride;
  uint64_t drop_base[kRowsPerThread];
#pragma unroll
  for (int i = 0; i < kRowsPerThread; ++i) drop_base[i] = dropout_row_base(dr, hv.bh, seq, q0 + row0 + i);

  float dq[kRowsPerThread][kCols];
#pragma unroll
  for (int i = 0; i < kRowsPerThread; ++i)
#pragma unroll
    for (int n = 0; n < kCols; ++n) dq[i][n] = 0.f;

  for (int64_t k0 = 0; k0 < seq; k0 += kBlockK) {
    const int k_rows = tile_rows(seq - k0, kBlockK);
    __syncthreads();  // every thread is done with the previous K / V / dS (and Q, dout, lse, delta are loaded)
    load_tile<kBlockK, kD>(k_s, kLd, k_g + k0 * a.ld_qkv, a.ld_qkv, k_rows, head_dim, vector_qkv);
    load_tile<kBlockK, kD>(v_s, kLd, v_g + k0 * a.ld_qkv, a.ld_qkv, k_rows, head_dim, vector_qkv);
    load_key_flags<kBlockK>(flags, mask, seq, k0);
    __syncthreads();

    float s[kRowsPerThread][kKeysPerThread], dp[kRowsPerThread][kKeysPerThread];
    score_tile<kKeyStride, true>(q_s, do_s, kLd, k_s, v_s, kLd, row0, col0, dims, s, dp);
#pragma unroll
    for (int i = 0; i < kRowsPerThread; ++i) {
      const int r = row0 + i;
#pragma unroll
      for (int j = 0; j < kKeysPerThread; ++j) {
        const int c = col0 + kKeyStride * j;
        const float p = r < q_rows ? recomputed_prob(s[i][j], flags[c], a.scale, lse_s[r], all_masked, uniform) : 0.f;
        const float keep = dropout_factor(dr, drop_base[i] + static_cast<uint64_t>(k0 + c));
        ds_s[r * kLdS + c] = a.scale * p * (dp[i][j] * keep - delta_s[r]);
      }
    }
    __syncwarp();  // dS rows are written and read by the same half-warp

    // dQ += dS K over this tile's keys (dS is 0 past the sequence end and K is zero-filled there).
#pragma unroll 4
    for (int k = 0; k < k_rows; ++k) {
      float sv[kRowsPerThread], kv[kCols];
#pragma unroll
      for (int i = 0; i < kRowsPerThread; ++i) sv[i] = ds_s[(row0 + i) * kLdS + k];
#pragma unroll
      for (int n = 0; n < kCols; ++n) kv[n] = k_s[k * kLd + col0 + 16 * n];
#pragma unroll
      for (int i = 0; i < kRowsPerThread; ++i)
#pragma unroll
        for (int n = 0; n < kCols; ++n) dq[i][n] = fmaf(sv[i], kv[n], dq[i][n]);
    }
  }

  float* dq_g = g.dq + (hv.first_row + q0) * g.ld_dqkv + hv.head_offset;
#pragma unroll
  for (int i = 0; i < kRowsPerThread; ++i) {
    const int r = row0 + i;
    if (r >= q_rows) break;
#pragma unroll
    for (int n = 0; n < kCols; ++n) {
      const int c = col0 + 16 * n;
      if (c < head_dim) dq_g[r * g.ld_dqkv + c] = dq[i][n];
    }
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Launchers.

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

bool fail(const char* fn, const char* what) {
  return record(cudaErrorInvalidValue, (std::string(fn) + ": " + what).c_str());
}

bool valid(const AttentionTrainArgs& a, const char* fn) {
  if (!a.q || !a.k || !a.v) return fail(fn, "q, k and v must be non-null device pointers");
  if (a.head_dim < 1 || a.head_dim > 128) return fail(fn, "head_dim must be in 1..128");
  if (a.heads < 1 || a.heads > 65535) return fail(fn, "heads must be in 1..65535");
  if (a.batch < 0 || a.batch > 65535) return fail(fn, "batch must be in 0..65535");
  if (a.seq < 0 || a.seq > INT32_MAX) return fail(fn, "seq must be in 0..2^31-1");
  if (a.ld_qkv < a.heads * a.head_dim) return fail(fn, "ld_qkv must be >= heads*head_dim");
  if (!(a.dropout_p >= 0.f && a.dropout_p < 1.f)) return fail(fn, "dropout_p must be in [0, 1)");
  return true;
}

DropoutSpec dropout_spec(const AttentionTrainArgs& a) {
  DropoutSpec d;
  d.on = a.dropout_p > 0.f;
  d.p = a.dropout_p;
  d.inv_keep = static_cast<float>(1.0 / (1.0 - static_cast<double>(a.dropout_p)));
  d.seed = a.dropout_seed;
  d.offset = a.dropout_offset;
  return d;
}

// Opts a kernel into more than 48 KB of dynamic shared memory, once per device (`configured`: a bit per device).
template <typename Kernel>
bool allow_shared_memory(Kernel kernel, size_t bytes, std::atomic<uint64_t>& configured, const char* fn) {
  if (bytes <= 48 * 1024) return true;
  int device = 0;
  if (!record(cudaGetDevice(&device), fn)) return false;
  const uint64_t bit = device >= 0 && device < 64 ? uint64_t(1) << device : 0;
  if (bit && (configured.load(std::memory_order_acquire) & bit)) return true;
  if (!record(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)),
              (std::string(fn) + ": cudaFuncSetAttribute(MaxDynamicSharedMemorySize)").c_str()))
    return false;
  configured.fetch_or(bit, std::memory_order_acq_rel);
  return true;
}

dim3 grid_of(const AttentionTrainArgs& a, int block_rows) {
  const int64_t tiles = (a.seq + block_rows - 1) / block_rows;  // <= 2^26: seq < 2^31
  return dim3(static_cast<unsigned>(tiles), static_cast<unsigned>(a.heads), static_cast<unsigned>(a.batch));
}

// 16-byte global loads of head slices: the base pointer, the row stride and head_dim all multiples of 4 floats.
bool vectorisable(const float* p, int64_t ld, int64_t head_dim) {
  return aligned16(p) && ld % 4 == 0 && head_dim % 4 == 0;
}

template <int kD>
bool launch_forward(const AttentionTrainArgs& a, float* out, int64_t ld_out, float* lse, cudaStream_t stream) {
  using L = ForwardLayout<kD>;
  static std::atomic<uint64_t> configured{0};
  if (!allow_shared_memory(attention_train_forward_kernel<kD>, L::kBytes, configured, "attention_train_forward"))
    return false;
  const bool vector_in = vectorisable(a.q, a.ld_qkv, a.head_dim) && vectorisable(a.k, a.ld_qkv, a.head_dim) &&
                         vectorisable(a.v, a.ld_qkv, a.head_dim);
  attention_train_forward_kernel<kD><<<grid_of(a, L::kBlockQ), kThreads, L::kBytes, stream>>>(
      a, out, ld_out, lse, dropout_spec(a), vector_in);
  return check_launch("attention_train_forward");
}

template <int kD>
bool launch_backward(const AttentionTrainArgs& a, const AttentionGradArgs& g, cudaStream_t stream) {
  using KvL = KvGradLayout<kD>;
  using QL = QGradLayout<kD>;
  static std::atomic<uint64_t> configured_kv{0}, configured_q{0};
  if (!allow_shared_memory(attention_train_dkdv_kernel<kD>, KvL::kBytes, configured_kv, "attention_train_backward") ||
      !allow_shared_memory(attention_train_dq_kernel<kD>, QL::kBytes, configured_q, "attention_train_backward"))
    return false;
  const bool vector_qkv = vectorisable(a.q, a.ld_qkv, a.head_dim) && vectorisable(a.k, a.ld_qkv, a.head_dim) &&
                          vectorisable(a.v, a.ld_qkv, a.head_dim);
  const bool vector_dout = vectorisable(g.d_out, g.ld_dout, a.head_dim);
  const DropoutSpec dr = dropout_spec(a);

  const int64_t rows = a.batch * a.heads * a.seq;
  const int64_t delta_blocks = std::min<int64_t>((rows + kThreads / 32 - 1) / (kThreads / 32), 65536);
  attention_train_delta_kernel<<<static_cast<unsigned>(delta_blocks), kThreads, 0, stream>>>(a, g);
  if (!check_launch("attention_train_backward delta")) return false;
  attention_train_dkdv_kernel<kD><<<grid_of(a, KvL::kBlockK), kThreads, KvL::kBytes, stream>>>(a, g, dr, vector_qkv,
                                                                                                vector_dout);
  if (!check_launch("attention_train_backward dK dV")) return false;
  attention_train_dq_kernel<kD><<<grid_of(a, QL::kBlockQ), kThreads, QL::kBytes, stream>>>(a, g, dr, vector_qkv,
                                                                                           vector_dout);
  return check_launch("attention_train_backward dQ");
}

}  // namespace

bool attention_train_forward(const AttentionTrainArgs& a, float* out, int64_t ld_out, float* lse, void* stream_handle) {
  constexpr const char* fn = "attention_train_forward";
  if (!valid(a, fn)) return false;
  if (!out || !lse) return fail(fn, "out and lse must be non-null device pointers");
  if (ld_out < a.heads * a.head_dim) return fail(fn, "ld_out must be >= heads*head_dim");
  if (a.batch == 0 || a.seq == 0) return true;
  const cudaStream_t stream = static_cast<cudaStream_t>(stream_handle);
  if (a.head_dim <= 16) return launch_forward<16>(a, out, ld_out, lse, stream);
  if (a.head_dim <= 32) return launch_forward<32>(a, out, ld_out, lse, stream);
  if (a.head_dim <= 64) return launch_forward<64>(a, out, ld_out, lse, stream);
  return launch_forward<128>(a, out, ld_out, lse, stream);
}

bool attention_train_backward(const AttentionTrainArgs& a, const AttentionGradArgs& g, void* stream_handle) {
  constexpr const char* fn = "attention_train_backward";
  if (!valid(a, fn)) return false;
  if (!g.out || !g.d_out || !g.dq || !g.dk || !g.dv || !g.lse || !g.delta_workspace)
    return fail(fn, "out, d_out, dq, dk, dv, lse and delta_workspace must be non-null device pointers");
  const int64_t width = a.heads * a.head_dim;
  if (g.ld_out < width) return fail(fn, "ld_out must be >= heads*head_dim");
  if (g.ld_dout < width) return fail(fn, "ld_dout must be >= heads*head_dim");
  if (g.ld_dqkv < width) return fail(fn, "ld_dqkv must be >= heads*head_dim");
  if (a.batch == 0 || a.seq == 0) return true;
  const cudaStream_t stream = static_cast<cudaStream_t>(stream_handle);
  if (a.head_dim <= 16) return launch_backward<16>(a, g, stream);
  if (a.head_dim <= 32) return launch_backward<32>(a, g, stream);
  if (a.head_dim <= 64) return launch_backward<64>(a, g, stream);
  return launch_backward<128>(a, g, stream);
}

}  // namespace bert::kernels::cuda
