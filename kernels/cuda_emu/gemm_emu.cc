// CPU emulation of the CUDA device's GEMMs (kernels/cuda/cuda_gemm.h) on host memory, through one CPU
// kernels::GemmPlanner (oneDNN) per CudaGemm. fp32 operands are rounded the way the CudaGemm's F32Compute
// says (TF32: 10 mantissa bits, fp16, bf16; on copies, never the caller's memory) before an fp32 GEMM; fp16
// tensors are converted to fp32, computed with bias and activation in fp32 and rounded once; int8 runs as
// exact fp32 GEMMs over K chunks small enough that every partial sum is an integer below 2^24, summed in
// int32, then dequantized like precision.h's dequantize_i32. Argument checks mirror gemm_cublaslt.cu, so
// what the GPU refuses fails here too.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "kernels/cpu/dispatch.h"
#include "kernels/cuda/cuda_gemm.h"
#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/precision.h"
#include "kernels/cuda_emu/emu_internal.h"
#include "kernels/gemm.h"

namespace bert::kernels::cuda {

namespace {

using emu::fail;

// Largest K chunk of an int8 GEMM run in fp32: |partial sums| <= 1020 * 128 * 128 < 2^24 stay exact integers.
constexpr int64_t kI8ChunkK = 1020;

template <typename T>
T* grow(std::vector<T>& v, size_t n) {
  if (v.size() < n) v.resize(n);
  return v.data();
}

// dst[i] = src[i] with the mantissa rounded to 10 bits (round to nearest even on the bits); inf / NaN unchanged.
void round_tf32(const float* src, float* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    uint32_t u;
    std::memcpy(&u, src + i, 4);
    if ((u & 0x7f800000u) != 0x7f800000u) u = (u + 0xfffu + ((u >> 13) & 1u)) & 0xffffe000u;
    std::memcpy(dst + i, &u, 4);
  }
}

// dst = src rounded as the F32Compute says (a plain copy for kExact). src and dst may be the same.
void round_operand(F32Compute mode, const float* src, float* dst, int64_t n) {
  constexpr int64_t kChunk = 2048;
  const CpuKernels& k = cpu_kernels();
  const int64_t chunks = (n + kChunk - 1) / kChunk;
  emu::parallel_chunks(chunks, n * 2, [&](int64_t b, int64_t e) {
    uint16_t half[kChunk];
    for (int64_t c = b; c < e; ++c) {
      const int64_t lo = c * kChunk, len = std::min(kChunk, n - lo);
      switch (mode) {
        case F32Compute::kExact:
          if (dst != src) std::memmove(dst + lo, src + lo, size_t(len) * 4);
          break;
        case F32Compute::kTF32: round_tf32(src + lo, dst + lo, len); break;
        case F32Compute::kF16:
          k.convert_f32_to_f16(src + lo, half, len);
          k.convert_f16_to_f32(half, dst + lo, len);
          break;
        case F32Compute::kBF16:
          k.convert_f32_to_bf16(src + lo, half, len);
          k.convert_bf16_to_f32(half, dst + lo, len);
          break;
      }
    }
  });
}

// dst [rows, cols] dense = src rows (row stride ld, element type e) as fp32, rounded as `mode` says.
void dense_f32(const void* src, int64_t ld, Elem e, int64_t rows, int64_t cols, F32Compute mode, float* dst) {
  emu::parallel_chunks(rows, rows * cols, [&](int64_t b, int64_t end) {
    for (int64_t r = b; r < end; ++r)
      emu::to_f32(static_cast<const char*>(src) + r * ld * elem_size(e), e, dst + r * cols, cols);
  });
  if (mode != F32Compute::kExact) round_operand(mode, dst, dst, rows * cols);
}

std::string linear_shape(int64_t M, int64_t N, int64_t K, int64_t ldx, int64_t ldy) {
  return " (M=" + std::to_string(M) + " N=" + std::to_string(N) + " K=" + std::to_string(K) +
         " ldx=" + std::to_string(ldx) + " ldy=" + std::to_string(ldy) + ")";
}

std::string batched_shape(const BatchedMatmulArgs& g) {
  std::string s = " (batch ";
  s += std::to_string(g.batch0) + "x" + std::to_string(g.batch1);
  s += " M=" + std::to_string(g.M) + " N=" + std::to_string(g.N) + " K=" + std::to_string(g.K) + ", strides";
  const std::pair<const char*, const int64_t*> ops[3] = {{" a {", g.a_strides}, {" b {", g.b_strides},
                                                         {" c {", g.c_strides}};
  for (const auto& [name, st] : ops) {
    s += name;
    for (int i = 0; i < 4; ++i) {
      s += std::to_string(st[i]);
      s += i < 3 ? ", " : "}";
    }
  }
  s += ")";
  return s;
}

// cuBLASLt's layout rule (gemm_cublaslt.cu's column_major / lt_operand): a [rows, cols] matrix with row stride
// s_row and column stride s_col is column-major with a unit row stride (any for one row) and a column stride of
// at least rows (any for one column); row-major is the same of its transpose.
bool column_major(int64_t rows, int64_t cols, int64_t s_row, int64_t s_col) {
  if (rows != 1 && s_row != 1) return false;
  return (cols == 1 ? rows : s_col) >= rows;
}
bool lt_layout(int64_t rows, int64_t cols, int64_t s_row, int64_t s_col) {
  return column_major(rows, cols, s_row, s_col) || column_major(cols, rows, s_col, s_row);
}

// The element offsets [lo, hi] a strided operand addresses (dimensions of extent 1 address nothing).
void span_of(const int64_t extents[4], const int64_t strides[4], int64_t* lo, int64_t* hi) {
  *lo = 0, *hi = 0;
  for (int d = 0; d < 4; ++d) {
    if (extents[d] <= 1) continue;
    const int64_t reach = (extents[d] - 1) * strides[d];
    if (reach < 0) *lo += reach;
    else *hi += reach;
  }
}

}  // namespace

