// Plain types shared by the CUDA device's headers (no CUDA types, so engine code compiled by the host
// compiler can include them): the element type of device tensors. fp16 is stored as uint16_t bits.
#pragma once

#include <cstdint>

namespace bert::kernels::cuda {

enum class Elem { kF32, kF16 };

inline int64_t elem_size(Elem e) { return e == Elem::kF32 ? 4 : 2; }
inline const char* elem_name(Elem e) { return e == Elem::kF32 ? "fp32" : "fp16"; }

}  // namespace bert::kernels::cuda
