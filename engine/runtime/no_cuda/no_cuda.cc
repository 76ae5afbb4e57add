// The CUDA entry points of a build configured without a CUDA toolkit: each says so by name. CUDA
// builds compile engine/runtime/cuda_loader/ instead, which loads the CUDA plugin (engine/runtime/cuda/
// and kernels/cuda/ as libbert_engine_cuda.so) on first use; CMakeLists.txt picks one folder.
#include "engine/runtime/backend.h"
#include "engine/train/param_optimizer.h"

namespace bert {

namespace runtime {

Result<std::unique_ptr<Backend>> make_cuda_backend(GemmCompute) {
  return unsupported("device cuda is not available in this build: it was configured without a CUDA toolkit "
                     "(install nvcc and configure with -DBERT_CUDA=ON)");
}

bool cuda_available(std::string* why) {
  if (why) *why = "this build was configured without a CUDA toolkit";
  return false;
}

}  // namespace runtime

Result<std::unique_ptr<ParamOptimizer>> make_cuda_optimizer(runtime::Backend&, ParamArena&, const TrainerOptions&) {
  return unsupported("device cuda is not available in this build (configured without a CUDA toolkit)");
}

}  // namespace bert
