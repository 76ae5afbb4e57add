// The CUDA device's mixed-precision, int8 and padding-removal kernels (API and semantics: precision.h).
// Element types are template parameters (float, __half): fp16 is storage only, every computation is in
// fp32. Row ops (LayerNorm, embedding) run one block per row with block reductions in fp32 and two passes
// for the variance (the row is kept in shared memory as fp32 between passes when it fits). Element-wise
// ops run over a 2-D grid (x: groups of columns, y: rows) with grid-stride loops. Every kernel has a
// vectorised variant (16-byte loads: 4 floats or 8 halves) used when the sizes, strides and pointers
// allow it, and a scalar fallback otherwise.
// Compiled here for sm_80 / sm_90a, tested against the CPU references
// (tests/cuda_precision_test.cc) only where a GPU exists.
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdint>
#include <type_traits>

#include "kernels/cuda/launch_check.h"
#include "kernels/cuda/precision.h"

namespace bert::kernels::cuda {

namespace {

constexpr int kThreads = 256;        // element-wise kernels: at most this many threads per block
constexpr int kRowMaxThreads = 512;  // row kernels (one block per row)
constexpr int64_t kMaxGridX = 1 << 20;
constexpr int64_t kMaxGridY = 65535;
constexpr int64_t kMaxRowBlocks = INT_MAX;
constexpr int64_t kRowCacheBytes = 32 * 1024;  // a row up to this size (as fp32) is cached in shared memory

cudaStream_t as_stream(void* s) { return static_cast<cudaStream_t>(s); }

bool invalid(const char* what) {
  record(cudaErrorInvalidValue, what);
  return false;
}

bool valid_elem(DType e) { return e == DType::kF32 || e == DType::kF16; }

bool aligned(const void* p, int64_t bytes) { return reinterpret_cast<uintptr_t>(p) % uintptr_t(bytes) == 0; }

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// ---- element access -------------------------------------------------------------------------------

// N consecutive elements, loaded / stored with one vector instruction (the pointer must be aligned to the
// whole vector, which the launchers check before choosing N > 1).
template <typename T, int N>
struct alignas(sizeof(T) * N) Vec {
  T v[N];
};

template <typename T, int N>
__device__ __forceinline__ Vec<T, N> load_vec(const T* p) {
  return *reinterpret_cast<const Vec<T, N>*>(p);
}

template <typename T, int N>
__device__ __forceinline__ void store_vec(T* p, const Vec<T, N>& v) {
  *reinterpret_cast<Vec<T, N>*>(p) = v;
}

__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(__half v) { return __half2float(v); }

template <typename T>
__device__ __forceinline__ T from_float(float v);
template <>
__device__ __forceinline__ float from_float<float>(float v) {
  return v;
}
template <>
__device__ __forceinline__ __half from_float<__half>(float v) {
  return __float2half_rn(v);
}

// The conversions of kernels/convert.h bit for bit: round to nearest even (the hardware conversion), and
// NaNs keep their top payload bits with the quiet bit set (the hardware would return a canonical NaN).
__device__ __forceinline__ __half f32_to_f16_exact(float f) {
  const uint32_t u = __float_as_uint(f);
  if ((u & 0x7fffffffu) > 0x7f800000u)
    return __ushort_as_half(static_cast<unsigned short>(((u >> 16) & 0x8000u) | 0x7e00u | ((u >> 13) & 0x3ffu)));
  return __float2half_rn(f);
}

__device__ __forceinline__ float f16_to_f32_exact(__half h) {
  const uint32_t b = __half_as_ushort(h);
  if ((b & 0x7c00u) == 0x7c00u && (b & 0x3ffu) != 0)
    return __uint_as_float(((b & 0x8000u) << 16) | 0x7fc00000u | ((b & 0x3ffu) << 13));
  return __half2float(h);
}

__device__ __forceinline__ __half convert_one(float v, __half*) { return f32_to_f16_exact(v); }
__device__ __forceinline__ float convert_one(__half v, float*) { return f16_to_f32_exact(v); }

// ---- activations (kernels/activation.h, in fp32; +-inf handled like the reference) -----------------

template <Activation A>
__device__ __forceinline__ float activate(float x) {
  if constexpr (A == Activation::kIdentity) {
    return x;
  } else if constexpr (A == Activation::kRelu) {
    return x < 0.f ? 0.f : x;
  } else if constexpr (A == Activation::kTanh) {
    return tanhf(x);
  } else {
    if (fabsf(x) == INFINITY) return x > 0.f ? x : -0.f;
    if constexpr (A == Activation::kGeluErf) {
      return 0.5f * x * erfcf(-x * 0.70710678118654752f);  // x * Phi(x), no cancellation for x << 0
    } else if constexpr (A == Activation::kGeluTanh) {
      const float u = 0.7978845608028654f * (x + 0.044715f * x * x * x);
      return x / (1.f + expf(-2.f * u));  // 0.5x(1 + tanh u) == x * sigmoid(2u)
    } else {
      static_assert(A == Activation::kGeluQuick, "unhandled activation");
      return x / (1.f + expf(-1.702f * x));
    }
  }
}

// Calls f(std::integral_constant<Activation, act>) so that kernels get the activation as a template argument.
template <typename F>
bool with_activation(Activation act, F&& f) {
  using A = Activation;
  switch (act) {
    case A::kIdentity: return f(std::integral_constant<A, A::kIdentity>{});
    case A::kGeluErf: return f(std::integral_constant<A, A::kGeluErf>{});
    case A::kGeluTanh: return f(std::integral_constant<A, A::kGeluTanh>{});
    case A::kGeluQuick: return f(std::integral_constant<A, A::kGeluQuick>{});
    case A::kRelu: return f(std::integral_constant<A, A::kRelu>{});
    case A::kTanh: return f(std::integral_constant<A, A::kTanh>{});
  }
  return invalid("unknown activation");
}

// ---- block reductions (blockDim.x a multiple of 32, at most 1024; every thread gets the result) -----

__device__ float block_sum(float v, float* scratch) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  __syncthreads();  // scratch may still be read from the previous reduction
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  float total = 0.f;
  for (int w = 0; w < int(blockDim.x / 32); ++w) total += scratch[w];
  return total;
}

__device__ float block_max(float v, float* scratch) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  float m = scratch[0];
  for (int w = 1; w < int(blockDim.x / 32); ++w) m = fmaxf(m, scratch[w]);
  return m;
}

