// GradientSync (engine/train/grad_sync.h).
#include "engine/train/grad_sync.h"

#include <chrono>
#include <climits>

namespace bert {

GradientSync::GradientSync(Communicator& comm, ParamArena& arena, runtime::Backend& backend, int64_t num_layers)
    : comm_(comm), arena_(arena), backend_(backend), num_layers_(num_layers) {
  int64_t bytes = 0;
  for (const auto& b : arena_.buckets()) bytes += static_cast<int64_t>(b.n * sizeof(float));
  stats_.bytes_per_step = bytes;
}

Status GradientSync::begin() {
  const size_t n = arena_.buckets().size();
  requests_.assign(n, CommRequest());
  launched_.assign(n, false), done_.assign(n, false), prepared_.assign(n, false);
  next_ = 0;
  active_ = true;
  error_ = Status::Ok();
  comm_.set_stream(backend_.queue());
  return prepare_through(num_layers_);  // the head's stage writes first
}

void GradientSync::launch(size_t i) {
  const ParamArena::Bucket& b = arena_.buckets()[i];
  float* g = arena_.bucket_grads(b);
  if (arena_.layout().zero_stage == 0) {
    requests_[i] = comm_.AllReduce(g, static_cast<int64_t>(b.n), CommType::kF32, ReduceOp::kSum);
  } else if (arena_.layout().zero_stage == 2) {  // in place: the block lands at the bucket's start
    requests_[i] = comm_.ReduceScatter(g, g, static_cast<int64_t>(b.n) / comm_.world_size(), CommType::kF32,
                                       ReduceOp::kSum);
  } else {
    const int64_t block = static_cast<int64_t>(b.n) / comm_.world_size();
    requests_[i] = comm_.ReduceScatter(g, arena_.shard_grads() + b.shard_offset, block, CommType::kF32, ReduceOp::kSum);
  }
  launched_[i] = true;
}

Status GradientSync::complete(size_t i) {
  if (done_[i]) return Status::Ok();
  done_[i] = true;
  BERT_RETURN_IF_ERROR(requests_[i].Wait());
  if (arena_.layout().zero_stage < 2) return Status::Ok();
  const ParamArena::Bucket& b = arena_.buckets()[i];
  const size_t block = b.n / static_cast<size_t>(comm_.world_size());
  const float* from = arena_.bucket_grads(b);
  float* to = arena_.shard_grads() + b.shard_offset;
  for (size_t k = 0; k < block; ++k) to[k] += from[k];  // (ZeRO runs the host optimizer: host memory)
  return Status::Ok();
}

Status GradientSync::prepare_through(int64_t stage) {
  if (arena_.layout().zero_stage < 2) return Status::Ok();
  const auto& buckets = arena_.buckets();
  for (size_t i = 0; i < buckets.size(); ++i) {
    if (prepared_[i] || buckets[i].first_stage < stage) continue;
    for (size_t j : buckets[i].shares_memory_with) {  // the previous user of these floats is done
      if (!launched_[j]) launch(j);  // (cannot happen in backward order; keeps the invariant)
      BERT_RETURN_IF_ERROR(complete(j));
    }
    BERT_RETURN_IF_ERROR(backend_.zero(arena_.bucket_grads(buckets[i]), buckets[i].n * sizeof(float)));
    prepared_[i] = true;
  }
  return Status::Ok();
}

void GradientSync::on_ready(int64_t stage) {
  if (!active_ || !error_.ok()) return;
  const auto& buckets = arena_.buckets();
  while (next_ < buckets.size() && buckets[next_].ready_stage >= stage) launch(next_++);
  if (stage > INT64_MIN) error_ = prepare_through(stage - 1);
}

Status GradientSync::finish() {
  if (!active_) return Status::Ok();
  on_ready(INT64_MIN);
  active_ = false;
  const auto t0 = std::chrono::steady_clock::now();
  Status first = error_;
  for (size_t i = 0; i < requests_.size(); ++i) {
    if (!launched_[i]) launch(i);
    if (Status st = complete(i); !st.ok() && first.ok()) first = st;
  }
  stats_.wait_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ++stats_.steps;
  return first;
}

Status GradientSync::reduce_all() {
  BERT_RETURN_IF_ERROR(begin());
  if (arena_.layout().zero_stage < 2) return finish();
  // ZeRO-2 without a backward: this rank adds nothing. Bucket by bucket, in the order every rank
  // launches them (buckets share memory, so each is zeroed just before its own reduction).
  const auto& buckets = arena_.buckets();
  Status first;
  for (size_t i = 0; i < buckets.size(); ++i) {
    Status st = backend_.zero(arena_.bucket_grads(buckets[i]), buckets[i].n * sizeof(float));
    launch(i);
    if (Status done = complete(i); st.ok()) st = done;
    if (!st.ok() && first.ok()) first = st;
  }
  next_ = buckets.size();
  active_ = false;
  ++stats_.steps;
  return first;
}

}  // namespace bert
