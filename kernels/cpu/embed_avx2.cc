// AVX2 embedding gather-sum + LayerNorm: simd_kernels.h instantiated with the AVX2 traits.
#include "kernels/cpu/simd_kernels.h"

#ifndef __AVX2__
#error "compile this file with the AVX2 flags (see CMakeLists.txt)"
#endif

namespace bert::kernels {

void embed_f32_avx2(const EmbedArgs& a) { simd::embed_all<simd::Avx2>(a); }

}  // namespace bert::kernels
