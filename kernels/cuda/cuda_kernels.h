// The CUDA device's first kernels, callable from plain C++ (no CUDA types here): device memory,
// and the forward ops of kernels/*.h on device pointers, taking the CPU variants' argument structs.
// Every launcher returns false if the launch failed (cuda_last_error() says why); with
// BERT_CUDA_SYNC=1 in the environment each launch is followed by a synchronize and a check.
// Built only when CMake finds nvcc (BERT_HAVE_CUDA); NEVER RUN ON A GPU YET (no GPU was lent).
#pragma once

#include <cstddef>
#include <memory>
#include <string>

#include "kernels/activation.h"
#include "kernels/embed.h"
#include "kernels/gemm.h"
#include "kernels/layernorm.h"
#include "kernels/softmax_masked.h"

namespace bert::kernels::cuda {

// Number of usable CUDA devices (0 without a GPU or driver), and the first one's name.
int device_count();
std::string device_name();
std::string cuda_last_error();

// Device memory (nullptr on failure) and copies; `stream` is a cudaStream_t or nullptr (default).
void* device_alloc(size_t bytes);
void device_free(void* p);
bool copy_to_device(void* dst, const void* src, size_t bytes);
bool copy_to_host(void* dst, const void* src, size_t bytes);
bool synchronize();

// The forward ops; every pointer in the args is a device pointer.
bool layernorm_f32(const LayerNormArgs& a, void* stream = nullptr);
bool softmax_masked_f32(const SoftmaxMaskedArgs& a, void* stream = nullptr);
bool activation_f32(const ActivationArgs& a, void* stream = nullptr);
bool embed_f32(const EmbedArgs& a, void* stream = nullptr);

// Linear layers through cuBLASLt (kernels/cuda/gemm_cublaslt.cu): the CPU's LinearArgs on device
// pointers (groups must be 1 for now; `packed` is ignored). One plan per shape, cached. fp32
// compute; TF32 only with allow_tf32. One planner per stream / thread, like the CPU GemmPlanner.
class CudaGemm {
 public:
  explicit CudaGemm(bool allow_tf32 = false);
  ~CudaGemm();
  CudaGemm(const CudaGemm&) = delete;
  CudaGemm& operator=(const CudaGemm&) = delete;
  bool linear(const LinearArgs& a, void* stream = nullptr);
  size_t plan_count() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace bert::kernels::cuda
