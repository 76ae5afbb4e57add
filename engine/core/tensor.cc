// Small helpers for the host Tensor type.
#include "engine/core/tensor.h"

#include <cstdint>
#include <cstring>
#include <stdexcept>

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
  // The byte size is checked before anything is allocated: a negative dimension or a product beyond
  // int64 (a config with hidden_size 2^62) throws, and the public API turns that into an error value
  // (engine/core/guard.h) instead of a 1-byte buffer written past its end.
  const int64_t elem = static_cast<int64_t>(dtype_size(dtype) ? dtype_size(dtype) : 1);
  int64_t bytes = elem;
  for (int64_t d : shape) {
    if (d < 0 || (d > 0 && bytes > INT64_MAX / d))
      throw std::length_error("tensor of shape " + shape_string(shape) + " is too large to allocate");
    bytes *= d;
  }
  Tensor t;
  t.dtype = dtype;
  t.shape = std::move(shape);
  size_t n = t.nbytes();
  std::shared_ptr<uint8_t[]> buf(new uint8_t[n > 0 ? n : 1]());
  t.data = buf.get();
  t.owner = std::shared_ptr<const void>(buf, buf.get());
  return t;
}

Status check_finite(const Tensor& t, const std::string& what) {
  const int64_t n = t.numel();
  int64_t bad = -1;
  bool nan = false, negative = false;
  auto scan = [&](auto bits_of, auto exp_mask, auto mant_mask, auto sign_mask) {
    for (int64_t i = 0; i < n; ++i) {
      const auto b = bits_of(i);
      if ((b & exp_mask) == exp_mask) {
        bad = i, nan = (b & mant_mask) != 0, negative = (b & sign_mask) != 0;
        return;
      }
    }
  };
  const uint8_t* p = static_cast<const uint8_t*>(t.data);
  auto load16 = [p](int64_t i) { uint16_t v; std::memcpy(&v, p + 2 * i, 2); return v; };
  auto load32 = [p](int64_t i) { uint32_t v; std::memcpy(&v, p + 4 * i, 4); return v; };
  auto load64 = [p](int64_t i) { uint64_t v; std::memcpy(&v, p + 8 * i, 8); return v; };
  switch (t.dtype) {
    case DType::kF32: scan(load32, uint32_t{0x7f800000}, uint32_t{0x007fffff}, uint32_t{0x80000000}); break;
    case DType::kF16: scan(load16, uint16_t{0x7c00}, uint16_t{0x03ff}, uint16_t{0x8000}); break;
    case DType::kBF16: scan(load16, uint16_t{0x7f80}, uint16_t{0x007f}, uint16_t{0x8000}); break;
    case DType::kF64:
      scan(load64, uint64_t{0x7ff0000000000000}, uint64_t{0x000fffffffffffff}, uint64_t{0x8000000000000000});
      break;
    default: return Status();
  }
  if (bad < 0) return Status();
  return format_error(what + " holds " + (nan ? "NaN" : negative ? "-Inf" : "+Inf") + " at element " +
                      std::to_string(bad) + " (of " + std::to_string(n) + "): the weights are not finite");
}

}  // namespace bert
