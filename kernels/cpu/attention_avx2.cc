// AVX2 flash-style fused attention: the vector-generic body in attention_simd.h with the AVX2 traits.
#include "kernels/cpu/attention_simd.h"

#ifndef __AVX2__
#error "compile this file with the AVX2 flags (see CMakeLists.txt)"
#endif

namespace bert::kernels {

void attention_f32_avx2_flash(const AttentionArgs& a) { simd::attention_all<simd::Avx2>(a); }

}  // namespace bert::kernels
