// CPU-only builds: Communicator::ForCuda says there is no NCCL. (CUDA builds go through the CUDA plugin,
// engine/runtime/cuda_loader, which says the same when the plugin was built without NCCL.)
#include "engine/dist/comm_impl.h"

namespace bert {

Result<std::shared_ptr<Communicator>> make_nccl_communicator(std::shared_ptr<Communicator>) {
  return unsupported("this build has no NCCL (a CUDA build finds it in the CUDA toolkit): GPU ranks cannot "
                     "communicate");
}

}  // namespace bert
