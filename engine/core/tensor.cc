// Small helpers for the host Tensor type.
#include "engine/core/tensor.h"

#include <cstring>

namespace bert {

std::string shape_string(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

Tensor make_owned_tensor(DType dtype, std::vector<int64_t> shape) {
  Tensor t;
  t.dtype = dtype;
  t.shape = std::move(shape);
  size_t n = t.nbytes();
  std::shared_ptr<uint8_t[]> buf(new uint8_t[n > 0 ? n : 1]());
  t.data = buf.get();
  t.owner = std::shared_ptr<const void>(buf, buf.get());
  return t;
}

}  // namespace bert
