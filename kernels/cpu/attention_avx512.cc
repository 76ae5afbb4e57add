// AVX-512 flash-style fused attention: the vector-generic body in attention_simd.h with the AVX-512 traits.
#include "kernels/cpu/attention_simd.h"

#ifndef __AVX512F__
#error "compile this file with the AVX-512 flags (see CMakeLists.txt)"
#endif

namespace bert::kernels {

void attention_f32_avx512_flash(const AttentionArgs& a) { simd::attention_all<simd::Avx512>(a); }

}  // namespace bert::kernels
