// Shared by the .cu files: error recording and the per-launch check (see cuda_kernels.h).
#pragma once

#include <cuda_runtime.h>

namespace bert::kernels::cuda {

bool record(cudaError_t e, const char* what);
// After a launch: the launch error, and with BERT_CUDA_SYNC=1 a synchronize and its error.
bool check_launch(const char* kernel);

}  // namespace bert::kernels::cuda
