// CUDA training kernels: the backward ops, dropout and the losses of kernels/train.h on device pointers
// (declared in kernels/cuda/train_kernels.h). Row ops run one warp per row (LayerNorm, softmax,
// cross-entropy up to 1024 classes) or one block per row (wider cross-entropy); parameter-gradient
// reductions are two-stage (fixed row chunks into a workspace, then one ordered final sum per column),
// the embedding backward is a deterministic two-stage scatter (no atomics), losses reduce per-row or
// per-block partials in a fixed order. Same inputs, same bits.
// Compiled here, tested against the references only where a GPU exists.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>

#include "kernels/cuda/launch_check.h"
#include "kernels/cuda/train_common.cuh"
#include "kernels/cuda/train_kernels.h"

namespace bert::kernels::cuda {

namespace {

constexpr int kThreads = 256;
constexpr int kWarpsPerBlock = kThreads / 32;
constexpr int kReduceThreads = 1024;     // single-block final reductions
constexpr int64_t kMinRowsPerChunk = 32;  // rows per partial of the two-stage column sums
constexpr int64_t kMaxGridY = 65535;
constexpr int kEmbedChunk = 32;           // tokens per chunk of the embedding backward
constexpr int kCrossEntropyBlock = 512;   // threads per row above kCrossEntropyWarpMax classes
constexpr int64_t kCrossEntropyWarpMax = 1024;
constexpr int64_t kLossMaxBlocks = 1024;  // grid of the element-wise losses (fixed: determinism)
constexpr int64_t kElementwiseMaxBlocks = 8192;

// ---- LayerNorm backward ------------------------------------------------------------------------

enum LayerNormMode : int { kStatsIn = 1, kStatsOut = 2, kWriteDs = 4 };

// One warp per row: mean / rstd (recomputed, or read from stats), optionally stored; then
// ds = rstd * (g - mean(g) - xhat * mean(g * xhat)), g = dy * gamma. Every element is read and
// written by the same lane, so ds may alias dy.
__global__ void __launch_bounds__(kThreads) layernorm_backward_rows_kernel(LayerNormBackwardArgs a, float2* stats,
                                                                          int mode) {
  const int lane = threadIdx.x & 31;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / 32;
  if (row >= a.rows) return;
  const int64_t cols = a.cols;
  const float* s = a.s + row * cols;
  float mean, rstd;
  if (mode & kStatsIn) {
    const float2 st = stats[row];
    mean = st.x;
    rstd = st.y;
  } else {
    float sum = 0.f;
    for (int64_t c = lane; c < cols; c += 32) sum += s[c];
    mean = warp_sum(sum) / static_cast<float>(cols);
    float sq = 0.f;
    for (int64_t c = lane; c < cols; c += 32) {
      const float d = s[c] - mean;
      sq += d * d;
    }
    rstd = 1.f / sqrtf(warp_sum(sq) / static_cast<float>(cols) + a.eps);
    if ((mode & kStatsOut) && lane == 0) stats[row] = make_float2(mean, rstd);
  }
  if (!(mode & kWriteDs)) return;
  const float* dy = a.dy + row * cols;
  float* ds = a.ds + row * cols;
  float sum_g = 0.f, sum_g_xhat = 0.f;
  for (int64_t c = lane; c < cols; c += 32) {
    const float xhat = (s[c] - mean) * rstd;
    const float g = dy[c] * a.gamma[c];
    sum_g += g;
    sum_g_xhat += g * xhat;
  }
  const float inv_cols = 1.f / static_cast<float>(cols);
  const float mean_g = warp_sum(sum_g) * inv_cols;
  const float mean_g_xhat = warp_sum(sum_g_xhat) * inv_cols;
  for (int64_t c = lane; c < cols; c += 32) {
    const float xhat = (s[c] - mean) * rstd;
    const float g = dy[c] * a.gamma[c];
    ds[c] = rstd * (g - mean_g - xhat * mean_g_xhat);
  }
}

// Stage 1 of dgamma / dbeta: block (column tile, row chunk), one column per thread, rows in order.
__global__ void __launch_bounds__(kThreads) layernorm_param_partials_kernel(LayerNormBackwardArgs a, const float2* stats,
                                                                           int64_t rows_per_chunk, float* partial_gamma,
                                                                           float* partial_beta) {
  const int64_t c = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (c >= a.cols) return;
  const int64_t r0 = static_cast<int64_t>(blockIdx.y) * rows_per_chunk;
  const int64_t r1 = min(a.rows, r0 + rows_per_chunk);
  float acc_gamma = 0.f, acc_beta = 0.f;
  for (int64_t r = r0; r < r1; ++r) {
    const float2 st = stats[r];
    const float d = a.dy[r * a.cols + c];
    acc_gamma += d * ((a.s[r * a.cols + c] - st.x) * st.y);
    acc_beta += d;
  }
  const int64_t o = static_cast<int64_t>(blockIdx.y) * a.cols + c;
  if (partial_gamma) partial_gamma[o] = acc_gamma;
  if (partial_beta) partial_beta[o] = acc_beta;
}

// Stage 2 of every column sum: out[c] = float(out[c] + sum_k partial[k][c]) (double, chunks in order).
__global__ void __launch_bounds__(kThreads) column_partials_final_kernel(const float* partial, int64_t chunks,
                                                                        int64_t cols, float* out) {
  const int64_t c = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (c >= cols) return;
  double sum = 0.0;
  for (int64_t k = 0; k < chunks; ++k) sum += partial[k * cols + c];
  out[c] = static_cast<float>(static_cast<double>(out[c]) + sum);
}

// Rows per partial of a two-stage column sum: at least kMinRowsPerChunk, and few enough chunks for gridDim.y.
int64_t rows_per_chunk(int64_t rows) { return std::max(kMinRowsPerChunk, ceil_div(rows, kMaxGridY)); }
int64_t chunk_count(int64_t rows) { return ceil_div(rows, rows_per_chunk(rows)); }

// ---- softmax / activation backward ---------------------------------------------------------------

__global__ void __launch_bounds__(kThreads) softmax_backward_kernel(SoftmaxBackwardArgs a, int64_t rows) {
  const int lane = threadIdx.x & 31;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / 32;
  if (row >= rows) return;
  const int64_t k_len = a.k_len;
  const float* p = a.probs + row * k_len;
  float* g = a.grad + row * k_len;
  float dot = 0.f;
  if (a.dropped) {  // dropout's backward folded in (kernels/train.h)
    const float* d = a.dropped + row * k_len;
    for (int64_t k = lane; k < k_len; k += 32) dot += g[k] * d[k];
    dot = warp_sum(dot);
    for (int64_t k = lane; k < k_len; k += 32) g[k] = a.scale * (d[k] * g[k] - p[k] * dot);
    return;
  }
  for (int64_t k = lane; k < k_len; k += 32) dot += g[k] * p[k];
  dot = warp_sum(dot);
  for (int64_t k = lane; k < k_len; k += 32) g[k] = a.scale * p[k] * (g[k] - dot);
}

constexpr float kInvSqrt2 = 0.70710678118654752440f;
constexpr float kInvSqrt2Pi = 0.39894228040143267794f;
constexpr float kSqrt2OverPi = 0.79788456080286535588f;
constexpr float kGeluTanhCubic = 0.044715f;
constexpr float kQuickGeluAlpha = 1.702f;
constexpr float kGeluSaturated = 1e3f;  // beyond it the GELU derivatives are 1 (x > 0) or 0

__device__ __forceinline__ float sigmoid(float z) { return 1.f / (1.f + expf(-z)); }
__device__ __forceinline__ float sigmoid_complement(float z) { return 1.f / (1.f + expf(z)); }

// The float derivatives of kernels/cpu/train_cpu.cc (ReLU is a select in the kernel).
__device__ float activation_derivative(float x, Activation kind) {
  switch (kind) {
    case Activation::kGeluErf:
      if (fabsf(x) > kGeluSaturated) return x > 0.f ? 1.f : 0.f;
      return 0.5f * erfcf(-x * kInvSqrt2) + x * kInvSqrt2Pi * expf(-0.5f * x * x);
    case Activation::kGeluTanh: {
      if (fabsf(x) > kGeluSaturated) return x > 0.f ? 1.f : 0.f;
      const float u2 = 2.f * kSqrt2OverPi * (x + kGeluTanhCubic * x * x * x);
      const float du = kSqrt2OverPi * (1.f + 3.f * kGeluTanhCubic * x * x);
      const float s = sigmoid(u2);
      return s + 2.f * x * s * sigmoid_complement(u2) * du;
    }
    case Activation::kGeluQuick: {
      if (fabsf(x) > kGeluSaturated) return x > 0.f ? 1.f : 0.f;
      const float z = kQuickGeluAlpha * x;
      const float s = sigmoid(z);
      return s + z * s * sigmoid_complement(z);
    }
    case Activation::kTanh: {
      const float c = coshf(x);
      return 1.f / (c * c);
    }
    case Activation::kIdentity:
    case Activation::kRelu:
      break;
  }
  return 1.f;
}

__global__ void __launch_bounds__(kThreads) activation_backward_kernel(ActivationBackwardArgs a) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < a.n; i += stride) {
    if (a.kind == Activation::kRelu) {  // a select, like torch: masked gradients are 0 even if NaN
      a.grad[i] = a.x[i] > 0.f ? a.grad[i] : 0.f;
    } else {
      a.grad[i] *= activation_derivative(a.x[i], a.kind);
    }
  }
}

