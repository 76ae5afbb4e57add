// What the communicator backends share (engine/dist): a request's completion state, the description
// of a collective every rank announces before data moves (kind, element type, count, root), and the
// factories each backend's file defines (MPI: engine/dist/mpi or no_mpi; NCCL: engine/runtime/cuda_loader,
// which forwards to engine/dist/nccl in the CUDA plugin, or engine/dist/no_nccl in CPU-only builds).
#pragma once

#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>

#include "bert/comm.h"

namespace bert {

struct CommRequest::State {
  std::mutex mu;
  std::condition_variable cv;
  bool done = false;
  Status status;
  std::function<Status()> complete;  // when set, Wait() runs it (e.g. a CUDA event sync) to finish
  void finish(Status s) {
    std::lock_guard<std::mutex> lock(mu);
    status = std::move(s), done = true;
    cv.notify_all();
  }
};

inline CommRequest finished_request(Status s) {
  auto st = std::make_shared<CommRequest::State>();
  st->finish(std::move(s));
  return CommRequest(st);
}

enum class CollectiveKind : int32_t { kAllReduce = 1, kReduceScatter, kAllGather, kBroadcast, kBarrier, kFailed };

// One collective as a rank announces it: compared across ranks before any data moves.
struct CollectiveInfo {
  CollectiveKind kind = CollectiveKind::kBarrier;
  CommType type = CommType::kF32;
  int64_t count = 0;  // elements (bytes for a broadcast)
  int32_t root = 0;
  ReduceOp op = ReduceOp::kSum;
};
// "allreduce(sum) of 1234 f32", "broadcast of 4096 bytes from rank 0", ...
std::string describe(const CollectiveInfo& c);
// Empty when `a` and `b` are the same collective; else what differs.
std::string mismatch(const CollectiveInfo& a, const CollectiveInfo& b);

// The environment's launcher: world size from Open MPI / PMI variables (1 when none is set).
int launcher_world_size();

Result<std::shared_ptr<Communicator>> make_mpi_communicator(const CommOptions& options);
Result<std::shared_ptr<Communicator>> make_nccl_communicator(std::shared_ptr<Communicator> host);

}  // namespace bert
