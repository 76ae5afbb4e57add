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

// GELU (erf) for the linear layers' epilogue in inference (kernels/cpu/gemm_onednn.cc): x * Phi(x),
// Phi(x) = (1 + erf(x/sqrt2))/2, with erf(z) = z P(z^2)/Q(z^2) for |z| <= 4 (our own least-squares fit
// of degree 5/5, |error| < 3e-8 there) and +-1 beyond; about a fifth of the accurate kernels' work. The
// error bound is absolute, |error| <= 3e-7 * max(1, |x|): for x << 0 the result is tiny and its relative
// error large (the accurate kernels above keep full relative accuracy). gelu(-inf) = -0 (x is taken as
// max(x, -8), where Phi is below float's resolution), +inf -> +inf, NaN -> NaN. The reference evaluates
// the same formula in scalar float; the SIMD variants agree with it to a few ulp.
inline constexpr float kGeluFastErfP[6] = {1.9760361680417629e-6f, 2.8743838492459429e-4f, 3.9843147945090429e-3f,
                                           5.3407945967177297e-2f, 1.9582120250533436e-1f, 1.1283789967907832f};
inline constexpr float kGeluFastErfQ[6] = {3.7461517319063915e-5f, 1.2113422568391145e-3f, 1.5406113438664705e-2f,
                                           1.1629678756495171e-1f, 5.068733693001826e-1f, 1.f};
// y = gelu(x) over n elements (x == y: in place; else disjoint).
void gelu_erf_fast_f32_ref(const float* x, float* y, int64_t n);
void gelu_erf_fast_f32_avx2(const float* x, float* y, int64_t n);
void gelu_erf_fast_f32_avx512(const float* x, float* y, int64_t n);

// "identity", "gelu", "gelu_new", "quick_gelu", "relu", "tanh".
const char* activation_name(Activation kind);

}  // namespace bert::kernels