// ---- launch shapes ---------------------------------------------------------------------------------

int round_up_warp(int64_t n) { return static_cast<int>(std::min<int64_t>(ceil_div(std::max<int64_t>(n, 1), 32) * 32, 1024)); }

// Threads of a one-block-per-row kernel for a row of `groups` vectors.
int row_threads(int64_t groups) { return std::min(round_up_warp(groups), kRowMaxThreads); }

struct Shape2D {
  dim3 grid, block;
};

// x covers the `groups` column vectors of a row (balanced over the blocks), y the rows; both loop.
Shape2D shape_2d(int64_t rows, int64_t groups, int64_t max_blocks_x = kMaxGridX, int64_t max_blocks_y = kMaxGridY) {
  const int64_t bx = std::min(ceil_div(groups, kThreads), max_blocks_x);
  const int threads = std::min(round_up_warp(ceil_div(groups, bx)), kThreads);
  const int64_t by = std::min(rows, max_blocks_y);
  return {dim3(static_cast<unsigned>(bx), static_cast<unsigned>(by)), dim3(static_cast<unsigned>(threads))};
}

// ---- convert ---------------------------------------------------------------------------------------

template <typename From, typename To, int N>
__global__ void convert_kernel(const From* x, To* y, int64_t n) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  const int64_t tid = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t groups = n / N;
  for (int64_t g = tid; g < groups; g += stride) {
    const Vec<From, N> a = load_vec<From, N>(x + g * N);
    Vec<To, N> b;
#pragma unroll
    for (int i = 0; i < N; ++i) b.v[i] = convert_one(a.v[i], static_cast<To*>(nullptr));
    store_vec<To, N>(y + g * N, b);
  }
  for (int64_t i = groups * N + tid; i < n; i += stride) y[i] = convert_one(x[i], static_cast<To*>(nullptr));
}

template <typename From, typename To>
bool launch_convert(const void* xv, void* yv, int64_t n, cudaStream_t s) {
  constexpr int kN = 4;
  const auto* x = static_cast<const From*>(xv);
  auto* y = static_cast<To*>(yv);
  const bool vec = aligned(x, kN * sizeof(From)) && aligned(y, kN * sizeof(To));
  const int64_t units = vec ? std::max<int64_t>(n / kN, 1) : n;
  const auto blocks = static_cast<unsigned>(std::min<int64_t>(ceil_div(units, kThreads), 8192));
  if (vec)
    convert_kernel<From, To, kN><<<blocks, kThreads, 0, s>>>(x, y, n);
  else
    convert_kernel<From, To, 1><<<blocks, kThreads, 0, s>>>(x, y, n);
  return check_launch("cuda::convert");
}

