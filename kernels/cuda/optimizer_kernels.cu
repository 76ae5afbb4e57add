// CUDA optimizer kernels (declared in kernels/cuda/train_kernels.h): AdamW and LAMB on one tensor
// (kernels/optimizer.h's API on device pointers) and as multi-tensor launches (one CUDA block per
// chunk of kMultiTensorChunk elements of any tensor of a DeviceTensorList), the global gradient norm
// with the clip factor on the device, gradient scaling by a device scalar, and mixed-precision loss
// scaling (unscale + inf/NaN check, dynamic scale update, steps skipped through a device flag): a
// training step needs no host sync. Element arithmetic follows kernels/cpu/optimizer_cpu.cc in float,
// operation for operation with explicit roundings (no FMA contraction); reductions are two-stage in
// double with a fixed partition, so results do not vary from run to run.
// Compiled here, tested against the references only where a GPU exists.
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "kernels/cuda/launch_check.h"
#include "kernels/cuda/train_common.cuh"
#include "kernels/cuda/train_kernels.h"

namespace bert::kernels::cuda {

namespace {

constexpr int kThreads = 256;
constexpr int kReduceThreads = 1024;
constexpr int64_t kElementwiseMaxBlocks = 8192;
constexpr int64_t kMaxGridX = 2147483647;
constexpr uint32_t kExponentBits = 0x7f800000u;  // all ones: Inf or NaN

int elementwise_blocks(int64_t n) {
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(ceil_div(n, kThreads), kElementwiseMaxBlocks)));
}

__device__ __forceinline__ bool is_nonfinite(float x) { return (__float_as_uint(x) & kExponentBits) == kExponentBits; }

__device__ __forceinline__ uint16_t to_half_bits(float x) { return __half_as_ushort(__float2half_rn(x)); }

// ---- per-element math, as kernels/cpu/optimizer_cpu.cc ------------------------------------------------

struct AdamCoefficients {
  float keep, beta1, one_minus_beta1, beta2, one_minus_beta2, step_size, bc2_sqrt, eps;
};

// torch: p.mul_(1 - lr * wd); moving averages; p.addcdiv_(m, sqrt(v) / sqrt(bc2) + eps, value=-lr / bc1).
__host__ __device__ inline AdamCoefficients adam_coefficients(float lr, float beta1, float beta2, float eps,
                                                              float weight_decay, int64_t step) {
  const double bc1 = 1.0 - ::pow(static_cast<double>(beta1), static_cast<double>(step));
  const double bc2 = 1.0 - ::pow(static_cast<double>(beta2), static_cast<double>(step));
  AdamCoefficients c;
  c.keep = static_cast<float>(1.0 - static_cast<double>(lr) * weight_decay);
  c.beta1 = beta1;
  c.one_minus_beta1 = static_cast<float>(1.0 - beta1);
  c.beta2 = beta2;
  c.one_minus_beta2 = static_cast<float>(1.0 - beta2);
  c.step_size = static_cast<float>(lr / bc1);
  c.bc2_sqrt = static_cast<float>(::sqrt(bc2));
  c.eps = eps;
  return c;
}

__device__ __forceinline__ void adam_moments(float beta1, float one_minus_beta1, float beta2, float one_minus_beta2,
                                             float g, float& m, float& v) {
  m = __fadd_rn(__fmul_rn(beta1, m), __fmul_rn(one_minus_beta1, g));
  v = __fadd_rn(__fmul_rn(beta2, v), __fmul_rn(__fmul_rn(one_minus_beta2, g), g));
}

__device__ __forceinline__ void adam_element(const AdamCoefficients& c, float g, float& p, float& m, float& v) {
  adam_moments(c.beta1, c.one_minus_beta1, c.beta2, c.one_minus_beta2, g, m, v);
  const float denom = __fadd_rn(__fdiv_rn(__fsqrt_rn(v), c.bc2_sqrt), c.eps);
  p = __fsub_rn(__fmul_rn(p, c.keep), __fmul_rn(c.step_size, __fdiv_rn(m, denom)));
}

struct LambCoefficients {
  float beta1, one_minus_beta1, beta2, one_minus_beta2, bc1, bc2, eps, weight_decay;
};

__host__ __device__ inline LambCoefficients lamb_coefficients(float beta1, float beta2, float eps, float weight_decay,
                                                              int64_t step) {
  LambCoefficients c;
  c.beta1 = beta1;
  c.one_minus_beta1 = static_cast<float>(1.0 - beta1);
  c.beta2 = beta2;
  c.one_minus_beta2 = static_cast<float>(1.0 - beta2);
  c.bc1 = static_cast<float>(1.0 - ::pow(static_cast<double>(beta1), static_cast<double>(step)));
  c.bc2 = static_cast<float>(1.0 - ::pow(static_cast<double>(beta2), static_cast<double>(step)));
  c.eps = eps;
  c.weight_decay = weight_decay;
  return c;
}