int elementwise_blocks(int64_t n) {
  return static_cast<int>(std::min<int64_t>(ceil_div(n, kThreads), kElementwiseMaxBlocks));
}

// ---- dropout -----------------------------------------------------------------------------------

// x * inv_keep in double, rounded once: the CPU's arithmetic, so the output bits match too.
__global__ void __launch_bounds__(kThreads) dropout_kernel(const float* src, float* x, int64_t n, float p,
                                                          uint64_t seed, uint64_t offset, double inv_keep) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    const bool keep = dropout_keep_device(seed, offset + static_cast<uint64_t>(i), p);
    x[i] = keep ? static_cast<float>(static_cast<double>(src[i]) * inv_keep) : 0.f;
  }
}

// ---- embedding backward ---------------------------------------------------------------------------

__device__ __forceinline__ int32_t row_of(const int32_t* ids, int64_t t) { return ids ? ids[t] : 0; }

// Stage 1, block (chunk of kEmbedChunk tokens, column tile): the first token of each id in the chunk
// (its "chunk owner"; padding tokens own nothing) gets partial[t][c] = sum of the chunk's rows of that
// id, in token order. Column tile 0 also records who owns: chunk_owner[t] = 1 / 0.
__global__ void __launch_bounds__(kThreads) embed_chunk_partials_kernel(const int32_t* ids, const float* d_out,
                                                                       int64_t tokens, int64_t width,
                                                                       int32_t padding_idx, float* partial,
                                                                       uint8_t* chunk_owner) {
  __shared__ int32_t chunk_ids[kEmbedChunk];
  __shared__ uint8_t owner[kEmbedChunk];
  const int64_t t0 = static_cast<int64_t>(blockIdx.x) * kEmbedChunk;
  const int n = static_cast<int>(min(static_cast<int64_t>(kEmbedChunk), tokens - t0));
  const int tid = threadIdx.x;
  if (tid < n) chunk_ids[tid] = row_of(ids, t0 + tid);
  __syncthreads();
  if (tid < n) {
    const int32_t id = chunk_ids[tid];
    bool first = id != padding_idx;
    for (int j = 0; j < tid && first; ++j) first = chunk_ids[j] != id;
    owner[tid] = first ? 1 : 0;
    if (blockIdx.y == 0) chunk_owner[t0 + tid] = first ? 1 : 0;
  }
  __syncthreads();
  const int64_t c = static_cast<int64_t>(blockIdx.y) * kThreads + tid;
  if (c >= width) return;
  for (int j = 0; j < n; ++j) {
    if (!owner[j]) continue;
    const int32_t id = chunk_ids[j];
    float acc = 0.f;
    for (int i = j; i < n; ++i)
      if (chunk_ids[i] == id) acc += d_out[(t0 + i) * width + c];
    partial[(t0 + j) * width + c] = acc;
  }
}