// ---- LayerNorm and embedding -----------------------------------------------------------------------

// The values of a row, N columns at a time: x (+ residual).
template <typename T, int N>
struct ResidualRow {
  const T* x;
  const T* residual;
  __device__ void get(int64_t c, float (&v)[N]) const {
    const Vec<T, N> a = load_vec<T, N>(x + c);
#pragma unroll
    for (int i = 0; i < N; ++i) v[i] = to_float(a.v[i]);
    if (residual) {
      const Vec<T, N> b = load_vec<T, N>(residual + c);
#pragma unroll
      for (int i = 0; i < N; ++i) v[i] += to_float(b.v[i]);
    }
  }
};

// The values of an embedding row: word (+ position) (+ token type), summed in fp32.
template <typename T, int N>
struct EmbeddingRow {
  const T* word;
  const T* position;
  const T* type;
  __device__ void get(int64_t c, float (&v)[N]) const {
    const Vec<T, N> a = load_vec<T, N>(word + c);
#pragma unroll
    for (int i = 0; i < N; ++i) v[i] = to_float(a.v[i]);
    if (position) {
      const Vec<T, N> b = load_vec<T, N>(position + c);
#pragma unroll
      for (int i = 0; i < N; ++i) v[i] += to_float(b.v[i]);
    }
    if (type) {
      const Vec<T, N> b = load_vec<T, N>(type + c);
#pragma unroll
      for (int i = 0; i < N; ++i) v[i] += to_float(b.v[i]);
    }
  }
};

// Group g of the row: from the shared-memory cache (laid out [N][groups], so that a warp's accesses are
// conflict-free) when there is one, else recomputed from the source.
template <int N, typename Row>
__device__ __forceinline__ void row_values(const Row& row, const float* cache, int64_t g, int64_t groups,
                                           float (&v)[N]) {
  if (cache) {
#pragma unroll
    for (int i = 0; i < N; ++i) v[i] = cache[i * groups + g];
  } else {
    row.get(g * N, v);
  }
}

// y = LayerNorm(row) over cols (a multiple of N), or y = row when gamma is null. The block owns the row;
// each thread reads and writes only its own groups, and every read of the source happens before the
// reduction that precedes the first write, so y may alias the source. Two passes (mean, then the centred
// variance) in fp32 like the CPU.
template <typename T, int N, typename Row>
__device__ void normalize_row(const Row& row, const T* gamma, const T* beta, T* y, int64_t cols, float eps,
                              float* cache, float* scratch) {
  const int64_t groups = cols / N;
  if (!gamma) {
    for (int64_t g = threadIdx.x; g < groups; g += blockDim.x) {
      float v[N];
      row.get(g * N, v);
      Vec<T, N> o;
#pragma unroll
      for (int i = 0; i < N; ++i) o.v[i] = from_float<T>(v[i]);
      store_vec<T, N>(y + g * N, o);
    }
    return;
  }
  float sum = 0.f;
  for (int64_t g = threadIdx.x; g < groups; g += blockDim.x) {
    float v[N];
    row.get(g * N, v);
#pragma unroll
    for (int i = 0; i < N; ++i) {
      sum += v[i];
      if (cache) cache[i * groups + g] = v[i];
    }
  }
  const float mean = block_sum(sum, scratch) / float(cols);
  float sq = 0.f;
  for (int64_t g = threadIdx.x; g < groups; g += blockDim.x) {
    float v[N];
    row_values<N>(row, cache, g, groups, v);
#pragma unroll
    for (int i = 0; i < N; ++i) {
      const float d = v[i] - mean;
      sq += d * d;
    }
  }
  const float rstd = rsqrtf(block_sum(sq, scratch) / float(cols) + eps);
  for (int64_t g = threadIdx.x; g < groups; g += blockDim.x) {
    float v[N];
    row_values<N>(row, cache, g, groups, v);
    const Vec<T, N> gm = load_vec<T, N>(gamma + g * N), bt = load_vec<T, N>(beta + g * N);
    Vec<T, N> o;
#pragma unroll
    for (int i = 0; i < N; ++i) o.v[i] = from_float<T>((v[i] - mean) * rstd * to_float(gm.v[i]) + to_float(bt.v[i]));
    store_vec<T, N>(y + g * N, o);
  }
}