// u = (m / bc1) / (sqrt(v / bc2) + eps) + wd * p, every rounding explicit: the update and apply
// kernels recompute it from the same stored m and v and get the same bits.
__device__ __forceinline__ float lamb_raw_update(const LambCoefficients& c, float p, float m, float v) {
  const float root_vhat = __fsqrt_rn(__fdiv_rn(v, c.bc2));
  return __fadd_rn(__fdiv_rn(__fdiv_rn(m, c.bc1), __fadd_rn(root_vhat, c.eps)), __fmul_rn(c.weight_decay, p));
}

// ---- single-tensor kernels -------------------------------------------------------------------------

#define BERT_GRID_STRIDE(i, n)                                                                          \
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < (n);               \
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)

__global__ void __launch_bounds__(kThreads) adamw_kernel(AdamWStepArgs a, AdamCoefficients c) {
  BERT_GRID_STRIDE(i, a.n) {
    float p = a.param[i], m = a.m[i], v = a.v[i];
    adam_element(c, __fmul_rn(a.grad[i], a.grad_scale), p, m, v);
    if (a.zero_grad) a.grad[i] = 0.f;
    a.param[i] = p;
    a.m[i] = m;
    a.v[i] = v;
  }
}

__global__ void __launch_bounds__(kThreads) lamb_update_kernel(LambUpdateArgs a, LambCoefficients c) {
  BERT_GRID_STRIDE(i, a.n) {
    float m = a.m[i], v = a.v[i];
    adam_moments(c.beta1, c.one_minus_beta1, c.beta2, c.one_minus_beta2, a.grad[i], m, v);
    a.m[i] = m;
    a.v[i] = v;
    a.update[i] = lamb_raw_update(c, a.param[i], m, v);
  }
}

__global__ void __launch_bounds__(kThreads) lamb_apply_kernel(float* param, const float* update, int64_t n,
                                                             float step_size) {
  BERT_GRID_STRIDE(i, n) { param[i] = __fsub_rn(param[i], __fmul_rn(step_size, update[i])); }
}

__global__ void __launch_bounds__(kThreads) scale_kernel(float* x, int64_t n, float s, const float* s_device) {
  const float f = s_device ? *s_device : s;
  BERT_GRID_STRIDE(i, n) { x[i] = __fmul_rn(x[i], f); }
}

// x *= factor (when factor != 1) and *found = 1 if some product is NaN / Inf. factor = inv_scale / *loss_scale.
__global__ void __launch_bounds__(kThreads) unscale_check_kernel(float* x, int64_t n, float inv_scale,
                                                                const float* loss_scale, int* found) {
  const float f = loss_scale ? __fdiv_rn(inv_scale, *loss_scale) : inv_scale;
  bool bad = false;
  BERT_GRID_STRIDE(i, n) {
    const float y = __fmul_rn(x[i], f);
    bad |= is_nonfinite(y);
    if (f != 1.f) x[i] = y;
  }
  if (__syncthreads_or(bad) && threadIdx.x == 0) *found = 1;
}

#undef BERT_GRID_STRIDE

// Stage 1 of a sum of squares over one array: block k sums chunk k (kMultiTensorChunk elements).
__global__ void __launch_bounds__(kThreads) sum_squares_chunks_kernel(const float* x, int64_t n, double* partial) {
  __shared__ double scratch[32];
  const int64_t lo = static_cast<int64_t>(blockIdx.x) * kMultiTensorChunk;
  const int64_t hi = min(n, lo + kMultiTensorChunk);
  double acc = 0.0;
  for (int64_t i = lo + threadIdx.x; i < hi; i += blockDim.x) {
    const double v = x[i];
    acc += v * v;
  }
  acc = block_sum(acc, scratch);
  if (threadIdx.x == 0) partial[blockIdx.x] = acc;
}

// Stage 2 of every global sum of squares: the partials in a fixed order, then the outputs.
__global__ void __launch_bounds__(kReduceThreads) sum_squares_final_kernel(const double* partial, int64_t count,
                                                                          GradNormOutputs out) {
  __shared__ double scratch[32];
  double acc = 0.0;
  for (int64_t k = threadIdx.x; k < count; k += blockDim.x) acc += partial[k];
  acc = block_sum(acc, scratch);
  if (threadIdx.x != 0) return;
  if (out.sum_squares) *out.sum_squares = acc;
  const double norm = ::sqrt(acc);
  if (out.norm) *out.norm = static_cast<float>(norm);
  if (out.found_inf && !::isfinite(acc)) *out.found_inf = 1;
  if (out.clip_factor) {  // torch.nn.utils.clip_grad_norm_, as engine/src/optimizer.cc
    float factor = 1.f;
    if (out.max_norm > 0.f) {
      const double clip = static_cast<double>(out.max_norm) / (norm + 1e-6);
      if (clip < 1.0) factor = static_cast<float>(clip);
    }
    *out.clip_factor = factor;
  }
}

