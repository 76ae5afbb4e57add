// Run-time choice of the CPU kernel set (scalar refs, AVX2 or AVX-512), made once per process. The
// tables are built from the op registry (kernels/registry.h): one list of implementations.
#pragma once

#include <cstdint>

#include "kernels/activation.h"
#include "kernels/convert.h"
#include "kernels/embed.h"
#include "kernels/isa.h"
#include "kernels/layernorm.h"
#include "kernels/softmax_masked.h"

namespace bert::kernels {

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

// The table for one ISA: each op resolved through the registry as resolve_kernel(op, Device::kCpu, F32,
// isa), so the scalar table is the refs. The caller must not pick an ISA the CPU lacks.
const CpuKernels& cpu_kernels(CpuIsa isa);
// The table for detect_cpu_isa(), resolved once.
const CpuKernels& cpu_kernels();

}  // namespace bert::kernels