template <typename T, int N>
__global__ void layernorm_kernel(LayerNormDev a, bool cached) {
  extern __shared__ float row_cache[];
  __shared__ float scratch[32];
  const T* x = static_cast<const T*>(a.x);
  const T* residual = static_cast<const T*>(a.residual);
  const T* gamma = static_cast<const T*>(a.gamma);
  const T* beta = static_cast<const T*>(a.beta);
  T* y = static_cast<T*>(a.y);
  for (int64_t r = blockIdx.x; r < a.rows; r += gridDim.x) {
    const int64_t off = r * a.cols;
    const ResidualRow<T, N> row{x + off, residual ? residual + off : nullptr};
    normalize_row<T, N>(row, gamma, beta, y + off, a.cols, a.eps, cached ? row_cache : nullptr, scratch);
  }
}

template <typename T>
bool launch_layernorm(const LayerNormDev& a, cudaStream_t s) {
  constexpr int kN = 16 / sizeof(T);
  const bool vec = a.cols % kN == 0 && aligned(a.x, 16) && aligned(a.residual, 16) && aligned(a.gamma, 16) &&
                   aligned(a.beta, 16) && aligned(a.y, 16);
  const bool cached = a.cols * int64_t(sizeof(float)) <= kRowCacheBytes;
  const size_t smem = cached ? size_t(a.cols) * sizeof(float) : 0;
  const int threads = row_threads(vec ? a.cols / kN : a.cols);
  const auto blocks = static_cast<unsigned>(std::min(a.rows, kMaxRowBlocks));
  if (vec)
    layernorm_kernel<T, kN><<<blocks, threads, smem, s>>>(a, cached);
  else
    layernorm_kernel<T, 1><<<blocks, threads, smem, s>>>(a, cached);
  return check_launch("cuda::layernorm");
}

template <typename T, int N>
__global__ void embed_kernel(EmbedDev a, bool cached) {
  extern __shared__ float row_cache[];
  __shared__ float scratch[32];
  const T* words = static_cast<const T*>(a.word_table);
  const T* positions = static_cast<const T*>(a.position_table);
  const T* types = static_cast<const T*>(a.type_table);
  T* out = static_cast<T*>(a.out);
  const int64_t w = a.width;
  for (int64_t t = blockIdx.x; t < a.tokens; t += gridDim.x) {
    EmbeddingRow<T, N> row;
    row.word = words + int64_t(a.input_ids[t]) * w;
    row.position = (a.positions && positions) ? positions + int64_t(a.positions[t]) * w : nullptr;
    row.type = types ? types + int64_t(a.token_types ? a.token_types[t] : 0) * w : nullptr;
    normalize_row<T, N>(row, static_cast<const T*>(a.gamma), static_cast<const T*>(a.beta), out + t * w, w, a.eps,
                        cached ? row_cache : nullptr, scratch);
  }
}

template <typename T>
bool launch_embed(const EmbedDev& a, cudaStream_t s) {
  constexpr int kN = 16 / sizeof(T);
  const bool vec = a.width % kN == 0 && aligned(a.word_table, 16) && aligned(a.position_table, 16) &&
                   aligned(a.type_table, 16) && aligned(a.gamma, 16) && aligned(a.beta, 16) && aligned(a.out, 16);
  const bool cached = a.gamma != nullptr && a.width * int64_t(sizeof(float)) <= kRowCacheBytes;
  const size_t smem = cached ? size_t(a.width) * sizeof(float) : 0;
  const int threads = row_threads(vec ? a.width / kN : a.width);
  const auto blocks = static_cast<unsigned>(std::min(a.tokens, kMaxRowBlocks));
  if (vec)
    embed_kernel<T, kN><<<blocks, threads, smem, s>>>(a, cached);
  else
    embed_kernel<T, 1><<<blocks, threads, smem, s>>>(a, cached);
  return check_launch("cuda::embed");
}

// ---- bias + activation -------------------------------------------------------------------------------