// ---- multi-tensor kernels -------------------------------------------------------------------------

// The element range [begin, end) of chunk `chunk` within tensor `tensor`.
struct ChunkRange {
  int tensor;
  int64_t begin, end;
};

__device__ __forceinline__ ChunkRange locate_chunk(const DeviceTensorList& l, int64_t chunk) {
  // The last tensor whose first chunk is <= chunk (empty tensors own no chunk and are passed over).
  int lo = 0, hi = l.count;  // chunk_offsets[lo] <= chunk < chunk_offsets[hi]
  while (hi - lo > 1) {
    const int mid = (lo + hi) / 2;
    if (l.chunk_offsets[mid] <= chunk) {
      lo = mid;
    } else {
      hi = mid;
    }
  }
  const int64_t size = l.offsets[lo + 1] - l.offsets[lo];
  const int64_t begin = (chunk - l.chunk_offsets[lo]) * kMultiTensorChunk;
  return {lo, begin, min(size, begin + kMultiTensorChunk)};
}

__device__ __forceinline__ bool tensor_decays(const DeviceTensorList& l, int tensor) {
  return !l.decay || l.decay[tensor] != 0;
}

__device__ __forceinline__ bool skipped(const int* skip) { return skip && *skip != 0; }

__device__ __forceinline__ int64_t step_of(const MultiTensorStep& s) {
  return s.step_counter ? *s.step_counter + 1 : s.step;
}

__global__ void __launch_bounds__(kThreads) adamw_multi_kernel(DeviceTensorList l, MultiTensorStep s) {
  if (skipped(s.skip)) return;
  const ChunkRange r = locate_chunk(l, blockIdx.x);
  __shared__ AdamCoefficients shared_coefficients;
  if (threadIdx.x == 0) {
    const float wd = tensor_decays(l, r.tensor) ? s.weight_decay : 0.f;
    shared_coefficients = adam_coefficients(s.lr, s.beta1, s.beta2, s.eps, wd, step_of(s));
  }
  __syncthreads();
  const AdamCoefficients c = shared_coefficients;
  const float factor = s.grad_factor ? *s.grad_factor : 1.f;
  float* param = l.params[r.tensor];
  const float* grad = l.grads[r.tensor];
  float* m = l.m[r.tensor];
  float* v = l.v[r.tensor];
  uint16_t* half_copy = l.params_f16 ? l.params_f16[r.tensor] : nullptr;
  for (int64_t i = r.begin + threadIdx.x; i < r.end; i += blockDim.x) {
    float g = grad[i];
    if (s.grad_factor) g = __fmul_rn(g, factor);
    float p = param[i], mi = m[i], vi = v[i];
    adam_element(c, g, p, mi, vi);
    param[i] = p;
    m[i] = mi;
    v[i] = vi;
    if (half_copy) half_copy[i] = to_half_bits(p);
  }
}

// LAMB stage 1: m and v, and per chunk the partial sums of p^2 and u^2 (double) into partial[2k], [2k + 1].
__global__ void __launch_bounds__(kThreads) lamb_update_multi_kernel(DeviceTensorList l, MultiTensorStep s,
                                                                    double* partial) {
  if (skipped(s.skip)) return;
  __shared__ double scratch[32];
  __shared__ LambCoefficients shared_coefficients;
  const ChunkRange r = locate_chunk(l, blockIdx.x);
  if (threadIdx.x == 0) {
    const float wd = tensor_decays(l, r.tensor) ? s.weight_decay : 0.f;
    shared_coefficients = lamb_coefficients(s.beta1, s.beta2, s.eps, wd, step_of(s));
  }
  __syncthreads();
  const LambCoefficients c = shared_coefficients;
  const float factor = s.grad_factor ? *s.grad_factor : 1.f;
  const float* param = l.params[r.tensor];
  const float* grad = l.grads[r.tensor];
  float* m = l.m[r.tensor];
  float* v = l.v[r.tensor];
  double param_sq = 0.0, update_sq = 0.0;
  for (int64_t i = r.begin + threadIdx.x; i < r.end; i += blockDim.x) {
    float g = grad[i];
    if (s.grad_factor) g = __fmul_rn(g, factor);
    float mi = m[i], vi = v[i];
    adam_moments(c.beta1, c.one_minus_beta1, c.beta2, c.one_minus_beta2, g, mi, vi);
    m[i] = mi;
    v[i] = vi;
    const float p = param[i];
    const double u = lamb_raw_update(c, p, mi, vi);
    param_sq += static_cast<double>(p) * p;
    update_sq += u * u;
  }
  param_sq = block_sum(param_sq, scratch);
  update_sq = block_sum(update_sq, scratch);
  if (threadIdx.x == 0) {
    partial[2 * static_cast<int64_t>(blockIdx.x)] = param_sq;
    partial[2 * static_cast<int64_t>(blockIdx.x) + 1] = update_sq;
  }
}

