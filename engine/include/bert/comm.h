// Communicator: the ranks of a data-parallel job and their collectives (all-reduce, reduce-scatter,
// all-gather, broadcast, barrier), asynchronous with a request to wait on.
//
//   auto comm = bert::Communicator::FromEnvironment();   // under `mpirun -np N`: MPI; else one rank
//   bert::CommRequest r = (*comm)->AllReduce(grads, n, bert::ReduceOp::kSum);
//   ... compute ...
//   BERT_RETURN_IF_ERROR(r.Wait());
//
// Backends: one rank (no communication), MPI (host buffers; Open MPI's mpirun sets the environment
// this reads: no flag is needed) and, in CUDA builds, NCCL (device buffers; its unique id travels over
// the host communicator). Collectives run in the order they are called, on a communication thread
// (MPI) or a side stream (NCCL), so they overlap the caller's work.
//
// Safety, on every collective: each is numbered, and before any data moves every rank tells every
// other what it is calling (kind, element type, count, root). A mismatch, a rank that reported a
// failure (Fail) or a rank that does not arrive within the timeout is an error naming the rank and
// the collective; the communicator is then broken and every later call returns that error. A rank
// that never arrives (hung or dead) also makes the job abort after the timeout, so nothing hangs.
// Results are bit-identical on every rank (each element is reduced once, by the rank that owns it,
// in a fixed order, then gathered).
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "bert/status.h"

namespace bert {

enum class ReduceOp { kSum, kAverage };
enum class CommType { kF32, kF64, kI64 };  // element types the collectives move
const char* comm_type_name(CommType t);
size_t comm_type_size(CommType t);

// The completion of one asynchronous collective. Wait() blocks until it is done and returns its
// status (also the first error of the communicator, when it broke before this one ran). A default
// request is complete and ok.
class CommRequest {
 public:
  struct State;
  CommRequest() = default;
  explicit CommRequest(std::shared_ptr<State> s) : state_(std::move(s)) {}
  Status Wait();
  bool Done() const;

 private:
  std::shared_ptr<State> state_;
};

struct CommOptions {
  // How long a rank waits for the others to reach a collective before it names the missing ranks
  // and aborts the job (seconds). Environment: BERT_COMM_TIMEOUT overrides the default.
  double timeout_s = 60;
};

class Communicator {
 public:
  virtual ~Communicator() = default;

  // The ranks the process was launched with: Open MPI's (OMPI_COMM_WORLD_SIZE) or another PMI
  // launcher's environment -> MPI (an error in builds without MPI); otherwise one rank. The MPI
  // communicator is one per process: later calls return the same object.
  static Result<std::shared_ptr<Communicator>> FromEnvironment(const CommOptions& options = {});
  static std::shared_ptr<Communicator> SingleRank();
  // A communicator over CUDA device memory (NCCL) for the same ranks as `host`, one GPU per rank
  // (the rank's local index picks the device). An error in builds without CUDA / NCCL.
  static Result<std::shared_ptr<Communicator>> ForCuda(std::shared_ptr<Communicator> host);

  virtual int rank() const = 0;
  virtual int world_size() const = 0;
  virtual int local_rank() const { return rank(); }  // the rank's index on its host
  virtual const char* backend() const = 0;           // "single", "mpi" or "nccl"
  virtual int64_t collectives() const = 0;           // how many this rank has started

  // In place over `count` elements (the buffer must stay valid until the request completes).
  virtual CommRequest AllReduce(void* data, int64_t count, CommType type, ReduceOp op) = 0;
  // `in` holds world_size() * count elements; rank r receives the reduction of block r in `out`
  // (out == in: in place, the result in the first count elements).
  virtual CommRequest ReduceScatter(const void* in, void* out, int64_t count, CommType type, ReduceOp op) = 0;
  // `in` holds count elements; `out` receives world_size() * count, rank r's at block r (`in` may
  // be this rank's own block of `out`).
  virtual CommRequest AllGather(const void* in, void* out, int64_t count, CommType type) = 0;
  virtual CommRequest Broadcast(void* data, int64_t bytes, int root) = 0;
  virtual CommRequest Barrier() = 0;

  // Tells the other ranks that this one cannot go on (they get an error naming this rank and `why`
  // at the collective they are in or reach next); every later call on this rank fails.
  virtual void Fail(const std::string& why) = 0;
  // Ends the whole job now (after an error the others may not see): MPI_Abort; exit() for one rank.
  virtual void Abort(int exit_code) = 0;

  // For the GPU communicator: the stream the caller's work runs on (collectives start after what is
  // queued there); ignored by host communicators.
  virtual void set_stream(void* stream) {}

  // Blocking forms.
  Status AllReduceSync(float* data, int64_t count, ReduceOp op = ReduceOp::kSum) {
    return AllReduce(data, count, CommType::kF32, op).Wait();
  }
  Status AllReduceSync(double* data, int64_t count, ReduceOp op = ReduceOp::kSum) {
    return AllReduce(data, count, CommType::kF64, op).Wait();
  }
  Status AllReduceSync(int64_t* data, int64_t count, ReduceOp op = ReduceOp::kSum) {
    return AllReduce(data, count, CommType::kI64, op).Wait();
  }
};

}  // namespace bert