// Stage 2, block (token t, column tile): only the first chunk owner of an id overall does anything:
// it adds the partials of every chunk owner of its id (found by an ordered scan of the later tokens,
// in token order) to the table row, which no other block touches.
__global__ void __launch_bounds__(kThreads) embed_owner_sum_kernel(const int32_t* ids, const float* partial,
                                                                  const uint8_t* chunk_owner, int64_t tokens,
                                                                  int64_t width, float* table) {
  __shared__ int64_t list[kThreads];
  __shared__ int warp_counts[kWarpsPerBlock];
  const int64_t t = blockIdx.x;
  if (!chunk_owner[t]) return;  // block-uniform
  const int tid = threadIdx.x, lane = tid & 31, warp = tid / 32;
  const int32_t row = row_of(ids, t);
  // Is an earlier chunk owner of the same id there? Then that one does the work. (Tokens of t's own
  // chunk before t cannot have this id: t owns it in its chunk.)
  const int64_t chunk_start = t - t % kEmbedChunk;
  for (int64_t end = chunk_start; end > 0; end -= kThreads) {
    const int64_t j = end - kThreads + tid;
    const bool found = j >= 0 && chunk_owner[j] && row_of(ids, j) == row;
    if (__syncthreads_or(found)) return;
  }
  const int64_t c = static_cast<int64_t>(blockIdx.y) * kThreads + tid;
  float* dst = table + static_cast<int64_t>(row) * width;
  float acc = c < width ? dst[c] : 0.f;
  const unsigned lanes_below = (1u << lane) - 1u;
  for (int64_t base = t; base < tokens; base += kThreads) {
    const int64_t j = base + tid;
    const bool match = j < tokens && chunk_owner[j] && row_of(ids, j) == row;
    const unsigned ballot = __ballot_sync(kFullMask, match);
    if (lane == 0) warp_counts[warp] = __popc(ballot);
    __syncthreads();
    int before = 0, total = 0;
    for (int w = 0; w < kWarpsPerBlock; ++w) {
      before += w < warp ? warp_counts[w] : 0;
      total += warp_counts[w];
    }
    if (match) list[before + __popc(ballot & lanes_below)] = j;
    __syncthreads();
    if (c < width)
      for (int i = 0; i < total; ++i) acc += partial[list[i] * width + c];
    __syncthreads();  // list and warp_counts are rewritten by the next round
  }
  if (c < width) dst[c] = acc;
}

// ---- losses ----------------------------------------------------------------------------------------

// Running max and sum of exp(x - max) of a set of logits.
struct OnlineSoftmax {
  float max;
  double sum;
};

__device__ __forceinline__ void online_add(OnlineSoftmax& st, float x) {
  if (x > st.max) {
    st.sum = st.sum * static_cast<double>(expf(st.max - x)) + 1.0;
    st.max = x;
  } else if (x != -INFINITY) {  // NaN goes here and propagates
    st.sum += static_cast<double>(expf(x - st.max));
  }
}

// Exactly commutative (explicit roundings, no contraction), so butterfly partners agree bit for bit.
__device__ __forceinline__ OnlineSoftmax combine(const OnlineSoftmax& a, const OnlineSoftmax& b) {
  const float m = fmaxf(a.max, b.max);
  if (m == -INFINITY) return {m, 0.0};
  const double ea = static_cast<double>(expf(a.max - m)), eb = static_cast<double>(expf(b.max - m));
  return {m, __dadd_rn(__dmul_rn(a.sum, ea), __dmul_rn(b.sum, eb))};
}

__device__ __forceinline__ OnlineSoftmax warp_combine(OnlineSoftmax st) {
  for (int o = 16; o > 0; o >>= 1) {
    const OnlineSoftmax other{__shfl_xor_sync(kFullMask, st.max, o), __shfl_xor_sync(kFullMask, st.sum, o)};
    st = combine(st, other);
  }
  return st;
}

