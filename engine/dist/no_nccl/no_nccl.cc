// Builds without CUDA or without NCCL: Communicator::ForCuda says so.
#include "engine/dist/comm_impl.h"

namespace bert {

Result<std::shared_ptr<Communicator>> make_nccl_communicator(std::shared_ptr<Communicator>) {
  return unsupported("this build has no NCCL (a CUDA build finds it in the CUDA toolkit): GPU ranks cannot "
                     "communicate");
}

}  // namespace bert
