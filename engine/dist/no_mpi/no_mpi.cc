// Builds without MPI: a launcher's multi-rank environment is an error that says so.
#include "engine/dist/comm_impl.h"

namespace bert {

Result<std::shared_ptr<Communicator>> make_mpi_communicator(const CommOptions&) {
  return unsupported("launched as rank of " + std::to_string(launcher_world_size()) +
                     " (mpirun), but this build has no MPI: install libopenmpi-dev (scripts/setup.sh) and rebuild");
}

}  // namespace bert
