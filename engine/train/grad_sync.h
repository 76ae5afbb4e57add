// Gradient synchronisation of data-parallel training (DDP / ZeRO): the arena's buckets are reduced
// across ranks in the order the backward finishes them, each as soon as the network reports its
// gradients final, while the rest of the backward runs (the communicator's thread or side stream).
// ZeRO stage 0 all-reduces a bucket (every rank gets the sum); stages 1 and 2 reduce-scatter it into
// this rank's shard gradient region (rank r gets the sum of block r).
#pragma once

#include <cstdint>
#include <vector>

#include "bert/comm.h"
#include "engine/runtime/backend.h"
#include "engine/train/param_arena.h"

namespace bert {

class GradientSync {
 public:
  GradientSync(Communicator& comm, ParamArena& arena, runtime::Backend& backend)
      : comm_(comm), arena_(arena), backend_(backend) {}

  void begin();                   // a synchronised backward starts
  void on_ready(int64_t stage);   // the network's gradients_ready: launch the buckets now final
  Status finish();                // launch what is left, wait for every bucket
  // Reduces the accumulated gradients without a backward (a rank with no rows in a step).
  Status reduce_all() { return begin(), finish(); }

  struct Stats {
    int64_t steps = 0;
    int64_t bytes_per_step = 0;  // gradient bytes each rank sends into the collectives per step
    double wait_seconds = 0;     // time finish() blocked after the backward (communication not hidden)
  };
  const Stats& stats() const { return stats_; }

 private:
  void launch(const ParamArena::Bucket& b);

  Communicator& comm_;
  ParamArena& arena_;
  runtime::Backend& backend_;
  size_t next_ = 0;
  bool active_ = false;
  std::vector<CommRequest> pending_;
  Stats stats_;
};

}  // namespace bert
