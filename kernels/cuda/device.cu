// CUDA device plumbing: device count and name, memory, copies, and the launch check every kernel
// file uses (BERT_CUDA_SYNC=1 synchronizes after each launch). NEVER RUN ON A GPU YET.
#include <cuda_runtime.h>

#include <cstdlib>
#include <cstring>
#include <string>

#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/launch_check.h"

namespace bert::kernels::cuda {

namespace {
thread_local std::string g_last_error;
}

bool record(cudaError_t e, const char* what) {
  if (e == cudaSuccess) return true;
  g_last_error = std::string(what) + ": " + cudaGetErrorName(e) + " (" + cudaGetErrorString(e) + ")";
  return false;
}

bool check_launch(const char* kernel) {
  if (!record(cudaGetLastError(), kernel)) return false;
  static const bool sync = [] {
    const char* v = std::getenv("BERT_CUDA_SYNC");
    return v && std::strcmp(v, "0") != 0;
  }();
  return !sync || record(cudaDeviceSynchronize(), kernel);
}

int device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no device / no driver" error
    return 0;
  }
  return n;
}

std::string device_name() {
  cudaDeviceProp p;
  if (device_count() == 0 || cudaGetDeviceProperties(&p, 0) != cudaSuccess) return "";
  return p.name;
}

std::string cuda_last_error() { return g_last_error; }

void* device_alloc(size_t bytes) {
  void* p = nullptr;
  return record(cudaMalloc(&p, bytes), "cudaMalloc") ? p : nullptr;
}

void device_free(void* p) {
  if (p) cudaFree(p);
}

bool copy_to_device(void* dst, const void* src, size_t bytes) {
  return record(cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice), "cudaMemcpy H2D");
}

bool copy_to_host(void* dst, const void* src, size_t bytes) {
  return record(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToHost), "cudaMemcpy D2H");
}

bool synchronize() { return record(cudaDeviceSynchronize(), "cudaDeviceSynchronize"); }

}  // namespace bert::kernels::cuda