// The gradient's scale: grad_scale * (*scale_device) (/ count when mean).
__device__ __forceinline__ float loss_grad_factor(float grad_scale, const float* scale_device, int mean,
                                                  const int64_t* count_device, int64_t count_host) {
  float f = grad_scale;
  if (scale_device) f *= *scale_device;
  if (mean) {
    const int64_t n = count_device ? *count_device : count_host;
    f = n > 0 ? f / static_cast<float>(n) : 0.f;
  }
  return f;
}

// One row per warp (kGroup == 32, kWarpsPerBlock rows per block) or per block (kGroup threads):
// pass 1 the online max / sum of exps, pass 2 dlogits; row_loss[row] = log(sum) + max - x[target]
// (0 for ignored rows). dlogits may alias logits: pass 2 starts after a barrier, and every element
// is read and written by the same thread.
template <int kGroup>
__global__ void __launch_bounds__(kGroup == 32 ? kThreads : kGroup)
    cross_entropy_rows_kernel(CrossEntropyArgs a, int64_t ld, double* row_loss, const int64_t* count_device,
                              const float* scale_device, int mean) {
  constexpr bool kWarpRows = kGroup == 32;
  __shared__ OnlineSoftmax warp_results[kGroup / 32];
  const int idx = kWarpRows ? static_cast<int>(threadIdx.x & 31) : static_cast<int>(threadIdx.x);
  const int64_t row =
      kWarpRows ? static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / 32 : static_cast<int64_t>(blockIdx.x);
  if (row >= a.rows) return;  // whole warps (warp rows) or never (block rows)
  const int64_t classes = a.classes;
  const float* x = a.logits + row * ld;
  float* d = a.dlogits ? a.dlogits + row * ld : nullptr;
  const int32_t target = a.targets[row];
  if (target == a.ignore_index) {  // uniform over the row's threads
    if (d)
      for (int64_t c = idx; c < classes; c += kGroup) d[c] = 0.f;
    if (row_loss && idx == 0) row_loss[row] = 0.0;
    return;
  }
  const bool valid = target >= 0 && target < classes;
  const float target_logit = valid ? x[target] : NAN;  // read before any thread writes d
  OnlineSoftmax st{-INFINITY, 0.0};
  for (int64_t c = idx; c < classes; c += kGroup) online_add(st, x[c]);
  st = warp_combine(st);
  if constexpr (kWarpRows) {
    __syncwarp();
  } else {
    if (idx % 32 == 0) warp_results[idx / 32] = st;
    __syncthreads();
    st = warp_results[0];
    for (int w = 1; w < kGroup / 32; ++w) st = combine(st, warp_results[w]);
  }
  const double sum = st.sum;
  const float mx = st.max;
  if (row_loss && idx == 0)
    row_loss[row] = log(sum) + static_cast<double>(mx) - static_cast<double>(target_logit);
  if (!d) return;
  const float factor = loss_grad_factor(a.grad_scale, scale_device, mean, count_device, 0);
  const float prob_scale = static_cast<float>(static_cast<double>(factor) / sum);
  for (int64_t c = idx; c < classes; c += kGroup) {
    const float e = expf(x[c] - mx);
    // (p - 1) in double at the target: in float it cancels when p is near 1 (as the CPU does).
    d[c] = c == target ? static_cast<float>((static_cast<double>(e) / sum - 1.0) * static_cast<double>(factor))
                       : e * prob_scale;
  }
}

// Counts targets != ignore_index (targets set) or mask != 0 (mask set) into *count: one block.
__global__ void __launch_bounds__(kReduceThreads) count_kernel(const int32_t* targets, int32_t ignore_index,
                                                              const int32_t* mask, int64_t n, int64_t* count) {
  __shared__ int64_t scratch[32];
  int64_t local = 0;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) local += targets ? targets[i] != ignore_index : mask[i] != 0;
  const int64_t total = block_sum(local, scratch);
  if (threadIdx.x == 0) *count = total;
}

// The cross-entropy's final sum: counted rows' losses in a fixed order, and their count.
__global__ void __launch_bounds__(kReduceThreads) cross_entropy_final_kernel(const double* row_loss,
                                                                            const int32_t* targets,
                                                                            int32_t ignore_index, int64_t rows,
                                                                            LossSum* result) {
  __shared__ double dscratch[32];
  __shared__ int64_t iscratch[32];
  double sum = 0.0;
  int64_t count = 0;
  for (int64_t r = threadIdx.x; r < rows; r += blockDim.x) {
    if (targets[r] == ignore_index) continue;
    sum += row_loss[r];
    ++count;
  }
  sum = block_sum(sum, dscratch);
  count = block_sum(count, iscratch);
  if (threadIdx.x == 0) {
    result->sum = sum;
    result->count = count;
  }
}

