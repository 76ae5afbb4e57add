// GradientSync (engine/train/grad_sync.h).
#include "engine/train/grad_sync.h"

#include <chrono>

namespace bert {

void GradientSync::begin() {
  next_ = 0;
  active_ = true;
  pending_.clear();
  comm_.set_stream(backend_.queue());
}

void GradientSync::launch(const ParamArena::Bucket& b) {
  float* g = arena_.grads() + b.offset;
  if (arena_.layout().zero_stage == 0) {
    pending_.push_back(comm_.AllReduce(g, static_cast<int64_t>(b.n), CommType::kF32, ReduceOp::kSum));
  } else {
    const int64_t block = static_cast<int64_t>(b.n) / comm_.world_size();
    pending_.push_back(
        comm_.ReduceScatter(g, arena_.shard_grads() + b.shard_offset, block, CommType::kF32, ReduceOp::kSum));
  }
}

void GradientSync::on_ready(int64_t stage) {
  if (!active_) return;
  const auto& buckets = arena_.buckets();
  while (next_ < buckets.size() && buckets[next_].ready_stage >= stage) launch(buckets[next_++]);
}

Status GradientSync::finish() {
  if (!active_) return Status::Ok();
  on_ready(INT64_MIN);
  active_ = false;
  const auto t0 = std::chrono::steady_clock::now();
  Status first;
  for (CommRequest& r : pending_)
    if (Status st = r.Wait(); !st.ok() && first.ok()) first = st;
  pending_.clear();
  stats_.wait_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ++stats_.steps;
  int64_t bytes = 0;
  for (const auto& b : arena_.buckets()) bytes += static_cast<int64_t>(b.n * sizeof(float));
  stats_.bytes_per_step = bytes;
  return first;
}

}  // namespace bert