// LAMB stage 2, one block per tensor: ||p|| / ||u|| where weight decay applies and both are > 0, else 1.
__global__ void __launch_bounds__(kThreads) lamb_trust_ratio_kernel(DeviceTensorList l, MultiTensorStep s,
                                                                   const double* partial, double* ratio) {
  if (skipped(s.skip)) return;
  __shared__ double scratch[32];
  const int tensor = blockIdx.x;
  const int64_t k0 = l.chunk_offsets[tensor], k1 = l.chunk_offsets[tensor + 1];
  double param_sq = 0.0, update_sq = 0.0;
  for (int64_t k = k0 + threadIdx.x; k < k1; k += blockDim.x) {
    param_sq += partial[2 * k];
    update_sq += partial[2 * k + 1];
  }
  param_sq = block_sum(param_sq, scratch);
  update_sq = block_sum(update_sq, scratch);
  if (threadIdx.x != 0) return;
  double r = 1.0;
  if (tensor_decays(l, tensor) && s.weight_decay != 0.f) {
    const double param_norm = ::sqrt(param_sq), update_norm = ::sqrt(update_sq);
    if (param_norm > 0.0 && update_norm > 0.0) r = param_norm / update_norm;
  }
  ratio[tensor] = r;
}

// LAMB stage 3: p -= float(lr * ratio) * u, with u recomputed from the stored m and v.
__global__ void __launch_bounds__(kThreads) lamb_apply_multi_kernel(DeviceTensorList l, MultiTensorStep s,
                                                                   const double* ratio) {
  if (skipped(s.skip)) return;
  __shared__ LambCoefficients shared_coefficients;
  const ChunkRange r = locate_chunk(l, blockIdx.x);
  if (threadIdx.x == 0) {
    const float wd = tensor_decays(l, r.tensor) ? s.weight_decay : 0.f;
    shared_coefficients = lamb_coefficients(s.beta1, s.beta2, s.eps, wd, step_of(s));
  }
  __syncthreads();
  const LambCoefficients c = shared_coefficients;
  const float step_size = static_cast<float>(static_cast<double>(s.lr) * ratio[r.tensor]);
  float* param = l.params[r.tensor];
  const float* m = l.m[r.tensor];
  const float* v = l.v[r.tensor];
  uint16_t* half_copy = l.params_f16 ? l.params_f16[r.tensor] : nullptr;
  for (int64_t i = r.begin + threadIdx.x; i < r.end; i += blockDim.x) {
    const float p = param[i];
    const float u = lamb_raw_update(c, p, m[i], v[i]);
    const float updated = __fsub_rn(p, __fmul_rn(step_size, u));
    param[i] = updated;
    if (half_copy) half_copy[i] = to_half_bits(updated);
  }
}

__global__ void advance_step_kernel(int64_t* step_counter, const int* skip) {
  if (!skipped(skip)) ++*step_counter;
}

// Per chunk: the sum of the gradients' squares.
__global__ void __launch_bounds__(kThreads) grad_sum_squares_multi_kernel(DeviceTensorList l, double* partial) {
  __shared__ double scratch[32];
  const ChunkRange r = locate_chunk(l, blockIdx.x);
  const float* grad = l.grads[r.tensor];
  double acc = 0.0;
  for (int64_t i = r.begin + threadIdx.x; i < r.end; i += blockDim.x) {
    const double g = grad[i];
    acc += g * g;
  }
  acc = block_sum(acc, scratch);
  if (threadIdx.x == 0) partial[blockIdx.x] = acc;
}

__global__ void __launch_bounds__(kThreads) scale_multi_kernel(DeviceTensorList l, const float* factor) {
  const float f = *factor;
  if (f == 1.f) return;
  const ChunkRange r = locate_chunk(l, blockIdx.x);
  float* grad = l.grads[r.tensor];
  for (int64_t i = r.begin + threadIdx.x; i < r.end; i += blockDim.x) grad[i] = __fmul_rn(grad[i], f);
}

__global__ void __launch_bounds__(kThreads) unscale_check_multi_kernel(DeviceTensorList l, float inv_scale,
                                                                      const float* loss_scale, int* found) {
  const float f = loss_scale ? __fdiv_rn(inv_scale, *loss_scale) : inv_scale;
  const ChunkRange r = locate_chunk(l, blockIdx.x);
  float* grad = l.grads[r.tensor];
  bool bad = false;
  for (int64_t i = r.begin + threadIdx.x; i < r.end; i += blockDim.x) {
    const float y = __fmul_rn(grad[i], f);
    bad |= is_nonfinite(y);
    if (f != 1.f) grad[i] = y;
  }
  if (__syncthreads_or(bad) && threadIdx.x == 0) *found = 1;
}

