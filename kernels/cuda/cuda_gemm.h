// Linear layers on the GPU through cuBLASLt (kernels/cuda/gemm_cublaslt.cu): fp32, fp16 (fp32
// accumulation, tensor cores) and int8 (int32 accumulation, IMMA tensor cores), and fp32 strided batched
// matmuls (the trainer's gradients and attention); no CUDA types here.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

#include "kernels/activation.h"
#include "kernels/cuda/device_types.h"
#include "kernels/gemm.h"

namespace bert::kernels::cuda {

// y[M, N] (row stride ldy) = act(x[M, K] (row stride ldx) W[N, K]^T + bias[N]), every pointer a device
// pointer of element type `dtype` (fp16 as its bits). ldx / ldy 0 = dense (K / N).
//  fp32: CUBLAS_COMPUTE_32F, or the tensor-core mode of the CudaGemm's GemmCompute (TF32 with allow_tf32).
//  fp16: fp16 x / w / bias / y, fp32 accumulation and scale, tensor cores.
// The bias is added in the GEMM's epilogue (at accumulator precision, before the output is rounded);
// tanh-GELU is fused there too; the other activations (erf GELU, quick GELU, ReLU, tanh) run as one
// bias_activation pass over [M, N] afterwards (kernels/cuda/precision.h). y must not overlap x or w.
struct DevLinearArgs {
  const void* x = nullptr;
  const void* w = nullptr;
  const void* bias = nullptr;  // [N] or nullptr
  void* y = nullptr;
  int64_t M = 0, N = 0, K = 0, ldx = 0, ldy = 0;
  Activation act = Activation::kIdentity;
  DType dtype = DType::kF32;
};

// int8 linear with int32 accumulation and per-output-channel weight scales:
//   y[m, n] = act(acc[m, n] * (*x_scale) * w_scales[n] + bias[n]),  acc = x_q[M, K] W_q[N, K]^T in int32
// x: dense int8 [M, K] (already quantized by the caller); w: int8 [N, K]; x_scale: ONE device float;
// w_scales: device float [N]; bias: device fp32 [N] or null; y: element type y_dtype, row stride ldy (0 = dense).
// cuBLASLt's IMMA kernels (plain column-major "TN" form) need K % 4 == 0, N % 4 == 0 (N is their m and the
// accumulator's leading dimension) and 4-byte aligned x and w; otherwise linear_i8 returns false with a message.
struct Int8LinearArgs {
  const int8_t* x = nullptr;
  const int8_t* w = nullptr;
  const float* x_scale = nullptr;
  const float* w_scales = nullptr;
  const float* bias = nullptr;
  void* y = nullptr;
  int64_t M = 0, N = 0, K = 0, ldy = 0;
  Activation act = Activation::kIdentity;
  DType y_dtype = DType::kF16;
};

// Linear layers through cuBLASLt. One plan per (element type, M, N, K, ldx, ldy, epilogue, pointer
// alignment class) (batched matmuls: per shape, transposes, strides and alignment class), made on first
// use and cached: the matmul descriptor, the layouts and the algorithm
// cuBLASLt's heuristic picks. Running a planned shape only sets pointers and launches (no allocation),
// so a caller may time linear() repeatedly on one shape. The int8 path's int32 accumulator [M, N] is
// owned here and allocated ONCE, by reserve_int8, for the largest shape the owner will run: it is never
// reallocated, so CUDA graphs captured earlier keep a valid pointer. One CudaGemm per stream / thread
// (plans and the accumulator are shared state), like the CPU GemmPlanner; make plans before any CUDA
// graph capture (planning may allocate).
// How GEMMs on fp32 operands compute: exactly (CUBLAS_COMPUTE_32F), or on tensor cores with the
// operands rounded to TF32, fp16 or bf16 inside cuBLASLt and fp32 accumulation (its 32F_FAST_* modes).
// Storage stays fp32 either way. fp16 operands and int8 are unaffected.

class CudaGemm {
 public:
  explicit CudaGemm(bool allow_tf32 = false);
  explicit CudaGemm(GemmCompute f32_compute);
  ~CudaGemm();
  CudaGemm(const CudaGemm&) = delete;
  CudaGemm& operator=(const CudaGemm&) = delete;

  // The CPU's LinearArgs on device fp32 pointers (groups must be 1; `packed` is ignored).
  bool linear(const LinearArgs& a, void* stream = nullptr);
  bool linear(const DevLinearArgs& a, void* stream = nullptr);
  // Needs reserve_int8 first; refuses (false, cuda_last_error() says why) an M x N above the reservation.
  bool linear_i8(const Int8LinearArgs& a, void* stream = nullptr);
  // Allocates the int8 path's int32 accumulator for every linear_i8 with M * N <= max_m * max_n (call it once,
  // at creation, with the largest rows and output width the owner will run). Later calls asking for no more
  // are no-ops; asking for more once reserved is refused (the buffer may be baked into captured graphs).
  bool reserve_int8(int64_t max_m, int64_t max_n);

  // The CPU's BatchedMatmulArgs (its reference batched_matmul_f32_ref is the spec) on device fp32 pointers:
  // C[i0, i1] (=, or += with accumulate) A[i0, i1] B[i0, i1] for i0 < batch0, i1 < batch1, every matrix
  // addressed through its four element strides (batch0, batch1, row, column). Runs as cuBLASLt strided
  // batched GEMMs (computing as the CudaGemm's GemmCompute says), one plan per layout.
  // Each of A, B and C needs a unit row or column stride (row-major or column-major view) whose other
  // stride is at least the matrix's width in that view (a dimension of extent 1 takes any stride); the
  // strides of batch dimensions of extent > 1 must be >= 0. C matrices of distinct batches must not
  // overlap, except through a batch stride of 0, which runs that batch dimension as sequential GEMMs on
  // the stream (so `accumulate` sums over it, as the reference does). Without accumulate C is not read
  // (it may hold NaN); K == 0 zeroes it. Zero M, N or batch is a no-op. Bad arguments return false with
  // a message (cuda_last_error()).
  bool batched_matmul(const BatchedMatmulArgs& a, void* stream = nullptr);

  size_t plan_count() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace bert::kernels::cuda
