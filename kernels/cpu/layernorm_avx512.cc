// AVX-512 LayerNorm: the vector-generic body in simd_kernels.h instantiated with the AVX-512 traits.
#include "kernels/cpu/simd_kernels.h"

#ifndef __AVX512F__
#error "compile this file with the AVX-512 flags (see CMakeLists.txt)"
#endif

namespace bert::kernels {

void layernorm_f32_avx512(const LayerNormArgs& a) { simd::layernorm_all<simd::Avx512>(a); }

}  // namespace bert::kernels
