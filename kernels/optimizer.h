// Optimizer kernels: the per-tensor math of AdamW and LAMB, plus the reductions and scalings that
// gradient clipping needs. Raw float arrays and plain argument structs (device-neutral: the CUDA
// versions will take the same arguments); the bookkeeping (steps, trust ratios, clipping decisions)
// lives in engine/train/optimizer.h. Each op has a `_ref` (scalar, double arithmetic: the spec) and a
// CPU variant (OpenMP, float arithmetic like torch/apex). Both are deterministic: the CPU variant
// splits work into fixed-size blocks and reduces block results serially in block order, so the
// bits never depend on the thread count. No two array arguments of one call may overlap.
#pragma once

#include <cstdint>

namespace bert::kernels {

// One AdamW step on one tensor, torch.optim.AdamW semantics (amsgrad=False, maximize=False), on the
// gradient g = grad * grad_scale (float product: gradient clipping folded into the pass, the same bits
// as scaling grad in place first):
//   p -= lr * weight_decay * p                 (decoupled; skipped when weight_decay == 0)
//   m  = beta1 * m + (1 - beta1) * g
//   v  = beta2 * v + (1 - beta2) * g^2
//   p -= lr * (m / (1 - beta1^t)) / (sqrt(v / (1 - beta2^t)) + eps)
// with t = step, 1-based (the step being taken). param, m and v are updated in place; with zero_grad,
// grad is set to 0 once read (the optimizer's zero_grad folded into the pass: one sweep over memory
// instead of three for clip, update and zeroing).
struct AdamWStepArgs {
  float* param = nullptr;       // [n]
  float* grad = nullptr;        // [n] (written only with zero_grad)
  float* m = nullptr;           // [n] first moment
  float* v = nullptr;           // [n] second moment
  int64_t n = 0;
  int64_t step = 1;             // t >= 1
  float lr = 0.f;
  float beta1 = 0.9f, beta2 = 0.999f, eps = 1e-8f;
  float weight_decay = 0.f;
  float grad_scale = 1.f;
  bool zero_grad = false;
};
void adamw_step_f32_ref(const AdamWStepArgs& a);
void adamw_step_f32(const AdamWStepArgs& a);

// The first half of one LAMB step on one tensor (apex FusedLAMB with bias_correction=True,
// adam_w_mode=True, grad_averaging=True): updates m and v as Adam does and writes the raw update
//   u = (m / (1 - beta1^t)) / (sqrt(v / (1 - beta2^t)) + eps) + weight_decay * p
// into `update`. param is only read. The caller then takes the trust ratio from
// sum_squares_f32(param) and sum_squares_f32(update) and applies lamb_apply_f32.
struct LambUpdateArgs {
  const float* param = nullptr;  // [n]
  const float* grad = nullptr;   // [n]
  float* m = nullptr;            // [n]
  float* v = nullptr;            // [n]
  float* update = nullptr;       // [n] out: u
  int64_t n = 0;
  int64_t step = 1;              // t >= 1
  float beta1 = 0.9f, beta2 = 0.999f, eps = 1e-6f;
  float weight_decay = 0.f;
};
void lamb_update_f32_ref(const LambUpdateArgs& a);
void lamb_update_f32(const LambUpdateArgs& a);

// param[i] -= step_size * update[i]  (LAMB's second half; step_size = lr * trust_ratio).
void lamb_apply_f32_ref(float* param, const float* update, int64_t n, float step_size);
void lamb_apply_f32(float* param, const float* update, int64_t n, float step_size);

// sum_i x[i]^2 accumulated in double. Finite for every finite input (even FLT_MAX squared, summed
// over any realistic n), and NaN or +Inf exactly when some x[i] is NaN or +-Inf.
double sum_squares_f32_ref(const float* x, int64_t n);
double sum_squares_f32(const float* x, int64_t n);

// x[i] *= s (gradient clipping).
void scale_f32_ref(float* x, int64_t n, float s);
void scale_f32(float* x, int64_t n, float s);

// True when no x[i] is NaN or +-Inf (true for n == 0).
bool all_finite_f32_ref(const float* x, int64_t n);
bool all_finite_f32(const float* x, int64_t n);

}  // namespace bert::kernels
