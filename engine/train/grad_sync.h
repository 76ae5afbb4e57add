// Gradient synchronisation of data-parallel training (DDP / ZeRO): the arena's buckets are reduced
// across ranks in the order the backward finishes them, each as soon as the network reports its
// gradients final, while the rest of the backward runs (the communicator's thread or side stream).
// ZeRO stage 0 all-reduces a bucket (every rank gets the sum); stages 1 and 2 reduce-scatter it into
// this rank's shard gradient region (rank r gets the sum of block r). With ZeRO-2 every backward is
// synchronised: a bucket's place in the shared gradient region is zeroed just before the backward
// first writes it (after the reduction of the bucket that used those floats before has finished),
// each bucket is reduce-scattered in place, and its reduced block is added into the shard gradients.
#pragma once

#include <cstdint>
#include <vector>

#include "bert/comm.h"
#include "engine/runtime/backend.h"
#include "engine/train/param_arena.h"

namespace bert {

class GradientSync {
 public:
  GradientSync(Communicator& comm, ParamArena& arena, runtime::Backend& backend, int64_t num_layers);

  Status begin();                  // a synchronised backward starts
  void on_ready(int64_t stage);    // the network's gradients_ready: launch the buckets now final
  Status finish();                 // launch what is left, wait for every bucket
  // Reduces the accumulated gradients without a backward (a rank with no rows in a step).
  Status reduce_all();

  struct Stats {
    int64_t steps = 0;
    int64_t bytes_per_step = 0;  // gradient bytes each rank sends into the collectives per step
    double wait_seconds = 0;     // time finish() blocked after the backward (communication not hidden)
  };
  const Stats& stats() const { return stats_; }

 private:
  void launch(size_t b);
  Status complete(size_t b);            // waits for bucket b's reduction (ZeRO-2: and accumulates it)
  Status prepare_through(int64_t stage);  // ZeRO-2: zero the buckets first written at >= stage

  Communicator& comm_;
  ParamArena& arena_;
  runtime::Backend& backend_;
  const int64_t num_layers_;
  std::vector<CommRequest> requests_;  // per bucket, this step
  std::vector<bool> launched_, done_, prepared_;
  size_t next_ = 0;
  bool active_ = false;
  Status error_;
  Stats stats_;
};

}  // namespace bert
