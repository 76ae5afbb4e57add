// The optimizer kernels of optimizer_portable.h compiled for AVX2 + FMA.
#include "kernels/cpu/optimizer_portable.h"

#ifndef __AVX2__
#error "compile this file with the AVX2 flags (see CMakeLists.txt)"
#endif

namespace bert::kernels {

extern const OptimizerKernels kOptimizerAvx2;
BERT_OPTIMIZER_KERNELS_TABLE(kOptimizerAvx2);

}  // namespace bert::kernels