struct CudaGemm::Impl {
  F32Compute f32 = F32Compute::kExact;
  GemmPlanner planner;
  // Scratch (grown, never shrunk): operand copies, an fp32 output, the int8 path's fp32 / int32 accumulators.
  std::vector<float> xs, ws, bs, ys, as, bms;
  std::vector<int32_t> acc;

  // A rounded copy of the span of `p` a batched operand addresses; returns the pointer to use in its place.
  const float* rounded_span(const float* p, const int64_t extents[4], const int64_t strides[4],
                            std::vector<float>& buf) {
    int64_t lo, hi;
    span_of(extents, strides, &lo, &hi);
    float* d = grow(buf, size_t(hi - lo + 1));
    round_operand(f32, p + lo, d, hi - lo + 1);
    return d - lo;
  }

  // planner.batched_matmul, or the reference (the spec) if oneDNN cannot plan the layout.
  void matmul(const BatchedMatmulArgs& g) {
    if (!planner.batched_matmul(g)) batched_matmul_f32_ref(g);
  }
};

const char* f32_compute_name(F32Compute c) {
  switch (c) {
    case F32Compute::kExact: return "fp32";
    case F32Compute::kTF32: return "tf32";
    case F32Compute::kF16: return "fp16";
    case F32Compute::kBF16: return "bf16";
  }
  return "?";
}

CudaGemm::CudaGemm(bool allow_tf32) : CudaGemm(allow_tf32 ? F32Compute::kTF32 : F32Compute::kExact) {}

CudaGemm::CudaGemm(F32Compute f32_compute) : impl_(new Impl) { impl_->f32 = f32_compute; }

CudaGemm::~CudaGemm() = default;

size_t CudaGemm::plan_count() const { return impl_->planner.plan_count(); }

bool CudaGemm::linear(const LinearArgs& l, void* stream) {
  if (l.groups != 1) return fail("CudaGemm: grouped linears are not implemented on CUDA yet");
  DevLinearArgs d;
  d.x = l.x, d.w = l.w, d.bias = l.bias, d.y = l.y;
  d.M = l.M, d.N = l.N, d.K = l.K, d.ldx = l.ldx, d.ldy = l.ldy;
  d.act = l.act;
  d.dtype = Elem::kF32;
  return linear(d, stream);
}

