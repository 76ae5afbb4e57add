// The CPU optimizer kernels compiled per instruction set (kernels/cpu/optimizer_portable.h): one table
// per ISA, and the one kernels/optimizer.h's functions run (the best this CPU allows, BERT_CPU_ISA
// respected). Internal to kernels/cpu and its tests.
#pragma once

#include <cstdint>

#include "kernels/isa.h"
#include "kernels/optimizer.h"

namespace bert::kernels {

struct OptimizerKernels {
  void (*adamw_step)(const AdamWStepArgs&);
  void (*lamb_update)(const LambUpdateArgs&);
  void (*lamb_apply)(float* param, const float* update, int64_t n, float step_size);
  double (*sum_squares)(const float* x, int64_t n);
  void (*scale)(float* x, int64_t n, float s);
  bool (*all_finite)(const float* x, int64_t n);
};

// The copy compiled for `isa`; the caller must not pick an ISA the CPU lacks.
const OptimizerKernels& optimizer_kernels(CpuIsa isa);

}  // namespace bert::kernels