// BCE with logits, element-wise over a fixed grid; per-block partial loss sums and counts.
__global__ void __launch_bounds__(kThreads) bce_kernel(BceWithLogitsArgs a, const int64_t* count_device,
                                                      int64_t count_host, const float* scale_device, int mean,
                                                      double* partial_sum, int64_t* partial_count) {
  __shared__ double dscratch[32];
  __shared__ int64_t iscratch[32];
  const float factor = loss_grad_factor(a.grad_scale, scale_device, mean, count_device, count_host);
  double sum = 0.0;
  int64_t count = 0;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < a.n; i += stride) {
    if (a.mask && a.mask[i] == 0) {
      if (a.dlogits) a.dlogits[i] = 0.f;
      continue;
    }
    const double x = a.logits[i];
    const double t = a.targets[i];
    // max(x, 0) - x t + log(1 + exp(-|x|)): torch's stable form.
    sum += fmax(x, 0.0) - x * t + log1p(exp(-fabs(x)));
    ++count;
    if (a.dlogits) {
      const double prob = x >= 0 ? 1.0 / (1.0 + exp(-x)) : exp(x) / (1.0 + exp(x));
      a.dlogits[i] = static_cast<float>((prob - t) * static_cast<double>(factor));
    }
  }
  sum = block_sum(sum, dscratch);
  count = block_sum(count, iscratch);
  if (threadIdx.x == 0 && partial_sum) {
    partial_sum[blockIdx.x] = sum;
    partial_count[blockIdx.x] = count;
  }
}

// Squared error terms, element-wise over a fixed grid; per-block partial sums (count is n).
__global__ void __launch_bounds__(kThreads) mse_kernel(MseArgs a, const float* scale_device, int mean,
                                                      double* partial_sum, int64_t* partial_count) {
  __shared__ double dscratch[32];
  __shared__ int64_t iscratch[32];
  const float factor = loss_grad_factor(a.grad_scale, scale_device, mean, nullptr, a.n);
  double sum = 0.0;
  int64_t count = 0;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < a.n; i += stride) {
    const double diff = static_cast<double>(a.pred[i]) - static_cast<double>(a.target[i]);
    sum += diff * diff;
    ++count;
    if (a.dpred) a.dpred[i] = static_cast<float>(2.0 * diff * static_cast<double>(factor));
  }
  sum = block_sum(sum, dscratch);
  count = block_sum(count, iscratch);
  if (threadIdx.x == 0 && partial_sum) {
    partial_sum[blockIdx.x] = sum;
    partial_count[blockIdx.x] = count;
  }
}

// Sums `blocks` partials in a fixed order into *result.
__global__ void __launch_bounds__(kReduceThreads) loss_partials_final_kernel(const double* partial_sum,
                                                                            const int64_t* partial_count,
                                                                            int64_t blocks, LossSum* result) {
  __shared__ double dscratch[32];
  __shared__ int64_t iscratch[32];
  double sum = 0.0;
  int64_t count = 0;
  for (int64_t b = threadIdx.x; b < blocks; b += blockDim.x) {
    sum += partial_sum[b];
    count += partial_count[b];
  }
  sum = block_sum(sum, dscratch);
  count = block_sum(count, iscratch);
  if (threadIdx.x == 0) {
    result->sum = sum;
    result->count = count;
  }
}

int64_t loss_blocks(int64_t n) { return std::max<int64_t>(1, std::min(ceil_div(n, kThreads), kLossMaxBlocks)); }

// Launches the two-stage column sum stage 2 for `cols` columns.
bool launch_column_final(const float* partial, int64_t chunks, int64_t cols, float* out, cudaStream_t stream,
                         const char* name) {
  column_partials_final_kernel<<<static_cast<unsigned>(ceil_div(cols, kThreads)), kThreads, 0, stream>>>(
      partial, chunks, cols, out);
  return check_launch(name);
}

}  // namespace

// ==== backward ops ================================================================================

size_t layernorm_backward_workspace_bytes(int64_t rows, int64_t cols) {
  if (rows <= 0 || cols <= 0) return 0;
  const size_t partial = static_cast<size_t>(chunk_count(rows)) * static_cast<size_t>(cols) * sizeof(float);
  return align_up(static_cast<size_t>(rows) * sizeof(float2)) + 2 * align_up(partial);
}

bool layernorm_backward_f32(const LayerNormBackwardArgs& a, void* stream, Workspace ws) {
  if (a.rows < 0 || a.cols < 0) return invalid("layernorm_backward_f32: negative rows or cols");
  if (a.rows == 0 || a.cols == 0) return true;
  if (!a.s || !a.gamma || !a.dy || !a.ds) return invalid("layernorm_backward_f32: null s, gamma, dy or ds");
  const cudaStream_t st = as_stream(stream);
  const unsigned row_blocks = static_cast<unsigned>(ceil_div(a.rows, kWarpsPerBlock));
  if (!a.dgamma && !a.dbeta) {
    layernorm_backward_rows_kernel<<<row_blocks, kThreads, 0, st>>>(a, nullptr, kWriteDs);
    return check_launch("layernorm_backward_f32");
  }
  Scratch scratch(ws, layernorm_backward_workspace_bytes(a.rows, a.cols), st, "layernorm_backward_f32");
  if (!scratch.ok()) return false;
  const int64_t rpc = rows_per_chunk(a.rows), chunks = chunk_count(a.rows);
  float2* stats = scratch.take<float2>(static_cast<size_t>(a.rows));
  float* partial_gamma = scratch.take<float>(static_cast<size_t>(chunks * a.cols));
  float* partial_beta = scratch.take<float>(static_cast<size_t>(chunks * a.cols));
  // dgamma / dbeta read dy, so when ds overwrites dy they go first and ds comes last.
  const bool alias = a.ds == a.dy;
  layernorm_backward_rows_kernel<<<row_blocks, kThreads, 0, st>>>(a, stats, alias ? kStatsOut : kStatsOut | kWriteDs);
  if (!check_launch("layernorm_backward_f32 rows")) return false;
  const dim3 grid(static_cast<unsigned>(ceil_div(a.cols, kThreads)), static_cast<unsigned>(chunks));
  layernorm_param_partials_kernel<<<grid, kThreads, 0, st>>>(a, stats, rpc, a.dgamma ? partial_gamma : nullptr,
                                                            a.dbeta ? partial_beta : nullptr);
  if (!check_launch("layernorm_backward_f32 partials")) return false;
  if (a.dgamma && !launch_column_final(partial_gamma, chunks, a.cols, a.dgamma, st, "layernorm_backward_f32 dgamma"))
    return false;
  if (a.dbeta && !launch_column_final(partial_beta, chunks, a.cols, a.dbeta, st, "layernorm_backward_f32 dbeta"))
    return false;
  if (alias) {
    layernorm_backward_rows_kernel<<<row_blocks, kThreads, 0, st>>>(a, stats, kStatsIn | kWriteDs);
    if (!check_launch("layernorm_backward_f32 ds")) return false;
  }
  return true;
}

