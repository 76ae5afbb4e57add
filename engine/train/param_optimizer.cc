// The host ParamOptimizer: engine/train/optimizer.h over the arena's parameter and gradient regions.
#include "engine/train/param_optimizer.h"

#include "engine/train/optimizer.h"

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
    BERT_ASSIGN_OR_RETURN(double norm, opt_.step(lr));
    opt_.zero_grads();
    return norm;
  }
  int64_t steps() const override { return opt_.steps(); }
  float loss_scale() const override { return 1.f; }
  Result<std::vector<std::pair<std::string, Tensor>>> state() const override { return opt_.state(); }
  Status load_state(const TensorMap& state) override { return opt_.load_state(state); }

 private:
  Optimizer opt_;
};

}  // namespace

Result<std::unique_ptr<ParamOptimizer>> make_param_optimizer(runtime::Backend& backend, ParamArena& arena,
                                                             const TrainerOptions& options) {
  if (backend.device() != Device::kCpu) return make_cuda_optimizer(backend, arena, options);
  auto opt = std::make_unique<HostOptimizer>(options.optimizer);
  BERT_RETURN_IF_ERROR(opt->add_all(arena));
  return std::unique_ptr<ParamOptimizer>(std::move(opt));
}

}  // namespace bert
