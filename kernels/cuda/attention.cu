// Fused multi-head self-attention (kernels/cuda/attention.h), flash-attention style: one CTA per (query tile,
// head, sequence) streams the sequence's K and V through shared memory in tiles of 64 keys and keeps an online
// softmax (running row max and row sum in fp32), so the [seq, seq] scores never reach global memory.
//  - fp16: 4 warps x 16 query rows; Q K^T and P V on tensor cores (WMMA 16x16x16, fp32 accumulators), P rounded
//    to fp16 for the P V product, the output accumulators stay in registers across key tiles.
//  - fp32: 128 threads x (4 query rows x 4 keys) on CUDA-core FMAs, fp32 throughout (no TF32).
// head_dim is a template parameter (16, 32, 64, 128); other head sizes use the next larger instance with the
// missing columns zero-filled on load and never stored. Masking follows kernels/softmax_masked.h: a masked
// key's score is REPLACED by -1e30 (not added to), so any real key drives it to exactly 0 and an all-masked row
// sees equal scores and becomes uniform over the `seq` keys; keys past the sequence end are excluded entirely.
// Compiled here, tested against the CPU references only where a GPU exists.
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <mma.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>

#include "kernels/cuda/attention.h"
#include "kernels/cuda/launch_check.h"

namespace bert::kernels::cuda {

namespace {

using namespace nvcuda;

constexpr int kThreads = 128;
constexpr int kBlockK = 64;                 // keys per K / V tile (both kernels)
constexpr float kMaskedScore = -1e30f;      // replaces the score of a masked key (finite: see the file comment)
constexpr unsigned kFullWarp = 0xffffffffu;

// Per key of the current tile: where it stands.
enum KeyFlag : signed char { kKeyOutside = -1, kKeyMasked = 0, kKeyAttends = 1 };

// The scaled score of a key as the softmax sees it.
__device__ __forceinline__ float masked_score(float raw, signed char flag, float scale) {
  return flag == kKeyAttends ? raw * scale : flag == kKeyMasked ? kMaskedScore : -INFINITY;
}

// One sequence: its first token row, its length (queries = keys) and its key mask row (nullptr = none).
struct SequenceView {
  int64_t first_row;
  int len;
  const int32_t* mask;
};

__device__ SequenceView sequence_of(const AttentionArgs& a, int64_t b) {
  if (a.seq_starts) {
    const int32_t begin = a.seq_starts[b], end = a.seq_starts[b + 1];
    return {begin, max(end - begin, 0), nullptr};
  }
  return {b * a.seq, static_cast<int>(a.seq), a.key_mask ? a.key_mask + b * a.seq : nullptr};
}

__device__ void load_key_flags(signed char* flags, const SequenceView& s, int k0) {
  for (int c = threadIdx.x; c < kBlockK; c += blockDim.x) {
    const int k = k0 + c;
    flags[c] = k >= s.len ? kKeyOutside : (s.mask && s.mask[k] == 0) ? kKeyMasked : kKeyAttends;
  }
}

// Element j of a 16-byte chunk read as floats, without type punning (the fp16 tiles never need it).
template <typename T>
__device__ __forceinline__ T chunk_element(const uint4& c, int j);
template <>
__device__ __forceinline__ float chunk_element<float>(const uint4& c, int j) {
  return __uint_as_float(j == 0 ? c.x : j == 1 ? c.y : j == 2 ? c.z : c.w);
}

// Copies a [kRows, kCols] tile into shared memory (row stride ld_dst): element (r, c) is src[r*ld_src + c] for
// r < rows and c < head_dim, and zero elsewhere (partial tiles, and the columns a smaller head_dim leaves).
// T is float or uint16_t (fp16 bits). `vectorised`: src, ld_src and head_dim allow 16-byte loads;
// kDstAligned: ld_dst and dst keep every 16-byte chunk aligned in shared memory too.
template <typename T, int kRows, int kCols, bool kDstAligned>
__device__ void load_tile(T* dst, int ld_dst, const T* src, int64_t ld_src, int rows, int head_dim,
                          bool vectorised) {
  constexpr int kVec = 16 / static_cast<int>(sizeof(T));
  static_assert(kCols % kVec == 0, "tile columns are whole 16-byte chunks");
  if (vectorised) {
    constexpr int kChunksPerRow = kCols / kVec;
    for (int i = threadIdx.x; i < kRows * kChunksPerRow; i += blockDim.x) {
      const int r = i / kChunksPerRow, c = (i % kChunksPerRow) * kVec;
      uint4 chunk = make_uint4(0u, 0u, 0u, 0u);
      if (r < rows && c < head_dim) chunk = *reinterpret_cast<const uint4*>(src + r * ld_src + c);
      T* d = dst + r * ld_dst + c;
      if constexpr (kDstAligned) {
        *reinterpret_cast<uint4*>(d) = chunk;
      } else {
#pragma unroll
        for (int j = 0; j < kVec; ++j) d[j] = chunk_element<T>(chunk, j);
      }
    }
  } else {
    for (int i = threadIdx.x; i < kRows * kCols; i += blockDim.x) {
      const int r = i / kCols, c = i % kCols;
      dst[r * ld_dst + c] = (r < rows && c < head_dim) ? src[r * ld_src + c] : T(0);
    }
  }
}

__device__ __forceinline__ unsigned pack_half2(float lo, float hi) {
  return static_cast<unsigned>(__half_as_ushort(__float2half_rn(lo))) |
         (static_cast<unsigned>(__half_as_ushort(__float2half_rn(hi))) << 16);
}

// ---------------------------------------------------------------------------------------------------------------
// fp16 on tensor cores.

// Shared memory of the fp16 kernel (bytes; every region starts on a 128-byte boundary, as WMMA needs 32).
template <int kD>
struct F16Layout {
  static constexpr int kBlockQ = 64;                 // 4 warps x 16 query rows
  static constexpr int kLd = kD + 8;                 // Q / K / V rows (halves): +16 bytes against bank conflicts
  static constexpr int kLdS = kBlockK + 4;           // score rows (floats); P (halves) aliases them, stride 2*kLdS
  static constexpr int kLdO = kD + 4;                // output staging rows (floats)
  static constexpr size_t kQBytes = size_t(kBlockQ) * kLd * 2;
  static constexpr size_t kKvBytes = size_t(kBlockK) * kLd * 2;
  static constexpr size_t kSBytes = size_t(kBlockQ) * kLdS * 4;
  static constexpr size_t kQ = 0, kK = kQ + kQBytes, kV = kK + kKvBytes, kS = kV + kKvBytes;
  static constexpr size_t kAlpha = kS + kSBytes;     // per query row: the rescale factor, then 1/row sum
  static constexpr size_t kFlags = kAlpha + kBlockQ * 4;
  static constexpr size_t kBytes = kFlags + kBlockK;
  static constexpr size_t kStage = kK;               // output staging [kBlockQ, kLdO] floats reuses K and V
  static_assert(kQBytes % 128 == 0 && kKvBytes % 128 == 0 && kSBytes % 128 == 0, "128-byte aligned regions");
  static_assert(size_t(kBlockQ) * kLdO * 4 <= 2 * kKvBytes, "the output staging fits in the K and V tiles");
};

using HalfA = wmma::fragment<wmma::matrix_a, 16, 16, 16, __half, wmma::row_major>;
using HalfBCol = wmma::fragment<wmma::matrix_b, 16, 16, 16, __half, wmma::col_major>;
using HalfBRow = wmma::fragment<wmma::matrix_b, 16, 16, 16, __half, wmma::row_major>;
using FloatAcc = wmma::fragment<wmma::accumulator, 16, 16, 16, float>;

template <int kD>
__global__ void __launch_bounds__(kThreads) attention_f16_kernel(AttentionArgs a, bool vector_in, bool vector_out) {
  using L = F16Layout<kD>;
  constexpr int kBlockQ = L::kBlockQ, kLd = L::kLd, kLdS = L::kLdS, kLdO = L::kLdO;
  extern __shared__ __align__(128) unsigned char smem[];
  uint16_t* q_s = reinterpret_cast<uint16_t*>(smem + L::kQ);
  uint16_t* k_s = reinterpret_cast<uint16_t*>(smem + L::kK);
  uint16_t* v_s = reinterpret_cast<uint16_t*>(smem + L::kV);
  float* s_s = reinterpret_cast<float*>(smem + L::kS);
  float* alpha_s = reinterpret_cast<float*>(smem + L::kAlpha);
  signed char* flags = reinterpret_cast<signed char*>(smem + L::kFlags);
  float* stage_s = reinterpret_cast<float*>(smem + L::kStage);

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const SequenceView s = sequence_of(a, blockIdx.z);
  const int head_dim = static_cast<int>(a.head_dim);
  const int64_t head_offset = int64_t(blockIdx.y) * a.head_dim;
  const uint16_t* q_g = static_cast<const uint16_t*>(a.q) + s.first_row * a.ld_qkv + head_offset;
  const uint16_t* k_g = static_cast<const uint16_t*>(a.k) + s.first_row * a.ld_qkv + head_offset;
  const uint16_t* v_g = static_cast<const uint16_t*>(a.v) + s.first_row * a.ld_qkv + head_offset;
  __half* out_g = static_cast<__half*>(a.out) + s.first_row * a.ld_out + head_offset;

  const __half* q_w = reinterpret_cast<const __half*>(q_s) + warp * 16 * kLd;  // this warp's 16 query rows
  const __half* k_h = reinterpret_cast<const __half*>(k_s);
  const __half* v_h = reinterpret_cast<const __half*>(v_s);
  float* s_w = s_s + warp * 16 * kLdS;                 // this warp's 16 score rows ...
  __half* p_w = reinterpret_cast<__half*>(s_w);        // ... and their probabilities (row stride 2*kLdS halves)
  float* alpha_w = alpha_s + warp * 16;
  float* stage_w = stage_s + warp * 16 * kLdO;

  // Which row of a 16x16 accumulator tile each fragment element holds: the layout is unspecified, so load a
  // tile whose elements are their own row numbers and read it back.
  int frag_row[FloatAcc::num_elements];
  {
    for (int i = lane; i < 256; i += 32) s_w[(i / 16) * kLdS + i % 16] = static_cast<float>(i / 16);
    __syncwarp();
    FloatAcc rows;
    wmma::load_matrix_sync(rows, s_w, kLdS, wmma::mem_row_major);
#pragma unroll
    for (int i = 0; i < FloatAcc::num_elements; ++i) frag_row[i] = static_cast<int>(rows.x[i]);
    __syncwarp();
  }

  // Softmax work split: two lanes per score row, each taking column pairs (4j + 2*side, +1) for j < 16.
  const int my_row = lane / 2, side = lane % 2;

  for (int64_t q0 = int64_t(blockIdx.x) * kBlockQ; q0 < s.len; q0 += int64_t(gridDim.x) * kBlockQ) {
    const int q_rows = static_cast<int>(s.len - q0 < kBlockQ ? s.len - q0 : kBlockQ);
    // (No barrier needed here: the previous pass's last Q read precedes its staging barrier.)
    load_tile<uint16_t, kBlockQ, kD, true>(q_s, kLd, q_g + q0 * a.ld_qkv, a.ld_qkv, q_rows, head_dim, vector_in);

    FloatAcc o[kD / 16];
#pragma unroll
    for (int n = 0; n < kD / 16; ++n) wmma::fill_fragment(o[n], 0.f);
    float row_max = -INFINITY, row_sum = 0.f;  // of row my_row, the same in both lanes of the row

    for (int k0 = 0; k0 < s.len; k0 += kBlockK) {
      const int k_rows = min(kBlockK, s.len - k0);
      __syncthreads();  // every warp is done with the previous K / V tile (and the staging of a previous pass)
      load_tile<uint16_t, kBlockK, kD, true>(k_s, kLd, k_g + k0 * a.ld_qkv, a.ld_qkv, k_rows, head_dim, vector_in);
      load_tile<uint16_t, kBlockK, kD, true>(v_s, kLd, v_g + k0 * a.ld_qkv, a.ld_qkv, k_rows, head_dim, vector_in);
      load_key_flags(flags, s, k0);
      __syncthreads();

      // S = Q K^T for this warp's 16 rows x 64 keys.
      {
        FloatAcc acc[kBlockK / 16];
#pragma unroll
        for (int n = 0; n < kBlockK / 16; ++n) wmma::fill_fragment(acc[n], 0.f);
#pragma unroll
        for (int kk = 0; kk < kD / 16; ++kk) {
          HalfA qa;
          wmma::load_matrix_sync(qa, q_w + kk * 16, kLd);
#pragma unroll
          for (int n = 0; n < kBlockK / 16; ++n) {
            HalfBCol kb;  // K^T: element (d, key) at k_s[key * kLd + d]
            wmma::load_matrix_sync(kb, k_h + n * 16 * kLd + kk * 16, kLd);
            wmma::mma_sync(acc[n], qa, kb, acc[n]);
          }
        }
#pragma unroll
        for (int n = 0; n < kBlockK / 16; ++n) wmma::store_matrix_sync(s_w + n * 16, acc[n], kLdS, wmma::mem_row_major);
      }
      __syncwarp();

      // Online softmax of the tile: new running max, rescale factor, P = exp(s - max) in fp16 over S.
      {
        float score[kBlockK / 4][2];
        float tile_max = -INFINITY;
#pragma unroll
        for (int j = 0; j < kBlockK / 4; ++j) {
          const int col = 4 * j + 2 * side;
          const float2 raw = *reinterpret_cast<const float2*>(s_w + my_row * kLdS + col);
          score[j][0] = masked_score(raw.x, flags[col], a.scale);
          score[j][1] = masked_score(raw.y, flags[col + 1], a.scale);
          tile_max = fmaxf(tile_max, fmaxf(score[j][0], score[j][1]));
        }
        tile_max = fmaxf(tile_max, __shfl_xor_sync(kFullWarp, tile_max, 1));
        const float new_max = fmaxf(row_max, tile_max);  // finite: every tile holds at least one key in range
        const float alpha = __expf(row_max - new_max);    // 0 on the first tile (row_max = -inf)
        __syncwarp();  // every lane has read its scores before P overwrites them
        float tile_sum = 0.f;
#pragma unroll
        for (int j = 0; j < kBlockK / 4; ++j) {
          const __half2 p = __floats2half2_rn(__expf(score[j][0] - new_max), __expf(score[j][1] - new_max));
          tile_sum += __low2float(p) + __high2float(p);  // the sum of what P V multiplies
          *reinterpret_cast<__half2*>(p_w + my_row * 2 * kLdS + 4 * j + 2 * side) = p;
        }
        tile_sum += __shfl_xor_sync(kFullWarp, tile_sum, 1);
        row_sum = row_sum * alpha + tile_sum;
        row_max = new_max;
        if (side == 0) alpha_w[my_row] = alpha;
      }
      __syncwarp();

      // O = alpha * O + P V.
#pragma unroll
      for (int n = 0; n < kD / 16; ++n)
#pragma unroll
        for (int i = 0; i < FloatAcc::num_elements; ++i) o[n].x[i] *= alpha_w[frag_row[i]];
#pragma unroll
      for (int kk = 0; kk < kBlockK / 16; ++kk) {
        HalfA pa;
        wmma::load_matrix_sync(pa, p_w + kk * 16, 2 * kLdS);
#pragma unroll
        for (int n = 0; n < kD / 16; ++n) {
          HalfBRow vb;
          wmma::load_matrix_sync(vb, v_h + kk * 16 * kLd + n * 16, kLd);
          wmma::mma_sync(o[n], pa, vb, o[n]);
        }
      }
    }

    // O / row sum (> 0: the row max contributes exp(0) = 1), staged in fp32 over K / V, then stored as fp16.
    __syncwarp();  // every lane has read alpha_w
    if (side == 0) alpha_w[my_row] = 1.f / row_sum;
    __syncwarp();
#pragma unroll
    for (int n = 0; n < kD / 16; ++n)
#pragma unroll
      for (int i = 0; i < FloatAcc::num_elements; ++i) o[n].x[i] *= alpha_w[frag_row[i]];
    __syncthreads();  // every warp is done with K / V and with Q
#pragma unroll
    for (int n = 0; n < kD / 16; ++n) wmma::store_matrix_sync(stage_w + n * 16, o[n], kLdO, wmma::mem_row_major);
    __syncwarp();
    // This warp's rows that exist: at most its own 16 (the staging rows past them are other warps', written
    // after only this warp's __syncwarp), none when the tile ends before them.
    const int rows_w = min(16, q_rows - warp * 16);
    __half* out_w = out_g + (q0 + warp * 16) * a.ld_out;
    if (vector_out) {  // 8 halves (16 bytes) at a time
      const int chunks = head_dim / 8;
      for (int i = lane; i < rows_w * chunks; i += 32) {
        const int r = i / chunks, c = (i % chunks) * 8;
        const float4 lo = *reinterpret_cast<const float4*>(stage_w + r * kLdO + c);
        const float4 hi = *reinterpret_cast<const float4*>(stage_w + r * kLdO + c + 4);
        *reinterpret_cast<uint4*>(out_w + r * a.ld_out + c) =
            make_uint4(pack_half2(lo.x, lo.y), pack_half2(lo.z, lo.w), pack_half2(hi.x, hi.y), pack_half2(hi.z, hi.w));
      }
    } else {
      for (int i = lane; i < rows_w * head_dim; i += 32) {
        const int r = i / head_dim, c = i % head_dim;
        out_w[r * a.ld_out + c] = __float2half_rn(stage_w[r * kLdO + c]);
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------------------------
// fp32 on CUDA cores. Thread t owns query rows 4*(t/16) + i and keys / output columns (t%16) + 16*j, so the 16
// threads sharing rows are one half-warp (row reductions are shuffles within it).

template <int kD>
struct F32Layout {
  static constexpr int kBlockQ = 32;
  static constexpr int kLdQ = kD + 1, kLdK = kD + 1;  // odd strides: conflict-free column reads
  static constexpr int kLdV = kD;                     // read along rows; 16-byte aligned rows
  static constexpr int kLdP = kBlockK + 1;
  static constexpr size_t kQ = 0;
  static constexpr size_t kK = kQ + size_t(kBlockQ) * kLdQ * 4;
  static constexpr size_t kV = kK + size_t(kBlockK) * kLdK * 4;
  static constexpr size_t kP = kV + size_t(kBlockK) * kLdV * 4;
  static constexpr size_t kFlags = kP + size_t(kBlockQ) * kLdP * 4;
  static constexpr size_t kBytes = kFlags + kBlockK;
  static_assert(kV % 16 == 0, "V rows are stored 16 bytes at a time");
};

template <int kD>
__global__ void __launch_bounds__(kThreads) attention_f32_kernel(AttentionArgs a, bool vector_in) {
  using L = F32Layout<kD>;
  constexpr int kBlockQ = L::kBlockQ, kLdQ = L::kLdQ, kLdK = L::kLdK, kLdV = L::kLdV, kLdP = L::kLdP;
  constexpr int kRows = 4, kKeys = kBlockK / 16, kCols = kD / 16;  // per thread
  extern __shared__ __align__(128) unsigned char smem[];
  float* q_s = reinterpret_cast<float*>(smem + L::kQ);
  float* k_s = reinterpret_cast<float*>(smem + L::kK);
  float* v_s = reinterpret_cast<float*>(smem + L::kV);
  float* p_s = reinterpret_cast<float*>(smem + L::kP);
  signed char* flags = reinterpret_cast<signed char*>(smem + L::kFlags);

  const int row0 = (threadIdx.x / 16) * kRows, col0 = threadIdx.x % 16;
  const SequenceView s = sequence_of(a, blockIdx.z);
  const int head_dim = static_cast<int>(a.head_dim);
  const int64_t head_offset = int64_t(blockIdx.y) * a.head_dim;
  const float* q_g = static_cast<const float*>(a.q) + s.first_row * a.ld_qkv + head_offset;
  const float* k_g = static_cast<const float*>(a.k) + s.first_row * a.ld_qkv + head_offset;
  const float* v_g = static_cast<const float*>(a.v) + s.first_row * a.ld_qkv + head_offset;
  float* out_g = static_cast<float*>(a.out) + s.first_row * a.ld_out + head_offset;

  for (int64_t q0 = int64_t(blockIdx.x) * kBlockQ; q0 < s.len; q0 += int64_t(gridDim.x) * kBlockQ) {
    const int q_rows = static_cast<int>(s.len - q0 < kBlockQ ? s.len - q0 : kBlockQ);
    __syncthreads();  // every thread of a previous pass is done with Q
    load_tile<float, kBlockQ, kD, false>(q_s, kLdQ, q_g + q0 * a.ld_qkv, a.ld_qkv, q_rows, head_dim, vector_in);

    float o[kRows][kCols];
    float row_max[kRows], row_sum[kRows];
#pragma unroll
    for (int i = 0; i < kRows; ++i) {
      row_max[i] = -INFINITY, row_sum[i] = 0.f;
#pragma unroll
      for (int n = 0; n < kCols; ++n) o[i][n] = 0.f;
    }

    for (int k0 = 0; k0 < s.len; k0 += kBlockK) {
      const int k_rows = min(kBlockK, s.len - k0);
      __syncthreads();  // every thread is done with the previous K / V / P
      load_tile<float, kBlockK, kD, false>(k_s, kLdK, k_g + k0 * a.ld_qkv, a.ld_qkv, k_rows, head_dim, vector_in);
      load_tile<float, kBlockK, kD, true>(v_s, kLdV, v_g + k0 * a.ld_qkv, a.ld_qkv, k_rows, head_dim, vector_in);
      load_key_flags(flags, s, k0);
      __syncthreads();

      float score[kRows][kKeys];
#pragma unroll
      for (int i = 0; i < kRows; ++i)
#pragma unroll
        for (int j = 0; j < kKeys; ++j) score[i][j] = 0.f;
#pragma unroll 8
      for (int d = 0; d < kD; ++d) {
        float qv[kRows], kv[kKeys];
#pragma unroll
        for (int i = 0; i < kRows; ++i) qv[i] = q_s[(row0 + i) * kLdQ + d];
#pragma unroll
        for (int j = 0; j < kKeys; ++j) kv[j] = k_s[(col0 + 16 * j) * kLdK + d];
#pragma unroll
        for (int i = 0; i < kRows; ++i)
#pragma unroll
          for (int j = 0; j < kKeys; ++j) score[i][j] = fmaf(qv[i], kv[j], score[i][j]);
      }

#pragma unroll
      for (int i = 0; i < kRows; ++i) {
        float tile_max = -INFINITY;
#pragma unroll
        for (int j = 0; j < kKeys; ++j) {
          score[i][j] = masked_score(score[i][j], flags[col0 + 16 * j], a.scale);
          tile_max = fmaxf(tile_max, score[i][j]);
        }
#pragma unroll
        for (int o16 = 8; o16 > 0; o16 >>= 1) tile_max = fmaxf(tile_max, __shfl_xor_sync(kFullWarp, tile_max, o16));
        const float new_max = fmaxf(row_max[i], tile_max);  // finite: every tile holds a key in range
        const float alpha = expf(row_max[i] - new_max);     // 0 on the first tile
        float tile_sum = 0.f;
#pragma unroll
        for (int j = 0; j < kKeys; ++j) {
          const float p = expf(score[i][j] - new_max);
          tile_sum += p;
          p_s[(row0 + i) * kLdP + col0 + 16 * j] = p;
        }
#pragma unroll
        for (int o16 = 8; o16 > 0; o16 >>= 1) tile_sum += __shfl_xor_sync(kFullWarp, tile_sum, o16);
        row_sum[i] = row_sum[i] * alpha + tile_sum;
        row_max[i] = new_max;
#pragma unroll
        for (int n = 0; n < kCols; ++n) o[i][n] *= alpha;
      }
      __syncwarp();  // P rows are written and read by the same half-warp

#pragma unroll 4
      for (int k = 0; k < k_rows; ++k) {  // P is 0 past the sequence end
        float pv[kRows], vv[kCols];
#pragma unroll
        for (int i = 0; i < kRows; ++i) pv[i] = p_s[(row0 + i) * kLdP + k];
#pragma unroll
        for (int n = 0; n < kCols; ++n) vv[n] = v_s[k * kLdV + col0 + 16 * n];
#pragma unroll
        for (int i = 0; i < kRows; ++i)
#pragma unroll
          for (int n = 0; n < kCols; ++n) o[i][n] = fmaf(pv[i], vv[n], o[i][n]);
      }
    }

#pragma unroll
    for (int i = 0; i < kRows; ++i) {
      if (row0 + i >= q_rows) break;
      const float inv_sum = 1.f / row_sum[i];
      float* out_row = out_g + (q0 + row0 + i) * a.ld_out;
#pragma unroll
      for (int n = 0; n < kCols; ++n)
        if (col0 + 16 * n < head_dim) out_row[col0 + 16 * n] = o[i][n] * inv_sum;
    }
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Launchers.

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

bool fail(const char* what) { return record(cudaErrorInvalidValue, what); }

bool valid(const AttentionArgs& a) {
  if (!a.q || !a.k || !a.v || !a.out) return fail("attention: q, k, v and out must be non-null device pointers");
  if (a.dtype != DType::kF32 && a.dtype != DType::kF16) return fail("attention: dtype must be fp32 or fp16");
  if (a.head_dim < 1 || a.head_dim > 128) return fail("attention: head_dim must be in 1..128");
  if (a.heads < 1 || a.heads > 65535) return fail("attention: heads must be in 1..65535");
  if (a.batch < 0 || a.batch > 65535) return fail("attention: batch must be in 0..65535");
  if (a.seq < 0 || a.seq > INT32_MAX) return fail("attention: seq must be in 0..2^31-1");
  if (a.ld_qkv < a.heads * a.head_dim) return fail("attention: ld_qkv must be >= heads*head_dim");
  if (a.ld_out < a.heads * a.head_dim) return fail("attention: ld_out must be >= heads*head_dim");
  if (a.seq_starts && a.key_mask) return fail("attention: key_mask is for the padded layout only (seq_starts is set)");
  return true;
}

// Opts a kernel into more than 48 KB of dynamic shared memory, once per device (`configured`: a bit per device).
template <typename Kernel>
bool allow_shared_memory(Kernel kernel, size_t bytes, std::atomic<uint64_t>& configured) {
  if (bytes <= 48 * 1024) return true;
  int device = 0;
  if (!record(cudaGetDevice(&device), "attention: cudaGetDevice")) return false;
  const uint64_t bit = device >= 0 && device < 64 ? uint64_t(1) << device : 0;
  if (bit && (configured.load(std::memory_order_acquire) & bit)) return true;
  if (!record(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)),
              "attention: cudaFuncSetAttribute(MaxDynamicSharedMemorySize)"))
    return false;
  configured.fetch_or(bit, std::memory_order_acq_rel);
  return true;
}

dim3 grid_of(const AttentionArgs& a, int block_q) {
  const int64_t tiles = std::min<int64_t>((a.seq + block_q - 1) / block_q, INT32_MAX);
  return dim3(static_cast<unsigned>(tiles), static_cast<unsigned>(a.heads), static_cast<unsigned>(a.batch));
}

template <int kD>
bool launch_f16(const AttentionArgs& a, cudaStream_t stream) {
  using L = F16Layout<kD>;
  static std::atomic<uint64_t> configured{0};
  if (!allow_shared_memory(attention_f16_kernel<kD>, L::kBytes, configured)) return false;
  const bool vector_in = a.head_dim % 8 == 0 && a.ld_qkv % 8 == 0 && aligned16(a.q) && aligned16(a.k) &&
                         aligned16(a.v);
  const bool vector_out = a.head_dim % 8 == 0 && a.ld_out % 8 == 0 && aligned16(a.out);
  attention_f16_kernel<kD><<<grid_of(a, L::kBlockQ), kThreads, L::kBytes, stream>>>(a, vector_in, vector_out);
  return check_launch("attention_f16");
}

template <int kD>
bool launch_f32(const AttentionArgs& a, cudaStream_t stream) {
  using L = F32Layout<kD>;
  static std::atomic<uint64_t> configured{0};
  if (!allow_shared_memory(attention_f32_kernel<kD>, L::kBytes, configured)) return false;
  const bool vector_in = a.head_dim % 4 == 0 && a.ld_qkv % 4 == 0 && aligned16(a.q) && aligned16(a.k) &&
                         aligned16(a.v);
  attention_f32_kernel<kD><<<grid_of(a, L::kBlockQ), kThreads, L::kBytes, stream>>>(a, vector_in);
  return check_launch("attention_f32");
}

template <int kD>
bool launch(const AttentionArgs& a, cudaStream_t stream) {
  return a.dtype == DType::kF16 ? launch_f16<kD>(a, stream) : launch_f32<kD>(a, stream);
}

}  // namespace

bool attention(const AttentionArgs& a, void* stream_handle) {
  if (!valid(a)) return false;
  if (a.batch == 0 || a.seq == 0) return true;
  const cudaStream_t stream = static_cast<cudaStream_t>(stream_handle);
  if (a.head_dim <= 16) return launch<16>(a, stream);
  if (a.head_dim <= 32) return launch<32>(a, stream);
  if (a.head_dim <= 64) return launch<64>(a, stream);
  return launch<128>(a, stream);
}

}  // namespace bert::kernels::cuda