template <typename T, int N, Activation A>
__global__ void bias_activation_kernel(T* y, const T* bias, int64_t rows, int64_t cols, int64_t ld) {
  const int64_t groups = cols / N;
  const int64_t g0 = int64_t(blockIdx.x) * blockDim.x + threadIdx.x, gs = int64_t(gridDim.x) * blockDim.x;
  for (int64_t r = blockIdx.y; r < rows; r += gridDim.y) {
    T* row = y + r * ld;
    for (int64_t g = g0; g < groups; g += gs) {
      Vec<T, N> v = load_vec<T, N>(row + g * N);
      if (bias) {
        const Vec<T, N> b = load_vec<T, N>(bias + g * N);
#pragma unroll
        for (int i = 0; i < N; ++i) v.v[i] = from_float<T>(activate<A>(to_float(v.v[i]) + to_float(b.v[i])));
      } else {
#pragma unroll
        for (int i = 0; i < N; ++i) v.v[i] = from_float<T>(activate<A>(to_float(v.v[i])));
      }
      store_vec<T, N>(row + g * N, v);
    }
  }
}

template <typename T>
bool launch_bias_activation(void* yv, const void* biasv, int64_t rows, int64_t cols, int64_t ld, Activation act,
                            cudaStream_t s) {
  constexpr int kN = 16 / sizeof(T);
  auto* y = static_cast<T*>(yv);
  const auto* bias = static_cast<const T*>(biasv);
  const bool vec = cols % kN == 0 && ld % kN == 0 && aligned(y, 16) && aligned(bias, 16);
  const Shape2D sh = shape_2d(rows, vec ? cols / kN : cols);
  return with_activation(act, [&](auto a) {
    if (vec)
      bias_activation_kernel<T, kN, decltype(a)::value><<<sh.grid, sh.block, 0, s>>>(y, bias, rows, cols, ld);
    else
      bias_activation_kernel<T, 1, decltype(a)::value><<<sh.grid, sh.block, 0, s>>>(y, bias, rows, cols, ld);
    return check_launch("cuda::bias_activation");
  });
}

// ---- gather / scatter rows (a byte copy in words of W) -------------------------------------------------

template <typename W>
__global__ void move_rows_kernel(const char* src, int64_t src_ld_bytes, char* dst, int64_t dst_ld_bytes,
                                 const int32_t* index, int64_t rows, int64_t words, bool scatter) {
  const int64_t w0 = int64_t(blockIdx.x) * blockDim.x + threadIdx.x, ws = int64_t(gridDim.x) * blockDim.x;
  for (int64_t r = blockIdx.y; r < rows; r += gridDim.y) {
    const int64_t named = index[r];
    const auto* from = reinterpret_cast<const W*>(src + (scatter ? r : named) * src_ld_bytes);
    auto* to = reinterpret_cast<W*>(dst + (scatter ? named : r) * dst_ld_bytes);
    for (int64_t w = w0; w < words; w += ws) to[w] = from[w];
  }
}

template <typename W>
bool launch_move_rows(const void* src, int64_t src_ld_bytes, void* dst, int64_t dst_ld_bytes, const int32_t* index,
                      int64_t rows, int64_t row_bytes, bool scatter, cudaStream_t s) {
  const int64_t words = row_bytes / int64_t(sizeof(W));
  const Shape2D sh = shape_2d(rows, words);
  move_rows_kernel<W><<<sh.grid, sh.block, 0, s>>>(static_cast<const char*>(src), src_ld_bytes,
                                                   static_cast<char*>(dst), dst_ld_bytes, index, rows, words, scatter);
  return check_launch(scatter ? "cuda::scatter_rows" : "cuda::gather_rows");
}

bool move_rows(const void* src, int64_t src_ld, void* dst, int64_t dst_ld, const int32_t* index, int64_t rows,
               int64_t width, DType dtype, bool scatter, void* stream) {
  const char* name = scatter ? "cuda::scatter_rows: bad arguments" : "cuda::gather_rows: bad arguments";
  if (!valid_elem(dtype) || rows < 0 || width < 0 || src_ld < width || dst_ld < width) return invalid(name);
  if (rows == 0 || width == 0) return true;
  if (!src || !dst || !index) return invalid(name);
  const int64_t e = int64_t(dtype_size(dtype));
  const int64_t row_bytes = width * e, src_ld_bytes = src_ld * e, dst_ld_bytes = dst_ld * e;
  // The widest word that divides the row and both strides and to which both bases are aligned.
  auto fits = [&](int64_t w) {
    return row_bytes % w == 0 && src_ld_bytes % w == 0 && dst_ld_bytes % w == 0 && aligned(src, w) && aligned(dst, w);
  };
  const cudaStream_t s = as_stream(stream);
  if (fits(16)) return launch_move_rows<uint4>(src, src_ld_bytes, dst, dst_ld_bytes, index, rows, row_bytes, scatter, s);
  if (fits(8)) return launch_move_rows<uint2>(src, src_ld_bytes, dst, dst_ld_bytes, index, rows, row_bytes, scatter, s);
  if (fits(4))
    return launch_move_rows<uint32_t>(src, src_ld_bytes, dst, dst_ld_bytes, index, rows, row_bytes, scatter, s);
  return launch_move_rows<uint16_t>(src, src_ld_bytes, dst, dst_ld_bytes, index, rows, row_bytes, scatter, s);
}

