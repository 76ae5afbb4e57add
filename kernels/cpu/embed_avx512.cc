// AVX-512 embedding gather-sum + LayerNorm: simd_kernels.h instantiated with the AVX-512 traits.
#include "kernels/cpu/simd_kernels.h"

#ifndef __AVX512F__
#error "compile this file with the AVX-512 flags (see CMakeLists.txt)"
#endif

namespace bert::kernels {

void embed_f32_avx512(const EmbedArgs& a) { simd::embed_all<simd::Avx512>(a); }

}  // namespace bert::kernels
