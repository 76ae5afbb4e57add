// Shared by the CUDA training kernels (train_kernels.cu, optimizer_kernels.cu, attention_train.cu):
// the launchers' workspace, deterministic warp / block sums and the dropout hash. Everything here
// has internal linkage (an anonymous namespace), so each .cu file gets its own copy.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <string>

#include "kernels/cuda/launch_check.h"
#include "kernels/cuda/train_kernels.h"

namespace bert::kernels::cuda {
namespace {

constexpr unsigned kFullMask = 0xffffffffu;
constexpr size_t kAlign = 256;

cudaStream_t as_stream(void* s) { return static_cast<cudaStream_t>(s); }
int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
size_t align_up(size_t bytes) { return (bytes + kAlign - 1) / kAlign * kAlign; }
bool invalid(const std::string& what) { return record(cudaErrorInvalidValue, what.c_str()); }

// The workspace of one launcher call: the caller's, checked, or a stream-ordered allocation freed
// (stream-ordered) when this object dies, after the launcher enqueued its kernels.
class Scratch {
 public:
  Scratch(const Workspace& ws, size_t need, cudaStream_t stream, const char* op) : stream_(stream) {
    if (need == 0) {
      ok_ = true;
      return;
    }
    if (ws.ptr) {
      if (ws.bytes < need) {
        invalid(std::string(op) + ": workspace of " + std::to_string(ws.bytes) + " bytes, " + std::to_string(need) +
                " needed");
        return;
      }
      if (reinterpret_cast<uintptr_t>(ws.ptr) % 16 != 0) {
        invalid(std::string(op) + ": workspace not 16-byte aligned");
        return;
      }
      base_ = static_cast<char*>(ws.ptr);
      ok_ = true;
      return;
    }
    void* p = nullptr;
    if (!record(cudaMallocAsync(&p, need, stream), (std::string(op) + ": cudaMallocAsync of the workspace").c_str()))
      return;
    base_ = static_cast<char*>(p);
    owned_ = true;
    ok_ = true;
  }
  ~Scratch() {
    if (owned_) cudaFreeAsync(base_, stream_);
  }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  bool ok() const { return ok_; }
  // The next `count` Ts, 256-byte aligned.
  template <class T>
  T* take(size_t count) {
    T* p = reinterpret_cast<T*>(base_ + offset_);
    offset_ += align_up(count * sizeof(T));
    return p;
  }

 private:
  cudaStream_t stream_;
  char* base_ = nullptr;
  size_t offset_ = 0;
  bool owned_ = false;
  bool ok_ = false;
};

// ---- reductions (butterflies are exact-commutative, so every lane gets the same bits) -----------

template <class T>
__device__ __forceinline__ T warp_sum(T v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(kFullMask, v, o);
  return v;
}

// Sum over the block, every thread gets it; `scratch` holds 32 Ts. Warp results are added in warp order.
template <class T>
__device__ T block_sum(T v, T* scratch) {
  v = warp_sum(v);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  __syncthreads();  // scratch may still be read by a previous call
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  T total = 0;
  for (int w = 0; w < static_cast<int>(blockDim.x / 32); ++w) total += scratch[w];
  return total;
}

// ---- dropout -----------------------------------------------------------------------------------

// kernels/ref/train_ref.cc's dropout_keep, bit for bit: SplitMix64's finaliser of
// seed ^ (golden * (index + 1)), the top 24 bits as a uniform in [0, 1), kept when >= p.
__device__ __forceinline__ uint64_t splitmix64(uint64_t z) {
  z += 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

__device__ __forceinline__ bool dropout_keep_device(uint64_t seed, uint64_t index, float p) {
  const uint64_t hash = splitmix64(seed ^ (0x9E3779B97F4A7C15ull * (index + 1)));
  const float uniform = static_cast<float>(static_cast<uint32_t>(hash >> 40)) * 0x1p-24f;  // exact
  return uniform >= p;
}

}  // namespace
}  // namespace bert::kernels::cuda