// ---- int8 ------------------------------------------------------------------------------------------------

template <typename T, int N>
__global__ void absmax_kernel(const T* x, int64_t rows, int64_t cols, int64_t ld, float* running) {
  __shared__ float scratch[32];
  const int64_t groups = cols / N;
  const int64_t g0 = int64_t(blockIdx.x) * blockDim.x + threadIdx.x, gs = int64_t(gridDim.x) * blockDim.x;
  float m = 0.f;
  for (int64_t r = blockIdx.y; r < rows; r += gridDim.y)
    for (int64_t g = g0; g < groups; g += gs) {
      const Vec<T, N> v = load_vec<T, N>(x + r * ld + g * N);
#pragma unroll
      for (int i = 0; i < N; ++i) m = fmaxf(m, fabsf(to_float(v.v[i])));  // fmaxf drops NaNs
    }
  m = block_max(m, scratch);
  // Non-negative floats order like their bit patterns as signed ints (a negative start value loses too).
  if (threadIdx.x == 0) atomicMax(reinterpret_cast<int*>(running), __float_as_int(m));
}

template <typename T>
bool launch_absmax(const void* xv, int64_t rows, int64_t cols, int64_t ld, float* running, cudaStream_t s) {
  constexpr int kN = 16 / sizeof(T);
  const auto* x = static_cast<const T*>(xv);
  const bool vec = cols % kN == 0 && ld % kN == 0 && aligned(x, 16);
  // Few blocks (each ends in one atomic on the same word): at most 32 across a row, 512 in all.
  const int64_t groups = vec ? cols / kN : cols;
  const int64_t bx = std::min<int64_t>(ceil_div(groups, kThreads), 32);
  const Shape2D sh = shape_2d(rows, groups, bx, std::max<int64_t>(1, 512 / bx));
  if (vec)
    absmax_kernel<T, kN><<<sh.grid, sh.block, 0, s>>>(x, rows, cols, ld, running);
  else
    absmax_kernel<T, 1><<<sh.grid, sh.block, 0, s>>>(x, rows, cols, ld, running);
  return check_launch("cuda::absmax_update");
}

// round_half_even(x / scale) clamped to [-127, 127]; the division is IEEE (like the CPU reference),
// __float2int_rn rounds half to even, saturates at +-2^31 and gives 0 for NaN.
__device__ __forceinline__ int8_t quantize_one(float x, float scale) {
  const int q = __float2int_rn(__fdiv_rn(x, scale));
  return static_cast<int8_t>(max(-127, min(127, q)));
}

template <typename T, int N>
__global__ void quantize_kernel(const T* x, int64_t rows, int64_t cols, int64_t ldx, const float* scale_ptr,
                                int8_t* q) {
  float scale = *scale_ptr;
  if (!(scale > 0.f)) scale = 1.f;
  const int64_t groups = cols / N;
  const int64_t g0 = int64_t(blockIdx.x) * blockDim.x + threadIdx.x, gs = int64_t(gridDim.x) * blockDim.x;
  for (int64_t r = blockIdx.y; r < rows; r += gridDim.y)
    for (int64_t g = g0; g < groups; g += gs) {
      const Vec<T, N> v = load_vec<T, N>(x + r * ldx + g * N);
      Vec<int8_t, N> o;
#pragma unroll
      for (int i = 0; i < N; ++i) o.v[i] = quantize_one(to_float(v.v[i]), scale);
      store_vec<int8_t, N>(q + r * cols + g * N, o);
    }
}