// torch.amp.GradScaler's update, one thread.
__global__ void update_loss_scale_kernel(float* scale, int* found_inf, int* good_steps, int growth_interval,
                                         float growth, float backoff) {
  if (*found_inf) {
    *scale = *scale * backoff;
    *good_steps = 0;
  } else {
    const int successful = *good_steps + 1;
    if (successful >= growth_interval) {
      const float grown = *scale * growth;
      if (!is_nonfinite(grown)) *scale = grown;
      *good_steps = 0;
    } else {
      *good_steps = successful;
    }
  }
  *found_inf = 0;
}

// ---- launcher helpers ---------------------------------------------------------------------------------

// The list-level checks every multi-tensor launcher makes; `what` names the launcher.
bool check_list(const DeviceTensorList& l, const char* what, bool need_params, bool need_moments) {
  const std::string op(what);
  if (l.count < 0 || l.total < 0 || l.total_chunks < 0) return invalid(op + ": negative count in the tensor list");
  if (l.count == 0) return true;
  if (!l.offsets || !l.chunk_offsets) return invalid(op + ": the tensor list has no offsets");
  if (!l.grads) return invalid(op + ": the tensor list has no gradients");
  if (need_params && !l.params) return invalid(op + ": the tensor list has no parameters");
  if (need_moments && (!l.m || !l.v)) return invalid(op + ": the tensor list has no moments");
  if (l.total_chunks > kMaxGridX) return invalid(op + ": too many chunks in the tensor list");
  return true;
}

bool check_step(const MultiTensorStep& s, const char* what) {
  if (!(s.beta1 >= 0.f && s.beta1 < 1.f) || !(s.beta2 >= 0.f && s.beta2 < 1.f))
    return invalid(std::string(what) + ": betas outside [0, 1)");
  if (!(s.eps >= 0.f) || !(s.weight_decay >= 0.f) || !(s.lr >= 0.f))
    return invalid(std::string(what) + ": negative or NaN lr, eps or weight decay");
  if (!s.step_counter && s.step < 1) return invalid(std::string(what) + ": step must be >= 1");
  return true;
}

bool advance_step(const MultiTensorStep& s, cudaStream_t stream, const char* name) {
  if (!s.step_counter) return true;
  advance_step_kernel<<<1, 1, 0, stream>>>(s.step_counter, s.skip);
  return check_launch(name);
}

unsigned list_blocks(const DeviceTensorList& l) { return static_cast<unsigned>(l.total_chunks); }

}  // namespace

// ==== single tensor ==================================================================================

bool adamw_step_f32(const AdamWStepArgs& a, void* stream) {
  if (a.n < 0) return invalid("adamw_step_f32: negative n");
  if (a.step < 1) return invalid("adamw_step_f32: step must be >= 1");
  if (a.n == 0) return true;
  if (!a.param || !a.grad || !a.m || !a.v) return invalid("adamw_step_f32: null param, grad, m or v");
  const AdamCoefficients c = adam_coefficients(a.lr, a.beta1, a.beta2, a.eps, a.weight_decay, a.step);
  adamw_kernel<<<elementwise_blocks(a.n), kThreads, 0, as_stream(stream)>>>(a, c);
  return check_launch("adamw_step_f32");
}

bool lamb_update_f32(const LambUpdateArgs& a, void* stream) {
  if (a.n < 0) return invalid("lamb_update_f32: negative n");
  if (a.step < 1) return invalid("lamb_update_f32: step must be >= 1");
  if (a.n == 0) return true;
  if (!a.param || !a.grad || !a.m || !a.v || !a.update)
    return invalid("lamb_update_f32: null param, grad, m, v or update");
  const LambCoefficients c = lamb_coefficients(a.beta1, a.beta2, a.eps, a.weight_decay, a.step);
  lamb_update_kernel<<<elementwise_blocks(a.n), kThreads, 0, as_stream(stream)>>>(a, c);
  return check_launch("lamb_update_f32");
}

bool lamb_apply_f32(float* param, const float* update, int64_t n, float step_size, void* stream) {
  if (n < 0) return invalid("lamb_apply_f32: negative n");
  if (n == 0) return true;
  if (!param || !update) return invalid("lamb_apply_f32: null param or update");
  lamb_apply_kernel<<<elementwise_blocks(n), kThreads, 0, as_stream(stream)>>>(param, update, n, step_size);
  return check_launch("lamb_apply_f32");
}

size_t sum_squares_workspace_bytes(int64_t n) {
  return align_up(static_cast<size_t>(std::max<int64_t>(1, ceil_div(std::max<int64_t>(n, 0), kMultiTensorChunk))) *
                  sizeof(double));
}

