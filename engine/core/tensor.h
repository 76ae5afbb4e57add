// A host tensor as the readers hand it out: dtype, shape and bytes, kept alive by an owner
// (a memory-mapped file, or a buffer the reader filled). Readers never copy what they can map.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "bert/dtype.h"
#include "bert/status.h"
#include "bert/tensor.h"

namespace bert {

// The public host tensor (bert/tensor.h) under the name the engine's internals use.
using Tensor = HostTensor;

// "[2, 3, 4]"
std::string shape_string(const std::vector<int64_t>& shape);

// A tensor that owns a fresh buffer of the given dtype and shape (zero-filled).
Tensor make_owned_tensor(DType dtype, std::vector<int64_t> shape);
// OK when every element of a floating-point tensor (F32, F16, BF16, F64) is finite; otherwise an
// error naming `what`, the first bad index and its value (NaN / +Inf / -Inf). Other dtypes are OK.
Status check_finite(const Tensor& t, const std::string& what);
// Mutable pointer into a tensor made by make_owned_tensor.
inline void* mutable_data(Tensor& t) { return const_cast<void*>(t.data); }

}  // namespace bert

namespace bert {
// Tensors by name, as a checkpoint holds them.
using TensorMap = std::map<std::string, Tensor>;
}  // namespace bert
