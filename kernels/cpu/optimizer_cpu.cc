// The CPU optimizer kernels of kernels/optimizer.h: the baseline copy of optimizer_portable.h, and the
// public functions, which run the copy for the best ISA this CPU allows (chosen once).
#include "kernels/cpu/optimizer_portable.h"

namespace bert::kernels {

extern const OptimizerKernels kOptimizerAvx2, kOptimizerAvx512;  // optimizer_avx2.cc, optimizer_avx512.cc

namespace {

BERT_OPTIMIZER_KERNELS_TABLE(kOptimizerBaseline);

const OptimizerKernels& best() {
  static const OptimizerKernels& chosen = optimizer_kernels(detect_cpu_isa());
  return chosen;
}

}  // namespace

const OptimizerKernels& optimizer_kernels(CpuIsa isa) {
  switch (isa) {
    case CpuIsa::kAvx512: return kOptimizerAvx512;
    case CpuIsa::kAvx2: return kOptimizerAvx2;
    default: return kOptimizerBaseline;
  }
}

void adamw_step_f32(const AdamWStepArgs& a) { best().adamw_step(a); }
void lamb_update_f32(const LambUpdateArgs& a) { best().lamb_update(a); }
void lamb_apply_f32(float* param, const float* update, int64_t n, float step_size) {
  best().lamb_apply(param, update, n, step_size);
}
double sum_squares_f32(const float* x, int64_t n) { return best().sum_squares(x, n); }
void scale_f32(float* x, int64_t n, float s) { best().scale(x, n, s); }
bool all_finite_f32(const float* x, int64_t n) { return best().all_finite(x, n); }

}  // namespace bert::kernels
