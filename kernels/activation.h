// Element-wise activations (GELU variants, ReLU, tanh), in place: argument struct and every ISA variant.
#pragma once

#include <cstdint>

#include "bert/status.h"

namespace bert::kernels {

// kGeluErf:   0.5x(1+erf(x/sqrt2))                                   HF "gelu"
// kGeluTanh:  0.5x(1+tanh(sqrt(2/pi)(x+0.044715x^3)))                HF "gelu_new" / "gelu_pytorch_tanh" / "gelu_fast"
// kGeluQuick: x*sigmoid(1.702x)                                      HF "quick_gelu"
// kRelu:      x < 0 ? 0 : x (NaN and -0 pass through)
// kTanh:      tanh(x)
// The GELUs are evaluated in a cancellation-free form (x*Phi(x) through erfc, x*sigmoid(2u)), so
// they keep full relative accuracy for large negative x; gelu(-inf) = -0, gelu(+inf) = +inf, NaN -> NaN.
enum class Activation { kIdentity, kGeluErf, kGeluTanh, kGeluQuick, kRelu, kTanh };

struct ActivationArgs {
  float* x;  // [n], in place
  int64_t n = 0;
  Activation kind = Activation::kGeluErf;
};

// x non-null when n > 0; n >= 0 and n*4 bytes representable.
Status check(const ActivationArgs& a);

void activation_f32_ref(const ActivationArgs& a);
void activation_f32_avx2(const ActivationArgs& a);
void activation_f32_avx512(const ActivationArgs& a);

// "identity", "gelu", "gelu_new", "quick_gelu", "relu", "tanh".
const char* activation_name(Activation kind);

}  // namespace bert::kernels
