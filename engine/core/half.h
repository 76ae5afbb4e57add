// fp16 and bf16 (as their uint16_t bits) to and from fp32, scalar: round to nearest even, NaN payloads
// kept and made quiet. The specification the SIMD conversions of kernels/convert.h are tested against.
#pragma once

#include <cstdint>

namespace bert {

void f16_to_f32(const uint16_t* src, float* dst, int64_t n);
void bf16_to_f32(const uint16_t* src, float* dst, int64_t n);
void f32_to_f16(const float* src, uint16_t* dst, int64_t n);
void f32_to_bf16(const float* src, uint16_t* dst, int64_t n);

}  // namespace bert