bool softmax_backward_f32(const SoftmaxBackwardArgs& a, void* stream) {
  if (a.batch < 0 || a.heads < 0 || a.q_len < 0 || a.k_len < 0)
    return invalid("softmax_backward_f32: negative dimension");
  const int64_t rows = a.batch * a.heads * a.q_len;
  if (rows == 0 || a.k_len == 0) return true;
  if (!a.probs || !a.grad) return invalid("softmax_backward_f32: null probs or grad");
  softmax_backward_kernel<<<static_cast<unsigned>(ceil_div(rows, kWarpsPerBlock)), kThreads, 0, as_stream(stream)>>>(
      a, rows);
  return check_launch("softmax_backward_f32");
}

bool activation_backward_f32(const ActivationBackwardArgs& a, void* stream) {
  if (a.n < 0) return invalid("activation_backward_f32: negative n");
  if (a.n == 0 || a.kind == Activation::kIdentity) return true;
  if (!a.x || !a.grad) return invalid("activation_backward_f32: null x or grad");
  activation_backward_kernel<<<elementwise_blocks(a.n), kThreads, 0, as_stream(stream)>>>(a);
  return check_launch("activation_backward_f32");
}

size_t embed_backward_workspace_bytes(int64_t tokens, int64_t width) {
  if (tokens <= 0 || width <= 0) return 0;
  return align_up(static_cast<size_t>(tokens) * static_cast<size_t>(width) * sizeof(float)) +
         align_up(static_cast<size_t>(tokens));
}

bool embed_backward_f32(const EmbedBackwardArgs& a, void* stream, Workspace ws, EmbedPadding padding) {
  if (a.tokens < 0 || a.width < 0) return invalid("embed_backward_f32: negative tokens or width");
  if (a.tokens == 0 || a.width == 0) return true;
  if (a.tokens > INT32_MAX) return invalid("embed_backward_f32: more than 2^31 - 1 tokens");
  const bool word = a.d_word && a.input_ids;
  const bool position = a.d_position && a.positions;
  const bool type = a.d_type != nullptr;
  if (!word && !position && !type) return true;
  if (!a.d_out) return invalid("embed_backward_f32: null d_out");
  const cudaStream_t st = as_stream(stream);
  Scratch scratch(ws, embed_backward_workspace_bytes(a.tokens, a.width), st, "embed_backward_f32");
  if (!scratch.ok()) return false;
  float* partial = scratch.take<float>(static_cast<size_t>(a.tokens * a.width));
  uint8_t* chunk_owner = scratch.take<uint8_t>(static_cast<size_t>(a.tokens));
  const unsigned tiles = static_cast<unsigned>(ceil_div(a.width, kThreads));
  if (tiles > kMaxGridY) return invalid("embed_backward_f32: width too large");
  // The tables one after the other on the stream, reusing the workspace.
  auto scatter = [&](const int32_t* ids, float* table, int32_t padding_idx, const char* name) {
    const dim3 grid1(static_cast<unsigned>(ceil_div(a.tokens, kEmbedChunk)), tiles);
    embed_chunk_partials_kernel<<<grid1, kThreads, 0, st>>>(ids, a.d_out, a.tokens, a.width, padding_idx, partial,
                                                           chunk_owner);
    if (!check_launch(name)) return false;
    const dim3 grid2(static_cast<unsigned>(a.tokens), tiles);
    embed_owner_sum_kernel<<<grid2, kThreads, 0, st>>>(ids, partial, chunk_owner, a.tokens, a.width, table);
    return check_launch(name);
  };
  if (word && !scatter(a.input_ids, a.d_word, padding.word, "embed_backward_f32 word")) return false;
  if (position && !scatter(a.positions, a.d_position, padding.position, "embed_backward_f32 position")) return false;
  if (type && !scatter(a.token_types, a.d_type, -1, "embed_backward_f32 type")) return false;
  return true;
}

size_t column_sum_workspace_bytes(int64_t rows, int64_t cols) {
  if (rows <= 0 || cols <= 0) return 0;
  return align_up(static_cast<size_t>(chunk_count(rows)) * static_cast<size_t>(cols) * sizeof(float));
}

namespace {

__global__ void __launch_bounds__(kThreads) column_sum_partials_kernel(ColumnSumArgs a, int64_t ld,
                                                                      int64_t rows_per_chunk, float* partial) {
  const int64_t c = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (c >= a.cols) return;
  const int64_t r0 = static_cast<int64_t>(blockIdx.y) * rows_per_chunk;
  const int64_t r1 = min(a.rows, r0 + rows_per_chunk);
  float acc = 0.f;
  for (int64_t r = r0; r < r1; ++r) acc += a.x[r * ld + c];
  partial[static_cast<int64_t>(blockIdx.y) * a.cols + c] = acc;
}

}  // namespace