bool sum_squares_f32(const float* x, int64_t n, double* out, void* stream, Workspace ws) {
  if (n < 0) return invalid("sum_squares_f32: negative n");
  if (!out) return invalid("sum_squares_f32: null out");
  if (n > 0 && !x) return invalid("sum_squares_f32: null x");
  const int64_t chunks = ceil_div(n, kMultiTensorChunk);
  if (chunks > kMaxGridX) return invalid("sum_squares_f32: n too large");
  const cudaStream_t st = as_stream(stream);
  Scratch scratch(ws, sum_squares_workspace_bytes(n), st, "sum_squares_f32");
  if (!scratch.ok()) return false;
  double* partial = scratch.take<double>(static_cast<size_t>(std::max<int64_t>(chunks, 1)));
  if (chunks > 0) {
    sum_squares_chunks_kernel<<<static_cast<unsigned>(chunks), kThreads, 0, st>>>(x, n, partial);
    if (!check_launch("sum_squares_f32 chunks")) return false;
  }
  GradNormOutputs o;
  o.sum_squares = out;
  sum_squares_final_kernel<<<1, kReduceThreads, 0, st>>>(partial, chunks, o);
  return check_launch("sum_squares_f32");
}

bool scale_f32(float* x, int64_t n, float s, void* stream) {
  if (n < 0) return invalid("scale_f32: negative n");
  if (n == 0) return true;
  if (!x) return invalid("scale_f32: null x");
  scale_kernel<<<elementwise_blocks(n), kThreads, 0, as_stream(stream)>>>(x, n, s, nullptr);
  return check_launch("scale_f32");
}

bool scale_by_device_f32(float* x, int64_t n, const float* s, void* stream) {
  if (n < 0) return invalid("scale_by_device_f32: negative n");
  if (n == 0) return true;
  if (!x || !s) return invalid("scale_by_device_f32: null x or s");
  scale_kernel<<<elementwise_blocks(n), kThreads, 0, as_stream(stream)>>>(x, n, 1.f, s);
  return check_launch("scale_by_device_f32");
}

bool all_finite_f32(const float* x, int64_t n, int* found_nonfinite, void* stream) {
  if (n < 0) return invalid("all_finite_f32: negative n");
  if (!found_nonfinite) return invalid("all_finite_f32: null found_nonfinite");
  if (n == 0) return true;
  if (!x) return invalid("all_finite_f32: null x");
  // A factor of exactly 1 only checks (nothing is written).
  unscale_check_kernel<<<elementwise_blocks(n), kThreads, 0, as_stream(stream)>>>(const_cast<float*>(x), n, 1.f,
                                                                                  nullptr, found_nonfinite);
  return check_launch("all_finite_f32");
}

bool unscale_and_check(float* grads, int64_t n, float inv_scale, const float* loss_scale, int* found_inf,
                       void* stream) {
  if (n < 0) return invalid("unscale_and_check: negative n");
  if (!found_inf) return invalid("unscale_and_check: null found_inf");
  if (n == 0) return true;
  if (!grads) return invalid("unscale_and_check: null grads");
  unscale_check_kernel<<<elementwise_blocks(n), kThreads, 0, as_stream(stream)>>>(grads, n, inv_scale, loss_scale,
                                                                                  found_inf);
  return check_launch("unscale_and_check");
}

// ==== multi-tensor ===================================================================================

DeviceTensorListStorage::~DeviceTensorListStorage() {
  if (block_) cudaFree(block_);
}

