// A host tensor as the readers hand it out: dtype, shape and bytes, kept alive by an owner
// (a memory-mapped file, or a buffer the reader filled). Readers never copy what they can map.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "bert/dtype.h"

namespace bert {

struct Tensor {
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  const void* data = nullptr;    // nbytes() bytes, little-endian, row-major, contiguous
  std::shared_ptr<const void> owner;  // keeps `data` valid

  int64_t numel() const {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    return n;
  }
  size_t nbytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype); }
  template <typename T>
  const T* as() const { return static_cast<const T*>(data); }
};

// "[2, 3, 4]"
std::string shape_string(const std::vector<int64_t>& shape);

// A tensor that owns a fresh buffer of the given dtype and shape (zero-filled).
Tensor make_owned_tensor(DType dtype, std::vector<int64_t> shape);
// Mutable pointer into a tensor made by make_owned_tensor.
inline void* mutable_data(Tensor& t) { return const_cast<void*>(t.data); }

}  // namespace bert

namespace bert {
// Tensors by name, as a checkpoint holds them.
using TensorMap = std::map<std::string, Tensor>;
}  // namespace bert