template <typename T>
bool launch_quantize(const void* xv, int64_t rows, int64_t cols, int64_t ldx, const float* scale, int8_t* q,
                     cudaStream_t s) {
  constexpr int kN = 16 / sizeof(T);
  const auto* x = static_cast<const T*>(xv);
  const bool vec = cols % kN == 0 && ldx % kN == 0 && aligned(x, 16) && aligned(q, kN);
  const Shape2D sh = shape_2d(rows, vec ? cols / kN : cols);
  if (vec)
    quantize_kernel<T, kN><<<sh.grid, sh.block, 0, s>>>(x, rows, cols, ldx, scale, q);
  else
    quantize_kernel<T, 1><<<sh.grid, sh.block, 0, s>>>(x, rows, cols, ldx, scale, q);
  return check_launch("cuda::quantize_i8");
}

template <typename T, int N, Activation A>
__global__ void dequantize_kernel(const int32_t* acc, int64_t rows, int64_t cols, const float* x_scale_ptr,
                                  const float* w_scales, const float* bias, T* y, int64_t ldy) {
  const float x_scale = *x_scale_ptr;
  const int64_t groups = cols / N;
  const int64_t g0 = int64_t(blockIdx.x) * blockDim.x + threadIdx.x, gs = int64_t(gridDim.x) * blockDim.x;
  for (int64_t r = blockIdx.y; r < rows; r += gridDim.y)
    for (int64_t g = g0; g < groups; g += gs) {
      const Vec<int32_t, N> a = load_vec<int32_t, N>(acc + r * cols + g * N);
      const Vec<float, N> w = load_vec<float, N>(w_scales + g * N);
      float v[N];
#pragma unroll
      for (int i = 0; i < N; ++i) v[i] = __fmul_rn(__fmul_rn(__int2float_rn(a.v[i]), x_scale), w.v[i]);
      if (bias) {
        const Vec<float, N> b = load_vec<float, N>(bias + g * N);
#pragma unroll
        for (int i = 0; i < N; ++i) v[i] = __fadd_rn(v[i], b.v[i]);
      }
      Vec<T, N> o;
#pragma unroll
      for (int i = 0; i < N; ++i) o.v[i] = from_float<T>(activate<A>(v[i]));
      store_vec<T, N>(y + r * ldy + g * N, o);
    }
}

template <typename T>
bool launch_dequantize(const int32_t* acc, int64_t rows, int64_t cols, const float* x_scale, const float* w_scales,
                       const float* bias, Activation act, void* yv, int64_t ldy, cudaStream_t s) {
  constexpr int kN = 4;
  auto* y = static_cast<T*>(yv);
  const bool vec = cols % kN == 0 && ldy % kN == 0 && aligned(acc, 16) && aligned(w_scales, 16) &&
                   aligned(bias, 16) && aligned(y, kN * sizeof(T));
  const Shape2D sh = shape_2d(rows, vec ? cols / kN : cols);
  return with_activation(act, [&](auto a) {
    if (vec)
      dequantize_kernel<T, kN, decltype(a)::value>
          <<<sh.grid, sh.block, 0, s>>>(acc, rows, cols, x_scale, w_scales, bias, y, ldy);
    else
      dequantize_kernel<T, 1, decltype(a)::value>
          <<<sh.grid, sh.block, 0, s>>>(acc, rows, cols, x_scale, w_scales, bias, y, ldy);
    return check_launch("cuda::dequantize_i32");
  });
}

}  // namespace

// ---- public launchers ------------------------------------------------------------------------------------

bool convert(const void* x, DType from, void* y, DType to, int64_t n, void* stream) {
  if (!valid_elem(from) || !valid_elem(to) || n < 0) return invalid("cuda::convert: bad element type or count");
  if (n == 0) return true;
  if (!x || !y) return invalid("cuda::convert: null pointer");
  const cudaStream_t s = as_stream(stream);
  if (from == to) {
    if (x == y) return true;
    return record(cudaMemcpyAsync(y, x, size_t(n) * dtype_size(from), cudaMemcpyDeviceToDevice, s),
                  "cuda::convert (copy)");
  }
  return from == DType::kF32 ? launch_convert<float, __half>(x, y, n, s) : launch_convert<__half, float>(x, y, n, s);
}

bool layernorm(const LayerNormDev& a, void* stream) {
  if (!valid_elem(a.dtype) || a.rows < 0 || a.cols < 0) return invalid("cuda::layernorm: bad element type or shape");
  if (a.rows == 0 || a.cols == 0) return true;
  if (!a.x || !a.gamma || !a.beta || !a.y) return invalid("cuda::layernorm: null x, gamma, beta or y");
  return a.dtype == DType::kF32 ? launch_layernorm<float>(a, as_stream(stream))
                               : launch_layernorm<__half>(a, as_stream(stream));
}