bool DeviceTensorListStorage::build(const std::vector<DeviceTensorEntry>& entries) {
  if (entries.size() > static_cast<size_t>(INT32_MAX)) return invalid("DeviceTensorListStorage: too many tensors");
  const size_t count = entries.size();
  std::vector<float*> params(count), grads(count), m(count), v(count);
  std::vector<uint16_t*> halves(count);
  std::vector<uint8_t> decay(count);
  std::vector<int64_t> offsets(count + 1, 0), chunk_offsets(count + 1, 0);
  bool all_params = true, all_grads = true, all_moments = true, any_half = false;
  for (size_t i = 0; i < count; ++i) {
    const DeviceTensorEntry& e = entries[i];
    if (e.n < 0) return invalid("DeviceTensorListStorage: tensor " + std::to_string(i) + " has negative size");
    params[i] = e.param;
    grads[i] = e.grad;
    m[i] = e.m;
    v[i] = e.v;
    halves[i] = e.param_f16;
    decay[i] = e.decay ? 1 : 0;
    offsets[i + 1] = offsets[i] + e.n;
    chunk_offsets[i + 1] = chunk_offsets[i] + ceil_div(e.n, kMultiTensorChunk);
    if (e.n > 0) {
      all_params = all_params && e.param;
      all_grads = all_grads && e.grad;
      all_moments = all_moments && e.m && e.v;
    }
    any_half = any_half || e.param_f16;
  }
  // One device block: five pointer arrays, offsets, chunk offsets, decay flags.
  const size_t pointer_bytes = align_up(count * sizeof(void*));
  const size_t offset_bytes = align_up((count + 1) * sizeof(int64_t));
  const size_t bytes = 5 * pointer_bytes + 2 * offset_bytes + align_up(count);
  if (block_) cudaFree(block_);
  block_ = nullptr;
  list_ = DeviceTensorList{};
  void* block = nullptr;
  if (!record(cudaMalloc(&block, bytes), "DeviceTensorListStorage: cudaMalloc")) return false;
  block_ = block;
  char* p = static_cast<char*>(block);
  auto upload = [&](const void* src, size_t n, size_t advance) -> char* {
    char* dst = p;
    p += advance;
    if (n && !record(cudaMemcpy(dst, src, n, cudaMemcpyHostToDevice), "DeviceTensorListStorage: cudaMemcpy"))
      return nullptr;
    return dst;
  };
  char* d_params = upload(params.data(), count * sizeof(void*), pointer_bytes);
  char* d_grads = upload(grads.data(), count * sizeof(void*), pointer_bytes);
  char* d_m = upload(m.data(), count * sizeof(void*), pointer_bytes);
  char* d_v = upload(v.data(), count * sizeof(void*), pointer_bytes);
  char* d_halves = upload(halves.data(), count * sizeof(void*), pointer_bytes);
  char* d_offsets = upload(offsets.data(), (count + 1) * sizeof(int64_t), offset_bytes);
  char* d_chunks = upload(chunk_offsets.data(), (count + 1) * sizeof(int64_t), offset_bytes);
  char* d_decay = upload(decay.data(), count, align_up(count));
  if (!d_params || !d_grads || !d_m || !d_v || !d_halves || !d_offsets || !d_chunks || !d_decay) return false;
  list_.params = all_params ? reinterpret_cast<float* const*>(d_params) : nullptr;
  list_.grads = all_grads ? reinterpret_cast<float* const*>(d_grads) : nullptr;
  list_.m = all_moments ? reinterpret_cast<float* const*>(d_m) : nullptr;
  list_.v = all_moments ? reinterpret_cast<float* const*>(d_v) : nullptr;
  list_.params_f16 = any_half ? reinterpret_cast<uint16_t* const*>(d_halves) : nullptr;
  list_.decay = reinterpret_cast<const uint8_t*>(d_decay);
  list_.offsets = reinterpret_cast<const int64_t*>(d_offsets);
  list_.chunk_offsets = reinterpret_cast<const int64_t*>(d_chunks);
  list_.count = static_cast<int>(count);
  list_.total = offsets[count];
  list_.total_chunks = chunk_offsets[count];
  return true;
}

size_t multi_tensor_workspace_bytes(const DeviceTensorList& list) {
  const size_t chunks = static_cast<size_t>(std::max<int64_t>(list.total_chunks, 1));
  const size_t count = static_cast<size_t>(std::max(list.count, 1));
  return align_up(2 * chunks * sizeof(double)) + align_up(count * sizeof(double));
}

bool adamw_step_multi(const DeviceTensorList& list, const MultiTensorStep& s, void* stream) {
  if (!check_list(list, "adamw_step_multi", true, true) || !check_step(s, "adamw_step_multi")) return false;
  const cudaStream_t st = as_stream(stream);
  if (list.total_chunks > 0) {
    adamw_multi_kernel<<<list_blocks(list), kThreads, 0, st>>>(list, s);
    if (!check_launch("adamw_step_multi")) return false;
  }
  return advance_step(s, st, "adamw_step_multi step");
}

bool lamb_update_multi(const DeviceTensorList& list, const MultiTensorStep& s, Workspace ws, void* stream) {
  if (!check_list(list, "lamb_update_multi", true, true) || !check_step(s, "lamb_update_multi")) return false;
  if (list.total_chunks == 0) return true;
  if (!ws.ptr) return invalid("lamb_update_multi: needs a workspace (shared with lamb_apply_multi)");
  const cudaStream_t st = as_stream(stream);
  Scratch scratch(ws, multi_tensor_workspace_bytes(list), st, "lamb_update_multi");
  if (!scratch.ok()) return false;
  double* partial = scratch.take<double>(2 * static_cast<size_t>(list.total_chunks));
  lamb_update_multi_kernel<<<list_blocks(list), kThreads, 0, st>>>(list, s, partial);
  return check_launch("lamb_update_multi");
}

