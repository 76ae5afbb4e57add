// Shared by the CUDA tests: the skip-without-GPU guard and a device copy of a host vector.
#pragma once

#include <gtest/gtest.h>

#include <vector>

#include "kernels/cuda/cuda_kernels.h"

// Every CUDA test starts with this: no device (every machine the CUDA code was written on) -> skip.
#define BERT_REQUIRE_GPU()                                                                      \
  if (::bert::kernels::cuda::device_count() == 0)                                               \
  GTEST_SKIP() << "no CUDA device: this GPU test was not run"

namespace bert::test {

// A device copy of a host vector (or n zeroed elements), freed at scope exit.
template <typename T>
struct DeviceBuffer {
  T* p = nullptr;
  size_t n = 0;
  explicit DeviceBuffer(const std::vector<T>& host) : n(host.size()) {
    p = static_cast<T*>(kernels::cuda::device_alloc(n * sizeof(T) + 16));
    EXPECT_NE(p, nullptr) << kernels::cuda::cuda_last_error();
    if (n) {
      EXPECT_TRUE(kernels::cuda::copy_to_device(p, host.data(), n * sizeof(T)));
    }
  }
  explicit DeviceBuffer(size_t count) : DeviceBuffer(std::vector<T>(count)) {}
  ~DeviceBuffer() { kernels::cuda::device_free(p); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  std::vector<T> host() const {
    std::vector<T> h(n);
    if (n) {
      EXPECT_TRUE(kernels::cuda::copy_to_host(h.data(), p, n * sizeof(T))) << kernels::cuda::cuda_last_error();
    }
    return h;
  }
};

}  // namespace bert::test
