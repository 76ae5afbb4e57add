// The optimizer kernels of optimizer_portable.h compiled for AVX-512.
#include "kernels/cpu/optimizer_portable.h"

#ifndef __AVX512F__
#error "compile this file with the AVX-512 flags (see CMakeLists.txt)"
#endif

namespace bert::kernels {

extern const OptimizerKernels kOptimizerAvx512;
BERT_OPTIMIZER_KERNELS_TABLE(kOptimizerAvx512);

}  // namespace bert::kernels