bool CudaGemm::linear(const DevLinearArgs& l, void*) {
  if (l.dtype != Elem::kF32 && l.dtype != Elem::kF16) return fail("CudaGemm::linear: dtype must be fp32 or fp16");
  const int64_t ldx = l.ldx ? l.ldx : l.K, ldy = l.ldy ? l.ldy : l.N;
  if (l.M < 0 || l.N < 0 || l.K < 1 || ldx < l.K || ldy < l.N)
    return fail("CudaGemm::linear: bad shape" + linear_shape(l.M, l.N, l.K, ldx, ldy));
  if (l.M == 0 || l.N == 0) return true;
  if (!l.x || !l.w || !l.y) return fail("CudaGemm::linear: x, w and y must be device pointers (null given)");
  Impl& s = *impl_;

  LinearArgs a;
  a.M = l.M, a.N = l.N, a.K = l.K, a.act = l.act;
  if (l.dtype == Elem::kF32 && s.f32 == F32Compute::kExact) {
    a.x = static_cast<const float*>(l.x), a.w = static_cast<const float*>(l.w);
    a.bias = static_cast<const float*>(l.bias), a.y = static_cast<float*>(l.y);
    a.ldx = ldx, a.ldy = ldy;
  } else {
    // fp16 operands compute exactly in fp32 (fp16 products are exact); fp32 ones are rounded as F32Compute says.
    const F32Compute mode = l.dtype == Elem::kF16 ? F32Compute::kExact : s.f32;
    float* x = grow(s.xs, size_t(l.M * l.K));
    float* w = grow(s.ws, size_t(l.N * l.K));
    dense_f32(l.x, ldx, l.dtype, l.M, l.K, mode, x);
    dense_f32(l.w, l.K, l.dtype, l.N, l.K, mode, w);
    a.x = x, a.w = w, a.ldx = l.K;
    if (l.dtype == Elem::kF32) {
      a.bias = static_cast<const float*>(l.bias), a.y = static_cast<float*>(l.y), a.ldy = ldy;
    } else {
      if (l.bias) {
        float* b = grow(s.bs, size_t(l.N));
        emu::to_f32(l.bias, Elem::kF16, b, l.N);
        a.bias = b;
      }
      a.y = grow(s.ys, size_t(l.M * l.N)), a.ldy = l.N;
    }
  }
  if (!s.planner.linear(a))
    return fail("CudaGemm::linear: oneDNN could not plan " + std::string(elem_name(l.dtype)) +
                linear_shape(l.M, l.N, l.K, ldx, ldy));
  if (l.dtype == Elem::kF16) {  // the fp32 result (bias and activation applied) rounded once to fp16
    const float* y = a.y;
    emu::parallel_chunks(l.M, l.M * l.N, [&](int64_t b, int64_t e) {
      for (int64_t r = b; r < e; ++r)
        emu::from_f32(y + r * l.N, static_cast<uint16_t*>(l.y) + r * ldy, Elem::kF16, l.N);
    });
  }
  return true;
}

bool CudaGemm::linear_i8(const Int8LinearArgs& l, void* stream) {
  if (l.y_dtype != Elem::kF32 && l.y_dtype != Elem::kF16)
    return fail("CudaGemm::linear_i8: y_dtype must be fp32 or fp16");
  const int64_t ldy = l.ldy ? l.ldy : l.N;
  const std::string shape = " (M=" + std::to_string(l.M) + " N=" + std::to_string(l.N) + " K=" + std::to_string(l.K) +
                            " ldy=" + std::to_string(ldy) + ")";
  if (l.M < 0 || l.N < 0 || l.K < 1 || ldy < l.N) return fail("CudaGemm::linear_i8: bad shape" + shape);
  if (l.M == 0 || l.N == 0) return true;
  if (l.K % 4 != 0) return fail("CudaGemm::linear_i8: K must be a multiple of 4 for int8 tensor cores" + shape);
  if (l.N % 4 != 0) return fail("CudaGemm::linear_i8: N must be a multiple of 4 for int8 tensor cores" + shape);
  if (!l.x || !l.w || !l.x_scale || !l.w_scales || !l.y)
    return fail("CudaGemm::linear_i8: x, w, x_scale, w_scales and y must be device pointers (null given)");
  if (reinterpret_cast<uintptr_t>(l.x) % 4 != 0 || reinterpret_cast<uintptr_t>(l.w) % 4 != 0)
    return fail("CudaGemm::linear_i8: x and w must be 4-byte aligned for int8 tensor cores" + shape);
  Impl& s = *impl_;
  const int64_t M = l.M, N = l.N, K = l.K;
  float* x = grow(s.xs, size_t(M * K));
  float* w = grow(s.ws, size_t(N * K));
  float* part = grow(s.ys, size_t(M * N));
  int32_t* acc = grow(s.acc, size_t(M * N));
  auto widen = [](const int8_t* src, float* dst, int64_t n) {
    emu::parallel_chunks(n, n, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) dst[i] = float(src[i]);
    });
  };
  widen(l.x, x, M * K);
  widen(l.w, w, N * K);

  // acc = sum over K chunks of x[:, chunk] w[:, chunk]^T, each chunk exact in fp32.
  const int64_t chunks = (K + kI8ChunkK - 1) / kI8ChunkK, chunk = (K + chunks - 1) / chunks;
  for (int64_t k0 = 0; k0 < K; k0 += chunk) {
    BatchedMatmulArgs g;
    g.a = x + k0, g.b = w + k0, g.c = part;
    g.M = M, g.N = N, g.K = std::min(chunk, K - k0);
    const int64_t as[4] = {0, 0, K, 1}, bs[4] = {0, 0, 1, K}, cs[4] = {0, 0, N, 1};
    std::copy(as, as + 4, g.a_strides), std::copy(bs, bs + 4, g.b_strides), std::copy(cs, cs + 4, g.c_strides);
    s.matmul(g);
    const bool first = k0 == 0;
    emu::parallel_chunks(M * N, M * N, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) acc[i] = (first ? 0 : acc[i]) + static_cast<int32_t>(part[i]);
    });
  }
  return dequantize_i32(acc, M, N, l.x_scale, l.w_scales, l.bias, l.act, l.y, ldy, l.y_dtype, stream);
}