bool column_sum_f32(const ColumnSumArgs& a, void* stream, Workspace ws) {
  if (a.rows < 0 || a.cols < 0) return invalid("column_sum_f32: negative rows or cols");
  if (a.cols == 0 || a.rows == 0) return true;  // adds nothing
  const int64_t ld = a.ld ? a.ld : a.cols;
  if (ld < a.cols) return invalid("column_sum_f32: ld < cols");
  if (!a.x || !a.out) return invalid("column_sum_f32: null x or out");
  const cudaStream_t st = as_stream(stream);
  Scratch scratch(ws, column_sum_workspace_bytes(a.rows, a.cols), st, "column_sum_f32");
  if (!scratch.ok()) return false;
  const int64_t chunks = chunk_count(a.rows);
  float* partial = scratch.take<float>(static_cast<size_t>(chunks * a.cols));
  const dim3 grid(static_cast<unsigned>(ceil_div(a.cols, kThreads)), static_cast<unsigned>(chunks));
  column_sum_partials_kernel<<<grid, kThreads, 0, st>>>(a, ld, rows_per_chunk(a.rows), partial);
  if (!check_launch("column_sum_f32 partials")) return false;
  return launch_column_final(partial, chunks, a.cols, a.out, st, "column_sum_f32");
}

bool dropout_f32(const DropoutArgs& a, void* stream) {
  if (a.n < 0) return invalid("dropout_f32: negative n");
  if (!(a.p < 1.f)) return invalid("dropout_f32: p must be in [0, 1)");
  if (a.n == 0) return true;
  if (!a.x) return invalid("dropout_f32: null x");
  const float* src = a.src ? a.src : a.x;
  if (a.p <= 0.f) {  // nothing drops: x = src
    if (src == a.x) return true;
    const size_t bytes = sizeof(float) * static_cast<size_t>(a.n);
    if (cudaMemcpyAsync(a.x, src, bytes, cudaMemcpyDeviceToDevice, as_stream(stream)) != cudaSuccess)
      return invalid("dropout_f32: copying src to x failed");
    return true;
  }
  const double inv_keep = 1.0 / (1.0 - static_cast<double>(a.p));
  dropout_kernel<<<elementwise_blocks(a.n), kThreads, 0, as_stream(stream)>>>(src, a.x, a.n, a.p, a.seed, a.offset,
                                                                              inv_keep);
  return check_launch("dropout_f32");
}

// ---- element-wise sums (the trainer's residual sums and gradient accumulation) -----------------

__global__ void __launch_bounds__(kThreads) add_kernel(const float* a, const float* b, float* out, int64_t n) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride)
    out[i] = a[i] + b[i];
}

__global__ void __launch_bounds__(kThreads) add_rows_kernel(const float* src, int64_t src_ld, float* dst,
                                                            int64_t dst_ld, int64_t rows, int64_t cols) {
  const int64_t n = rows * cols, stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    const int64_t r = i / cols, c = i % cols;
    dst[r * dst_ld + c] += src[r * src_ld + c];
  }
}

bool add_f32(const float* a, const float* b, float* out, int64_t n, void* stream) {
  if (n < 0) return invalid("add_f32: negative n");
  if (n == 0) return true;
  if (!a || !b || !out) return invalid("add_f32: null pointer");
  add_kernel<<<elementwise_blocks(n), kThreads, 0, as_stream(stream)>>>(a, b, out, n);
  return check_launch("add_f32");
}

bool add_rows_f32(const float* src, int64_t src_ld, float* dst, int64_t dst_ld, int64_t rows, int64_t cols,
                  void* stream) {
  if (rows < 0 || cols < 0) return invalid("add_rows_f32: negative rows or cols");
  if (rows == 0 || cols == 0) return true;
  if (!src || !dst) return invalid("add_rows_f32: null pointer");
  if (src_ld < cols || dst_ld < cols) return invalid("add_rows_f32: a row stride is below cols");
  add_rows_kernel<<<elementwise_blocks(rows * cols), kThreads, 0, as_stream(stream)>>>(src, src_ld, dst, dst_ld,
                                                                                      rows, cols);
  return check_launch("add_rows_f32");
}

// ==== losses =====================================================================================

size_t loss_workspace_bytes(int64_t rows_or_elements) {
  const size_t n = static_cast<size_t>(std::max<int64_t>(rows_or_elements, 1));
  return align_up(sizeof(int64_t)) + 2 * align_up(n * sizeof(double));
}

