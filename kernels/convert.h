// fp16 / bf16 <-> fp32 conversion of weight buffers: every ISA variant.
#pragma once

#include <cstdint>

#include "bert/status.h"

namespace bert::kernels {

// One conversion call, for check(): to_f32 (f16 / bf16 -> f32: src 2 bytes, dst 4 bytes per element)
// or from f32 (src 4 bytes, dst 2 bytes). The registry's convert entries keep the raw signatures below.
struct ConvertArgs {
  const void* src = nullptr;
  void* dst = nullptr;
  int64_t n = 0;
  bool to_f32 = true;
};
// src and dst non-null when n > 0; n >= 0 and representable in bytes; src and dst disjoint (not in place).
Status check(const ConvertArgs& a);

// Round-to-nearest-even; inf stays inf; fp16 overflow -> inf; subnormals exact.
// NaNs: to_f32 sets the quiet bit for fp16 (like F16C), bf16 is a plain bit shift; from_f32 keeps the
// top payload bits and sets the quiet bit (like VCVTPS2PH), so a NaN never turns into an infinity.
// All variants are bit-exact with the refs.
void convert_f16_to_f32_ref(const uint16_t* src, float* dst, int64_t n);
void convert_bf16_to_f32_ref(const uint16_t* src, float* dst, int64_t n);
void convert_f32_to_f16_ref(const float* src, uint16_t* dst, int64_t n);
void convert_f32_to_bf16_ref(const float* src, uint16_t* dst, int64_t n);

void convert_f16_to_f32_avx2(const uint16_t* src, float* dst, int64_t n);
void convert_bf16_to_f32_avx2(const uint16_t* src, float* dst, int64_t n);
void convert_f32_to_f16_avx2(const float* src, uint16_t* dst, int64_t n);
void convert_f32_to_bf16_avx2(const float* src, uint16_t* dst, int64_t n);

void convert_f16_to_f32_avx512(const uint16_t* src, float* dst, int64_t n);
void convert_bf16_to_f32_avx512(const uint16_t* src, float* dst, int64_t n);
void convert_f32_to_f16_avx512(const float* src, uint16_t* dst, int64_t n);
void convert_f32_to_bf16_avx512(const float* src, uint16_t* dst, int64_t n);

}  // namespace bert::kernels