bool CudaGemm::batched_matmul(const BatchedMatmulArgs& g, void*) {
  const std::string shape = batched_shape(g);
  if (g.batch0 < 0 || g.batch1 < 0 || g.M < 0 || g.N < 0 || g.K < 0)
    return fail("CudaGemm::batched_matmul: negative size" + shape);
  if (g.batch0 == 0 || g.batch1 == 0 || g.M == 0 || g.N == 0 || (g.K == 0 && g.accumulate)) return true;
  if (!g.c || (g.K > 0 && (!g.a || !g.b)))
    return fail("CudaGemm::batched_matmul: a, b and c must be device pointers (null given)" + shape);
  for (int d = 0; d < 2; ++d)
    if ((d == 0 ? g.batch0 : g.batch1) > 1 && (g.a_strides[d] < 0 || g.b_strides[d] < 0 || g.c_strides[d] < 0))
      return fail("CudaGemm::batched_matmul: batch strides must be >= 0" + shape);
  if (g.K > 0 && !lt_layout(g.M, g.K, g.a_strides[2], g.a_strides[3]))
    return fail("CudaGemm::batched_matmul: a (M x K) needs a unit row or column stride, the other stride at least "
                "K or M respectively" + shape);
  if (g.K > 0 && !lt_layout(g.K, g.N, g.b_strides[2], g.b_strides[3]))
    return fail("CudaGemm::batched_matmul: b (K x N) needs a unit row or column stride, the other stride at least "
                "N or K respectively" + shape);
  if (!lt_layout(g.M, g.N, g.c_strides[2], g.c_strides[3]))
    return fail("CudaGemm::batched_matmul: c (M x N) needs a unit row or column stride, the other stride at least "
                "N or M respectively" + shape);
  Impl& s = *impl_;

  if (g.K == 0) {  // C = the empty sum
    for (int64_t i = 0; i < g.batch0; ++i)
      for (int64_t j = 0; j < g.batch1; ++j)
        for (int64_t m = 0; m < g.M; ++m)
          for (int64_t n = 0; n < g.N; ++n)
            g.c[i * g.c_strides[0] + j * g.c_strides[1] + m * g.c_strides[2] + n * g.c_strides[3]] = 0.f;
    return true;
  }

  BatchedMatmulArgs r = g;
  if (s.f32 != F32Compute::kExact) {  // rounded copies of what A and B address
    const int64_t a_ext[4] = {g.batch0, g.batch1, g.M, g.K}, b_ext[4] = {g.batch0, g.batch1, g.K, g.N};
    r.a = s.rounded_span(g.a, a_ext, g.a_strides, s.as);
    r.b = s.rounded_span(g.b, b_ext, g.b_strides, s.bms);
  }
  // A batch dimension along which C does not move runs as sequential GEMMs (accumulate sums over it).
  const bool loop0 = g.batch0 > 1 && g.c_strides[0] == 0, loop1 = g.batch1 > 1 && g.c_strides[1] == 0;
  if (!loop0 && !loop1) {
    s.matmul(r);
    return true;
  }
  for (int64_t i = 0; i < (loop0 ? g.batch0 : 1); ++i)
    for (int64_t j = 0; j < (loop1 ? g.batch1 : 1); ++j) {
      BatchedMatmulArgs one = r;
      if (loop0) one.batch0 = 1, one.a += i * r.a_strides[0], one.b += i * r.b_strides[0];
      if (loop1) one.batch1 = 1, one.a += j * r.a_strides[1], one.b += j * r.b_strides[1];
      s.matmul(one);
    }
  return true;
}

}  // namespace bert::kernels::cuda