bool cross_entropy_f32(const CrossEntropyArgs& a, const LossOptions& o, void* stream, Workspace ws) {
  if (a.rows < 0 || a.classes < 0) return invalid("cross_entropy_f32: negative rows or classes");
  const int64_t ld = a.ld ? a.ld : a.classes;
  if (ld < a.classes) return invalid("cross_entropy_f32: ld < classes");
  const int64_t rows = a.classes > 0 ? a.rows : 0;  // no classes: nothing counts (the CPU spec)
  if (rows > 0 && (!a.logits || !a.targets)) return invalid("cross_entropy_f32: null logits or targets");
  const bool want_grad = a.dlogits && rows > 0;
  const bool need_count = o.mean && want_grad;
  if (!o.result && !want_grad) return true;
  const cudaStream_t st = as_stream(stream);
  const bool need_workspace = o.result || need_count;
  Scratch scratch(ws, need_workspace ? loss_workspace_bytes(rows) : 0, st, "cross_entropy_f32");
  if (!scratch.ok()) return false;
  int64_t* count = need_workspace ? scratch.take<int64_t>(1) : nullptr;
  double* row_loss = need_workspace ? scratch.take<double>(static_cast<size_t>(std::max<int64_t>(rows, 1))) : nullptr;
  if (need_count) {
    count_kernel<<<1, kReduceThreads, 0, st>>>(a.targets, a.ignore_index, nullptr, rows, count);
    if (!check_launch("cross_entropy_f32 count")) return false;
  }
  if (rows > 0) {
    CrossEntropyArgs k = a;
    if (!want_grad) k.dlogits = nullptr;
    double* losses = o.result ? row_loss : nullptr;
    const int mean = o.mean ? 1 : 0;
    if (a.classes <= kCrossEntropyWarpMax) {
      cross_entropy_rows_kernel<32><<<static_cast<unsigned>(ceil_div(rows, kWarpsPerBlock)), kThreads, 0, st>>>(
          k, ld, losses, count, o.grad_scale_device, mean);
    } else {
      cross_entropy_rows_kernel<kCrossEntropyBlock><<<static_cast<unsigned>(rows), kCrossEntropyBlock, 0, st>>>(
          k, ld, losses, count, o.grad_scale_device, mean);
    }
    if (!check_launch("cross_entropy_f32 rows")) return false;
  }
  if (o.result) {
    cross_entropy_final_kernel<<<1, kReduceThreads, 0, st>>>(row_loss, a.targets, a.ignore_index, rows, o.result);
    if (!check_launch("cross_entropy_f32 sum")) return false;
  }
  return true;
}

bool bce_with_logits_f32(const BceWithLogitsArgs& a, const LossOptions& o, void* stream, Workspace ws) {
  if (a.n < 0) return invalid("bce_with_logits_f32: negative n");
  if (a.n > 0 && (!a.logits || !a.targets)) return invalid("bce_with_logits_f32: null logits or targets");
  if (!o.result && (!a.dlogits || a.n == 0)) return true;
  const cudaStream_t st = as_stream(stream);
  const int64_t blocks = loss_blocks(a.n);
  const bool count_on_device = o.mean && a.mask && a.dlogits && a.n > 0;
  const bool need_workspace = o.result || count_on_device;
  Scratch scratch(ws, need_workspace ? loss_workspace_bytes(blocks) : 0, st, "bce_with_logits_f32");
  if (!scratch.ok()) return false;
  int64_t* count = need_workspace ? scratch.take<int64_t>(1) : nullptr;
  double* partial_sum = need_workspace ? scratch.take<double>(static_cast<size_t>(blocks)) : nullptr;
  int64_t* partial_count = need_workspace ? scratch.take<int64_t>(static_cast<size_t>(blocks)) : nullptr;
  if (count_on_device) {
    count_kernel<<<1, kReduceThreads, 0, st>>>(nullptr, 0, a.mask, a.n, count);
    if (!check_launch("bce_with_logits_f32 count")) return false;
  }
  if (a.n > 0) {
    bce_kernel<<<static_cast<unsigned>(blocks), kThreads, 0, st>>>(a, count_on_device ? count : nullptr, a.n,
                                                                   o.grad_scale_device, o.mean ? 1 : 0,
                                                                   o.result ? partial_sum : nullptr, partial_count);
    if (!check_launch("bce_with_logits_f32")) return false;
  }
  if (o.result) {
    loss_partials_final_kernel<<<1, kReduceThreads, 0, st>>>(partial_sum, partial_count, a.n > 0 ? blocks : 0,
                                                             o.result);
    if (!check_launch("bce_with_logits_f32 sum")) return false;
  }
  return true;
}

bool mse_f32(const MseArgs& a, const LossOptions& o, void* stream, Workspace ws) {
  if (a.n < 0) return invalid("mse_f32: negative n");
  if (a.n > 0 && (!a.pred || !a.target)) return invalid("mse_f32: null pred or target");
  if (!o.result && (!a.dpred || a.n == 0)) return true;
  const cudaStream_t st = as_stream(stream);
  const int64_t blocks = loss_blocks(a.n);
  Scratch scratch(ws, o.result ? loss_workspace_bytes(blocks) : 0, st, "mse_f32");
  if (!scratch.ok()) return false;
  double* partial_sum = nullptr;
  int64_t* partial_count = nullptr;
  if (o.result) {
    scratch.take<int64_t>(1);  // the layout of loss_workspace_bytes: the count slot is unused here
    partial_sum = scratch.take<double>(static_cast<size_t>(blocks));
    partial_count = scratch.take<int64_t>(static_cast<size_t>(blocks));
  }
  if (a.n > 0) {
    mse_kernel<<<static_cast<unsigned>(blocks), kThreads, 0, st>>>(a, o.grad_scale_device, o.mean ? 1 : 0,
                                                                   o.result ? partial_sum : nullptr, partial_count);
    if (!check_launch("mse_f32")) return false;
  }
  if (o.result) {
    loss_partials_final_kernel<<<1, kReduceThreads, 0, st>>>(partial_sum, partial_count, a.n > 0 ? blocks : 0,
                                                             o.result);
    if (!check_launch("mse_f32 sum")) return false;
  }
  return true;
}

}  // namespace bert::kernels::cuda
