// Scalar reference activations (double precision, cancellation-free forms): the specification for the SIMD variants.
#include <cmath>

#include "kernels/activation.h"

namespace bert::kernels {
namespace {

// x * Phi(x) with Phi(x) = erfc(-x/sqrt2)/2: equal to 0.5x(1+erf(x/sqrt2)) but accurate for x << 0.
double gelu_erf(double x) {
  if (std::isinf(x)) return x > 0 ? x : -0.0;
  return 0.5 * x * std::erfc(-x * 0.70710678118654752440);
}

// 0.5x(1+tanh(u)) == x * sigmoid(2u) == x / (1 + exp(-2u)), u = sqrt(2/pi)(x + 0.044715x^3).
double gelu_tanh(double x) {
  if (std::isinf(x)) return x > 0 ? x : -0.0;
  const double u = 0.79788456080286535588 * (x + 0.044715 * x * x * x);
  return x / (1.0 + std::exp(-2.0 * u));
}

double gelu_quick(double x) {
  if (std::isinf(x)) return x > 0 ? x : -0.0;
  return x / (1.0 + std::exp(-1.702 * x));
}

}  // namespace

void gelu_erf_fast_f32_ref(const float* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const float v = x[i];
    if (std::isnan(v)) {
      y[i] = v;
      continue;
    }
    const float z = std::fmin(4.f, std::fmax(-4.f, v * 0.70710678118654752440f));
    const float t = z * z;
    float p = kGeluFastErfP[0], q = kGeluFastErfQ[0];
    for (int k = 1; k < 6; ++k) p = std::fma(p, t, kGeluFastErfP[k]), q = std::fma(q, t, kGeluFastErfQ[k]);
    const float e = std::fmin(1.f, std::fmax(-1.f, z * p / q));
    y[i] = std::fmax(v, -8.f) * std::fma(e, 0.5f, 0.5f);
  }
}

void activation_f32_ref(const ActivationArgs& a) {
  float* x = a.x;
  for (int64_t i = 0; i < a.n; ++i) {
    const double v = x[i];
    switch (a.kind) {
      case Activation::kIdentity:
        break;
      case Activation::kGeluErf:
        x[i] = static_cast<float>(gelu_erf(v));
        break;
      case Activation::kGeluTanh:
        x[i] = static_cast<float>(gelu_tanh(v));
        break;
      case Activation::kGeluQuick:
        x[i] = static_cast<float>(gelu_quick(v));
        break;
      case Activation::kRelu:
        x[i] = x[i] < 0.f ? 0.f : x[i];
        break;
      case Activation::kTanh:
        x[i] = static_cast<float>(std::tanh(v));
        break;
    }
  }
}

const char* activation_name(Activation kind) {
  switch (kind) {
    case Activation::kIdentity:
      return "identity";
    case Activation::kGeluErf:
      return "gelu";
    case Activation::kGeluTanh:
      return "gelu_new";
    case Activation::kGeluQuick:
      return "quick_gelu";
    case Activation::kRelu:
      return "relu";
    case Activation::kTanh:
      return "tanh";
  }
  return "unknown";
}

}  // namespace bert::kernels
