// The engine's one host tensor: a row-major array with its dtype and shape, kept alive by an owner.
// Readers hand weights out as these, the tensors-file API reads and writes them, and the engine's
// core calls the same type Tensor (engine/core/tensor.h). Public header.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "bert/dtype.h"

namespace bert {

// A row-major host array: dtype, shape and nbytes() little-endian bytes at `data`, kept alive by
// `owner` (a file mapping or a buffer). A view of someone else's memory has no owner.
struct HostTensor {
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  const void* data = nullptr;
  std::shared_ptr<const void> owner;

  int64_t numel() const {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    return n;
  }
  size_t nbytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype); }
  template <typename T>
  const T* as() const { return static_cast<const T*>(data); }
};

}  // namespace bert