bool lamb_apply_multi(const DeviceTensorList& list, const MultiTensorStep& s, Workspace ws, void* stream) {
  if (!check_list(list, "lamb_apply_multi", true, true) || !check_step(s, "lamb_apply_multi")) return false;
  const cudaStream_t st = as_stream(stream);
  if (list.total_chunks > 0) {
    if (!ws.ptr) return invalid("lamb_apply_multi: needs the workspace lamb_update_multi filled");
    Scratch scratch(ws, multi_tensor_workspace_bytes(list), st, "lamb_apply_multi");
    if (!scratch.ok()) return false;
    const double* partial = scratch.take<double>(2 * static_cast<size_t>(list.total_chunks));
    double* ratio = scratch.take<double>(static_cast<size_t>(list.count));
    lamb_trust_ratio_kernel<<<static_cast<unsigned>(list.count), kThreads, 0, st>>>(list, s, partial, ratio);
    if (!check_launch("lamb_apply_multi ratios")) return false;
    lamb_apply_multi_kernel<<<list_blocks(list), kThreads, 0, st>>>(list, s, ratio);
    if (!check_launch("lamb_apply_multi")) return false;
  }
  return advance_step(s, st, "lamb_apply_multi step");
}

bool lamb_step_multi(const DeviceTensorList& list, const MultiTensorStep& s, void* stream, Workspace ws) {
  if (!check_list(list, "lamb_step_multi", true, true) || !check_step(s, "lamb_step_multi")) return false;
  const cudaStream_t st = as_stream(stream);
  Scratch scratch(ws, list.total_chunks > 0 ? multi_tensor_workspace_bytes(list) : 0, st, "lamb_step_multi");
  if (!scratch.ok()) return false;
  const Workspace inner{scratch.take<char>(0), multi_tensor_workspace_bytes(list)};
  if (list.total_chunks > 0 && !lamb_update_multi(list, s, inner, stream)) return false;
  return lamb_apply_multi(list, s, inner, stream);
}

bool global_grad_norm_multi(const DeviceTensorList& list, const GradNormOutputs& out, void* stream, Workspace ws) {
  if (!check_list(list, "global_grad_norm_multi", false, false)) return false;
  if (!(out.max_norm >= 0.f)) return invalid("global_grad_norm_multi: negative or NaN max_norm");
  const cudaStream_t st = as_stream(stream);
  Scratch scratch(ws, multi_tensor_workspace_bytes(list), st, "global_grad_norm_multi");
  if (!scratch.ok()) return false;
  double* partial = scratch.take<double>(2 * static_cast<size_t>(std::max<int64_t>(list.total_chunks, 1)));
  const int64_t chunks = list.count > 0 ? list.total_chunks : 0;
  if (chunks > 0) {
    grad_sum_squares_multi_kernel<<<static_cast<unsigned>(chunks), kThreads, 0, st>>>(list, partial);
    if (!check_launch("global_grad_norm_multi chunks")) return false;
  }
  sum_squares_final_kernel<<<1, kReduceThreads, 0, st>>>(partial, chunks, out);
  return check_launch("global_grad_norm_multi");
}

bool scale_multi(const DeviceTensorList& list, const float* factor, void* stream) {
  if (!check_list(list, "scale_multi", false, false)) return false;
  if (!factor) return invalid("scale_multi: null factor");
  if (list.count == 0 || list.total_chunks == 0) return true;
  scale_multi_kernel<<<list_blocks(list), kThreads, 0, as_stream(stream)>>>(list, factor);
  return check_launch("scale_multi");
}

bool unscale_and_check_multi(const DeviceTensorList& list, float inv_scale, const float* loss_scale, int* found_inf,
                             void* stream) {
  if (!check_list(list, "unscale_and_check_multi", false, false)) return false;
  if (!found_inf) return invalid("unscale_and_check_multi: null found_inf");
  if (list.count == 0 || list.total_chunks == 0) return true;
  unscale_check_multi_kernel<<<list_blocks(list), kThreads, 0, as_stream(stream)>>>(list, inv_scale, loss_scale,
                                                                                    found_inf);
  return check_launch("unscale_and_check_multi");
}

bool update_loss_scale(float* scale, int* found_inf, int* good_steps, int growth_interval, float growth, float backoff,
                       void* stream) {
  if (!scale || !found_inf || !good_steps) return invalid("update_loss_scale: null scale, found_inf or good_steps");
  if (growth_interval < 1) return invalid("update_loss_scale: growth_interval must be >= 1");
  if (!(growth >= 1.f) || !(backoff > 0.f && backoff <= 1.f))
    return invalid("update_loss_scale: growth must be >= 1 and backoff in (0, 1]");
  update_loss_scale_kernel<<<1, 1, 0, as_stream(stream)>>>(scale, found_inf, good_steps, growth_interval, growth,
                                                           backoff);
  return check_launch("update_loss_scale");
}

}  // namespace bert::kernels::cuda
