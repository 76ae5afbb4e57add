// The host ParamOptimizers: engine/train/optimizer.h over the arena's parameter and gradient regions,
// whole (one process, DDP) or over this rank's shard (ZeRO).
#include "engine/train/param_optimizer.h"

#include "engine/train/optimizer.h"

#include <algorithm>
#include <cstring>

namespace bert {

namespace {

class HostOptimizer final : public ParamOptimizer {
 public:
  explicit HostOptimizer(const OptimizerOptions& o) : opt_(o) {}
  Status add_all(ParamArena& arena) {
    for (const ParamArena::Entry& e : arena.entries())
      BERT_RETURN_IF_ERROR(opt_.add(e.name, arena.params() + e.offset, arena.grads() + e.offset, e.n, e.decay,
                                    arena.first_moments() + e.offset, arena.second_moments() + e.offset));
    return Status::Ok();
  }
  Result<double> step(float lr) override {
    return opt_.step(lr, /*zero_grads=*/true);  // (not on an error: the gradients stay for a look)
  }
  int64_t steps() const override { return opt_.steps(); }
  float loss_scale() const override { return 1.f; }
  Result<std::vector<std::pair<std::string, Tensor>>> state() const override { return opt_.state(); }
  Status load_state(const TensorMap& state) override { return opt_.load_state(state); }

 private:
  Optimizer opt_;
};

// ZeRO: the optimizer sees only the pieces of parameters inside this rank's block of each bucket,
// with their gradients in the shard gradient region and their moments in the shard moment regions.
class ShardedOptimizer final : public ParamOptimizer {
 public:
  ShardedOptimizer(const OptimizerOptions& o, ParamArena& arena, Communicator& comm)
      : opt_(o), arena_(arena), comm_(comm) {
    opt_.set_norm_reducer([this](double* sum_squares) { return comm_.AllReduceSync(sum_squares, 1); });
  }
  Status add_all() {
    const size_t ranks = static_cast<size_t>(comm_.world_size()), r = static_cast<size_t>(comm_.rank());
    for (const ParamArena::Bucket& b : arena_.buckets()) {
      const size_t block = b.n / ranks, lo = b.offset + r * block, hi = lo + block;
      for (const ParamArena::Entry& e : arena_.entries()) {
        const size_t from = std::max(e.offset, lo), to = std::min(e.offset + static_cast<size_t>(e.n), hi);
        if (from >= to) continue;
        const size_t at = b.shard_offset + (from - lo);  // index in the shard regions
        pieces_.push_back({&e, from, to - from, at});
        BERT_RETURN_IF_ERROR(opt_.add(e.name, arena_.params() + from, arena_.shard_grads() + at,
                                      static_cast<int64_t>(to - from), e.decay, arena_.first_moments() + at,
                                      arena_.second_moments() + at));
      }
    }
    return Status::Ok();
  }
  Result<double> step(float lr) override {
    auto norm = opt_.step(lr);
    if (norm.ok()) BERT_RETURN_IF_ERROR(gather_params());
    BERT_RETURN_IF_ERROR(arena_.zero_grads());
    opt_.zero_grads();
    return norm;
  }
  int64_t steps() const override { return opt_.steps(); }
  float loss_scale() const override { return 1.f; }

