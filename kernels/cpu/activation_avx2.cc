// AVX2 activations (GELU erf/tanh/quick, ReLU, tanh) and the GEMM epilogue's fast GELU: simd_kernels.h
// instantiated with the AVX2 traits.
#include "kernels/cpu/simd_kernels.h"

#ifndef __AVX2__
#error "compile this file with the AVX2 flags (see CMakeLists.txt)"
#endif

namespace bert::kernels {

void activation_f32_avx2(const ActivationArgs& a) { simd::activation_all<simd::Avx2>(a); }
void gelu_erf_fast_f32_avx2(const float* x, float* y, int64_t n) { simd::gelu_erf_fast_span<simd::Avx2>(x, y, n); }

}  // namespace bert::kernels
