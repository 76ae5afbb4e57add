// Scalar reference optimizer kernels (double arithmetic per element, float storage): the
// specification kernels/cpu/optimizer_cpu.cc and the CUDA versions are tested against.
#include <cmath>

#include "kernels/optimizer.h"

namespace bert::kernels {

namespace {

// 1 - beta^t, the bias correction of a moment after t steps.
double bias_correction(float beta, int64_t step) {
  return 1.0 - std::pow(static_cast<double>(beta), static_cast<double>(step));
}

}  // namespace

void adamw_step_f32_ref(const AdamWStepArgs& a) {
  const double lr = a.lr, wd = a.weight_decay, eps = a.eps;
  const double beta1 = a.beta1, beta2 = a.beta2;
  const double bc1 = bias_correction(a.beta1, a.step);
  const double bc2 = bias_correction(a.beta2, a.step);
  for (int64_t i = 0; i < a.n; ++i) {
    double p = a.param[i];
    const double g = a.grad[i] * a.grad_scale;  // (float product, as the in-place clip)
    if (a.zero_grad) a.grad[i] = 0.f;
    if (wd != 0.0) p -= lr * wd * p;
    const double m = beta1 * a.m[i] + (1.0 - beta1) * g;
    const double v = beta2 * a.v[i] + (1.0 - beta2) * g * g;
    p -= lr * (m / bc1) / (std::sqrt(v / bc2) + eps);
    a.m[i] = static_cast<float>(m);
    a.v[i] = static_cast<float>(v);
    a.param[i] = static_cast<float>(p);
  }
}

void lamb_update_f32_ref(const LambUpdateArgs& a) {
  const double wd = a.weight_decay, eps = a.eps;
  const double beta1 = a.beta1, beta2 = a.beta2;
  const double bc1 = bias_correction(a.beta1, a.step);
  const double bc2 = bias_correction(a.beta2, a.step);
  for (int64_t i = 0; i < a.n; ++i) {
    const double g = a.grad[i];
    const double m = beta1 * a.m[i] + (1.0 - beta1) * g;
    const double v = beta2 * a.v[i] + (1.0 - beta2) * g * g;
    a.m[i] = static_cast<float>(m);
    a.v[i] = static_cast<float>(v);
    a.update[i] = static_cast<float>((m / bc1) / (std::sqrt(v / bc2) + eps) + wd * a.param[i]);
  }
}

void lamb_apply_f32_ref(float* param, const float* update, int64_t n, float step_size) {
  for (int64_t i = 0; i < n; ++i) {
    param[i] = static_cast<float>(static_cast<double>(param[i]) - static_cast<double>(step_size) * update[i]);
  }
}

double sum_squares_f32_ref(const float* x, int64_t n) {
  double sum = 0.0;
  for (int64_t i = 0; i < n; ++i) sum += static_cast<double>(x[i]) * x[i];
  return sum;
}

void scale_f32_ref(float* x, int64_t n, float s) {
  for (int64_t i = 0; i < n; ++i) x[i] *= s;
}

bool all_finite_f32_ref(const float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    if (!std::isfinite(x[i])) return false;
  }
  return true;
}

}  // namespace bert::kernels
