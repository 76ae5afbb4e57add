// CUDA forward kernels: LayerNorm (+ residual), scaled masked softmax, activations, embedding gather
// + LayerNorm. One block per row for the row ops (statistics in fp32 with warp-shuffle reductions,
// two passes for the variance like the CPU kernels); the same semantics as kernels/ref.
// Compiled here, tested against the references only where a GPU exists.
#include <cuda_runtime.h>

#include <cmath>

#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/launch_check.h"

namespace bert::kernels::cuda {

namespace {

constexpr int kThreads = 256;

// Sum over the block (every thread gets the result). `scratch` holds one float per warp.
__device__ float block_sum(float v, float* scratch) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  __syncthreads();  // scratch may still be read from a previous reduction
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  float total = 0;
  for (int w = 0; w < blockDim.x / 32; ++w) total += scratch[w];
  return total;
}

__device__ float block_max(float v, float* scratch) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  float m = -INFINITY;
  for (int w = 0; w < blockDim.x / 32; ++w) m = fmaxf(m, scratch[w]);
  return m;
}

// y = LN(x + residual) over `cols`, for the row this block owns; y may alias x or residual (each
// element is read and written by the same thread).
__device__ void layernorm_row(const float* x, const float* residual, const float* gamma, const float* beta, float* y,
                              int64_t cols, float eps, float* scratch) {
  float s = 0;
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) s += x[c] + (residual ? residual[c] : 0.f);
  const float mean = block_sum(s, scratch) / float(cols);
  float q = 0;
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
    const float d = x[c] + (residual ? residual[c] : 0.f) - mean;
    q += d * d;
  }
  const float rstd = rsqrtf(block_sum(q, scratch) / float(cols) + eps);
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
    const float v = x[c] + (residual ? residual[c] : 0.f);
    y[c] = (v - mean) * rstd * gamma[c] + beta[c];
  }
}

__global__ void layernorm_kernel(LayerNormArgs a) {
  __shared__ float scratch[32];
  const int64_t r = blockIdx.x;
  layernorm_row(a.x + r * a.cols, a.residual ? a.residual + r * a.cols : nullptr, a.gamma, a.beta, a.y + r * a.cols,
                a.cols, a.eps, scratch);
}

__global__ void softmax_masked_kernel(SoftmaxMaskedArgs a) {
  __shared__ float scratch[32];
  const int64_t r = blockIdx.x;
  const int64_t b = r / (a.heads * a.q_len);
  float* row = a.scores + r * a.k_len;
  const int32_t* mask = a.key_mask ? a.key_mask + b * a.k_len : nullptr;
  float m = -INFINITY;
  for (int64_t k = threadIdx.x; k < a.k_len; k += blockDim.x)
    if (!mask || mask[k]) m = fmaxf(m, row[k] * a.scale);
  m = block_max(m, scratch);
  if (m == -INFINITY) {  // every key masked: uniform, as HF's additive mask gives
    for (int64_t k = threadIdx.x; k < a.k_len; k += blockDim.x) row[k] = 1.f / float(a.k_len);
    return;
  }
  float s = 0;
  for (int64_t k = threadIdx.x; k < a.k_len; k += blockDim.x) {
    const float e = (!mask || mask[k]) ? expf(row[k] * a.scale - m) : 0.f;
    row[k] = e;
    s += e;
  }
  const float inv = 1.f / block_sum(s, scratch);
  for (int64_t k = threadIdx.x; k < a.k_len; k += blockDim.x) row[k] *= inv;
}

__device__ float activate(float x, Activation kind) {
  switch (kind) {
    case Activation::kIdentity: return x;
    case Activation::kGeluErf: return 0.5f * x * erfcf(-x * 0.70710678118654752f);
    case Activation::kGeluTanh: {
      const float u = 0.7978845608028654f * (x + 0.044715f * x * x * x);
      return x / (1.f + expf(-2.f * u));
    }
    case Activation::kGeluQuick: return x / (1.f + expf(-1.702f * x));
    case Activation::kRelu: return x < 0.f ? 0.f : x;
    case Activation::kTanh: return tanhf(x);
  }
  return x;
}

__global__ void activation_kernel(ActivationArgs a) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < a.n; i += int64_t(gridDim.x) * blockDim.x)
    a.x[i] = activate(a.x[i], a.kind);
}

__global__ void embed_kernel(EmbedArgs a) {
  __shared__ float scratch[32];
  const int64_t t = blockIdx.x;
  float* out = a.out + t * a.width;
  const float* word = a.word_table + int64_t(a.input_ids[t]) * a.width;
  const float* pos = a.positions && a.position_table ? a.position_table + int64_t(a.positions[t]) * a.width : nullptr;
  const float* type =
      a.type_table ? a.type_table + int64_t(a.token_types ? a.token_types[t] : 0) * a.width : nullptr;
  for (int64_t c = threadIdx.x; c < a.width; c += blockDim.x)
    out[c] = word[c] + (pos ? pos[c] : 0.f) + (type ? type[c] : 0.f);
  if (a.gamma) layernorm_row(out, nullptr, a.gamma, a.beta, out, a.width, a.eps, scratch);
}

cudaStream_t as_stream(void* s) { return static_cast<cudaStream_t>(s); }

}  // namespace

bool layernorm_f32(const LayerNormArgs& a, void* stream) {
  if (a.rows <= 0) return true;
  layernorm_kernel<<<static_cast<unsigned>(a.rows), kThreads, 0, as_stream(stream)>>>(a);
  return check_launch("layernorm_f32");
}

bool softmax_masked_f32(const SoftmaxMaskedArgs& a, void* stream) {
  const int64_t rows = a.batch * a.heads * a.q_len;
  if (rows <= 0) return true;
  softmax_masked_kernel<<<static_cast<unsigned>(rows), kThreads, 0, as_stream(stream)>>>(a);
  return check_launch("softmax_masked_f32");
}

bool activation_f32(const ActivationArgs& a, void* stream) {
  if (a.n <= 0) return true;
  const int64_t blocks = std::min<int64_t>((a.n + kThreads - 1) / kThreads, 65535);
  activation_kernel<<<static_cast<unsigned>(blocks), kThreads, 0, as_stream(stream)>>>(a);
  return check_launch("activation_f32");
}

bool embed_f32(const EmbedArgs& a, void* stream) {
  if (a.tokens <= 0) return true;
  embed_kernel<<<static_cast<unsigned>(a.tokens), kThreads, 0, as_stream(stream)>>>(a);
  return check_launch("embed_f32");
}

}  // namespace bert::kernels::cuda