bool embed(const EmbedDev& a, void* stream) {
  if (!valid_elem(a.dtype) || a.tokens < 0 || a.width < 0) return invalid("cuda::embed: bad element type or shape");
  if (a.tokens == 0 || a.width == 0) return true;
  if (!a.input_ids || !a.word_table || !a.out) return invalid("cuda::embed: null input_ids, word_table or out");
  if (a.gamma && !a.beta) return invalid("cuda::embed: gamma without beta");
  return a.dtype == DType::kF32 ? launch_embed<float>(a, as_stream(stream)) : launch_embed<__half>(a, as_stream(stream));
}

bool bias_activation(void* y, const void* bias, int64_t rows, int64_t cols, int64_t ld, Activation act, DType dtype,
                     void* stream) {
  if (!valid_elem(dtype) || rows < 0 || cols < 0 || ld < cols)
    return invalid("cuda::bias_activation: bad element type, shape or stride");
  if (rows == 0 || cols == 0) return true;
  if (!y) return invalid("cuda::bias_activation: null y");
  return dtype == DType::kF32 ? launch_bias_activation<float>(y, bias, rows, cols, ld, act, as_stream(stream))
                             : launch_bias_activation<__half>(y, bias, rows, cols, ld, act, as_stream(stream));
}

bool gather_rows(const void* src, int64_t src_ld, void* dst, int64_t dst_ld, const int32_t* index, int64_t rows,
                 int64_t width, DType dtype, void* stream) {
  return move_rows(src, src_ld, dst, dst_ld, index, rows, width, dtype, /*scatter=*/false, stream);
}

bool scatter_rows(const void* src, int64_t src_ld, void* dst, int64_t dst_ld, const int32_t* index, int64_t rows,
                  int64_t width, DType dtype, void* stream) {
  return move_rows(src, src_ld, dst, dst_ld, index, rows, width, dtype, /*scatter=*/true, stream);
}

bool absmax_update(const void* x, int64_t rows, int64_t cols, int64_t ld, DType dtype, float* running_absmax,
                   void* stream) {
  if (!valid_elem(dtype) || rows < 0 || cols < 0 || ld < cols)
    return invalid("cuda::absmax_update: bad element type, shape or stride");
  if (rows == 0 || cols == 0) return true;
  if (!x || !running_absmax) return invalid("cuda::absmax_update: null x or running_absmax");
  return dtype == DType::kF32 ? launch_absmax<float>(x, rows, cols, ld, running_absmax, as_stream(stream))
                             : launch_absmax<__half>(x, rows, cols, ld, running_absmax, as_stream(stream));
}

bool quantize_i8(const void* x, int64_t rows, int64_t cols, int64_t ldx, DType dtype, const float* scale, int8_t* q,
                 void* stream) {
  if (!valid_elem(dtype) || rows < 0 || cols < 0 || ldx < cols)
    return invalid("cuda::quantize_i8: bad element type, shape or stride");
  if (rows == 0 || cols == 0) return true;
  if (!x || !scale || !q) return invalid("cuda::quantize_i8: null x, scale or q");
  return dtype == DType::kF32 ? launch_quantize<float>(x, rows, cols, ldx, scale, q, as_stream(stream))
                             : launch_quantize<__half>(x, rows, cols, ldx, scale, q, as_stream(stream));
}

bool dequantize_i32(const int32_t* acc, int64_t rows, int64_t cols, const float* x_scale, const float* w_scales,
                    const float* bias, Activation act, void* y, int64_t ldy, DType dtype, void* stream) {
  if (!valid_elem(dtype) || rows < 0 || cols < 0 || ldy < cols)
    return invalid("cuda::dequantize_i32: bad element type, shape or stride");
  if (rows == 0 || cols == 0) return true;
  if (!acc || !x_scale || !w_scales || !y) return invalid("cuda::dequantize_i32: null acc, x_scale, w_scales or y");
  const cudaStream_t s = as_stream(stream);
  return dtype == DType::kF32 ? launch_dequantize<float>(acc, rows, cols, x_scale, w_scales, bias, act, y, ldy, s)
                             : launch_dequantize<__half>(acc, rows, cols, x_scale, w_scales, bias, act, y, ldy, s);
}

}  // namespace bert::kernels::cuda
