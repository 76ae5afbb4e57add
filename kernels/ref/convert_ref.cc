// Scalar reference fp16/bf16 <-> fp32 conversions: the core's definitions (engine/core/half.h).
#include "engine/core/half.h"
#include "kernels/convert.h"

namespace bert::kernels {

void convert_f16_to_f32_ref(const uint16_t* src, float* dst, int64_t n) { f16_to_f32(src, dst, n); }
void convert_bf16_to_f32_ref(const uint16_t* src, float* dst, int64_t n) { bf16_to_f32(src, dst, n); }
void convert_f32_to_f16_ref(const float* src, uint16_t* dst, int64_t n) { f32_to_f16(src, dst, n); }
void convert_f32_to_bf16_ref(const float* src, uint16_t* dst, int64_t n) { f32_to_bf16(src, dst, n); }

}  // namespace bert::kernels