  // The one-process layout: every rank's moment blocks gathered into whole tensors.
  Result<std::vector<std::pair<std::string, Tensor>>> state() const override {
    std::vector<float> m, v;
    BERT_RETURN_IF_ERROR(gather(arena_.first_moments(), &m));
    BERT_RETURN_IF_ERROR(gather(arena_.second_moments(), &v));
    std::vector<std::pair<std::string, Tensor>> out;
    Tensor step = make_owned_tensor(DType::kI64, {1});
    *static_cast<int64_t*>(mutable_data(step)) = opt_.steps();
    out.emplace_back("opt.step", step);
    for (const ParamArena::Entry& e : arena_.entries())
      for (auto [prefix, all] : {std::pair{"opt.m.", &m}, std::pair{"opt.v.", &v}}) {
        Tensor t = make_owned_tensor(DType::kF32, {e.n});
        std::memcpy(mutable_data(t), all->data() + e.offset, sizeof(float) * e.n);
        out.emplace_back(prefix + e.name, t);
      }
    return out;
  }
  Status load_state(const TensorMap& state) override {
    auto step = state.find("opt.step");
    if (step == state.end() || step->second.dtype != DType::kI64 || step->second.numel() != 1)
      return format_error("no optimizer step count (opt.step) in the checkpoint");
    for (const ParamArena::Entry& e : arena_.entries())
      for (const char* prefix : {"opt.m.", "opt.v."}) {
        auto t = state.find(prefix + e.name);
        if (t == state.end() || t->second.dtype != DType::kF32 || t->second.numel() != e.n)
          return format_error("optimizer state '" + std::string(prefix) + e.name + "' is missing or not F32 [" +
                              std::to_string(e.n) + "]");
      }
    for (const Piece& p : pieces_) {
      const size_t skip = p.from - p.entry->offset;
      std::memcpy(arena_.first_moments() + p.at, state.at("opt.m." + p.entry->name).as<float>() + skip,
                  sizeof(float) * p.n);
      std::memcpy(arena_.second_moments() + p.at, state.at("opt.v." + p.entry->name).as<float>() + skip,
                  sizeof(float) * p.n);
    }
    return opt_.set_steps(step->second.as<int64_t>()[0]);
  }

 private:
  struct Piece {
    const ParamArena::Entry* entry;
    size_t from, n, at;  // arena offset, length, shard offset
  };
  Status gather_params() {
    const size_t ranks = static_cast<size_t>(comm_.world_size()), r = static_cast<size_t>(comm_.rank());
    std::vector<CommRequest> reqs;
    for (const ParamArena::Bucket& b : arena_.buckets()) {
      float* bucket = arena_.params() + b.offset;
      const size_t block = b.n / ranks;
      reqs.push_back(comm_.AllGather(bucket + r * block, bucket, static_cast<int64_t>(block), CommType::kF32));
    }
    Status first;
    for (CommRequest& q : reqs)
      if (Status st = q.Wait(); !st.ok() && first.ok()) first = st;
    return first;
  }
  // A shard region (moments) gathered into the arena's layout.
  Status gather(const float* shard, std::vector<float>* all) const {
    all->assign(arena_.total(), 0.f);
    const size_t ranks = static_cast<size_t>(comm_.world_size());
    for (const ParamArena::Bucket& b : arena_.buckets()) {
      const size_t block = b.n / ranks;
      BERT_RETURN_IF_ERROR(
          comm_.AllGather(shard + b.shard_offset, all->data() + b.offset, static_cast<int64_t>(block), CommType::kF32)
              .Wait());
    }
    return Status::Ok();
  }

  Optimizer opt_;
  ParamArena& arena_;
  Communicator& comm_;
  std::vector<Piece> pieces_;
};

}  // namespace

Result<std::unique_ptr<ParamOptimizer>> make_param_optimizer(runtime::Backend& backend, ParamArena& arena,
                                                             const TrainerOptions& options, Communicator* comm) {
  if (arena.layout().zero_stage >= 1) {
    if (backend.device() != Device::kCpu || !comm)
      return unsupported("ZeRO (zero_stage >= 1) runs the host optimizer: train on the CPU, or use zero_stage 0");
    if (options.optimizer.kind != OptimizerKind::kAdamW)
      return unsupported("ZeRO shards AdamW only (LAMB's trust ratio needs whole tensors): use zero_stage 0 with LAMB");
    auto opt = std::make_unique<ShardedOptimizer>(options.optimizer, arena, *comm);
    BERT_RETURN_IF_ERROR(opt->add_all());
    return std::unique_ptr<ParamOptimizer>(std::move(opt));
  }
  if (backend.device() != Device::kCpu) return make_cuda_optimizer(backend, arena, options);
  auto opt = std::make_unique<HostOptimizer>(options.optimizer);
  BERT_RETURN_IF_ERROR(opt->add_all(arena));
  return std::unique_ptr<ParamOptimizer>(std::move(opt));
}

}  // namespace bert
