// Run-time choice of the CPU kernel set (scalar refs, AVX2 or AVX-512), made once per process.
#pragma once

#include <cstdint>

#include "kernels/activation.h"
#include "kernels/convert.h"
#include "kernels/embed.h"
#include "kernels/layernorm.h"
#include "kernels/softmax_masked.h"

namespace bert::kernels {

enum class CpuIsa { kScalar, kAvx2, kAvx512 };

// Best ISA the CPU supports (avx512f+bw+dq+vl; avx2+fma+f16c). The environment variable
// BERT_CPU_ISA=scalar|avx2|avx512 can lower it, never raise it beyond what the CPU has.
CpuIsa detect_cpu_isa();
// Best ISA the CPU supports, ignoring BERT_CPU_ISA.
CpuIsa cpu_isa_supported();
const char* cpu_isa_name(CpuIsa isa);  // "scalar", "avx2", "avx512"

struct CpuKernels {
  CpuIsa isa;
  void (*layernorm)(const LayerNormArgs&);
  void (*softmax_masked)(const SoftmaxMaskedArgs&);
  void (*activation)(const ActivationArgs&);
  void (*embed)(const EmbedArgs&);
  void (*convert_f16_to_f32)(const uint16_t*, float*, int64_t);
  void (*convert_bf16_to_f32)(const uint16_t*, float*, int64_t);
  void (*convert_f32_to_f16)(const float*, uint16_t*, int64_t);
  void (*convert_f32_to_bf16)(const float*, uint16_t*, int64_t);
};

// The table for one ISA (the scalar table is the refs). The caller must not pick an ISA the CPU lacks.
const CpuKernels& cpu_kernels(CpuIsa isa);
// The table for detect_cpu_isa(), resolved once.
const CpuKernels& cpu_kernels();

}  // namespace bert::kernels
