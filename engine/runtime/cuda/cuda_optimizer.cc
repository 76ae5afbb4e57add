// The CUDA ParamOptimizer (engine/train/param_optimizer.h): AdamW / LAMB as multi-tensor kernels over
// the ParamArena's device regions (parameters, gradients and both moments), global-norm clipping
// applied as the gradients are read, and torch.amp.GradScaler-style dynamic loss scaling when the
// GEMMs compute in fp16. One host synchronisation per step (the norm and the overflow flag).
#include <cmath>
#include <limits>

#include "engine/runtime/cuda/cuda_backend.h"
#include "engine/train/optimizer.h"
#include "engine/train/param_optimizer.h"
#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/train_kernels.h"

namespace bert {

namespace kc = kernels::cuda;

namespace {

class CudaOptimizer final : public ParamOptimizer {
 public:
  CudaOptimizer(runtime::Backend& be, ParamArena& arena, const TrainerOptions& o)
      : be_(be), arena_(arena), o_(o), checker_(o.optimizer), stream_(runtime::cuda_stream(be)) {
    scaling_ = o.precision == TrainPrecision::kF16 && o.loss_scaling.enabled;
    scale_ = scaling_ ? o.loss_scaling.init_scale : 1.f;
  }
  ~CudaOptimizer() override {
    if (scratch_) be_.release(scratch_);
  }

  Status init() {
    std::vector<kc::DeviceTensorEntry> entries;
    for (const ParamArena::Entry& e : arena_.entries()) {
      kc::DeviceTensorEntry d;
      d.param = arena_.params() + e.offset, d.grad = arena_.grads() + e.offset;
      d.m = arena_.first_moments() + e.offset, d.v = arena_.second_moments() + e.offset, d.n = e.n, d.decay = e.decay;
      entries.push_back(d);
    }
    BERT_RETURN_IF_ERROR(be_.synchronize());
    if (!list_.build(entries)) return failed("building the parameter list");
    // Scratch: the reductions' workspace, then the norm outputs (double sum, float norm, float clip, int flag).
    reduce_bytes_ = (kc::multi_tensor_workspace_bytes(list_.list()) + 255) / 256 * 256;
    scratch_ = static_cast<char*>(be_.allocate(reduce_bytes_ + 256));
    if (!scratch_) return failed("allocating the optimizer workspace");
    return Status::Ok();
  }

  Result<double> step(float lr) override {
    BERT_RETURN_IF_ERROR(checker_.check_step_arguments(lr));
    const OptimizerOptions& opt = o_.optimizer;
    const kc::DeviceTensorList& list = list_.list();
    char* out_base = scratch_ + reduce_bytes_;
    kc::GradNormOutputs out;
    out.sum_squares = reinterpret_cast<double*>(out_base);
    out.norm = reinterpret_cast<float*>(out_base + 8);
    out.clip_factor = reinterpret_cast<float*>(out_base + 12);
    out.found_inf = reinterpret_cast<int*>(out_base + 16);
    out.max_norm = opt.max_grad_norm;
    const kc::Workspace ws{scratch_, reduce_bytes_};
    BERT_RETURN_IF_ERROR(be_.zero(out.found_inf, sizeof(int)));
    if (scaling_ && !kc::unscale_and_check_multi(list, 1.f / scale_, nullptr, out.found_inf, stream_))
      return failed("unscaling the gradients");  // (a power-of-two scale: exact)
    if (!kc::global_grad_norm_multi(list, out, stream_, ws)) return failed("the gradient norm");
    double sum_squares = 0;
    int found = 0;
    BERT_RETURN_IF_ERROR(be_.download(&sum_squares, out.sum_squares, sizeof sum_squares));
    BERT_RETURN_IF_ERROR(be_.download(&found, out.found_inf, sizeof found));
    if (found && scaling_) {  // overflow: skip the update and back off
      scale_ *= o_.loss_scaling.backoff;
      good_steps_ = 0;
      BERT_RETURN_IF_ERROR(arena_.zero_grads());
      return std::numeric_limits<double>::infinity();
    }
    if (found) return first_nonfinite_gradient();
    kc::MultiTensorStep st;
    st.lr = lr, st.beta1 = opt.beta1, st.beta2 = opt.beta2, st.eps = opt.eps, st.weight_decay = opt.weight_decay;
    st.step = steps_ + 1;
    st.grad_factor = opt.max_grad_norm > 0 ? out.clip_factor : nullptr;
    const bool ok = opt.kind == OptimizerKind::kAdamW ? kc::adamw_step_multi(list, st, stream_)
                                                      : kc::lamb_step_multi(list, st, stream_, ws);
    if (!ok) return failed("the optimizer step");
    BERT_RETURN_IF_ERROR(arena_.zero_grads());
    BERT_RETURN_IF_ERROR(be_.synchronize());
    ++steps_;
    if (scaling_ && ++good_steps_ >= o_.loss_scaling.growth_interval) {
      const float grown = scale_ * o_.loss_scaling.growth;
      if (std::isfinite(grown)) scale_ = grown;
      good_steps_ = 0;
    }
    return std::sqrt(sum_squares);
  }
  int64_t steps() const override { return steps_; }
  float loss_scale() const override { return scale_; }

  Result<std::vector<std::pair<std::string, Tensor>>> state() const override {
    std::vector<std::pair<std::string, Tensor>> out;
    Tensor step = make_owned_tensor(DType::kI64, {1});
    *static_cast<int64_t*>(mutable_data(step)) = steps_;
    out.emplace_back("opt.step", step);
    Tensor scaling = make_owned_tensor(DType::kF32, {2});  // the loss scale and its clean-step count
    static_cast<float*>(mutable_data(scaling))[0] = scale_;
    static_cast<float*>(mutable_data(scaling))[1] = static_cast<float>(good_steps_);
    out.emplace_back("opt.loss_scaling", scaling);
    for (const ParamArena::Entry& e : arena_.entries())
      for (auto [prefix, region] : {std::pair{"opt.m.", arena_.first_moments()}, std::pair{"opt.v.", arena_.second_moments()}}) {
        Tensor t = make_owned_tensor(DType::kF32, {e.n});
        BERT_RETURN_IF_ERROR(be_.download(mutable_data(t), region + e.offset, sizeof(float) * e.n));
        out.emplace_back(prefix + e.name, t);
      }
    return out;
  }

  Status load_state(const TensorMap& state) override {
    auto step = state.find("opt.step");
    if (step == state.end() || step->second.dtype != DType::kI64 || step->second.numel() != 1)
      return format_error("checkpoint has no optimizer step count 'opt.step' (I64 [1])");
    for (const ParamArena::Entry& e : arena_.entries())
      for (const char* prefix : {"opt.m.", "opt.v."}) {
        auto t = state.find(prefix + e.name);
        if (t == state.end() || t->second.dtype != DType::kF32 || t->second.numel() != e.n)
          return format_error("checkpoint has no optimizer state '" + std::string(prefix) + e.name + "' (F32 [" +
                              std::to_string(e.n) + "])");
      }
    for (const ParamArena::Entry& e : arena_.entries()) {
      BERT_RETURN_IF_ERROR(
          be_.upload(arena_.first_moments() + e.offset, state.at("opt.m." + e.name).data, sizeof(float) * e.n));
      BERT_RETURN_IF_ERROR(
          be_.upload(arena_.second_moments() + e.offset, state.at("opt.v." + e.name).data, sizeof(float) * e.n));
    }
    steps_ = step->second.as<int64_t>()[0];
    if (auto ls = state.find("opt.loss_scaling"); ls != state.end() && ls->second.dtype == DType::kF32 &&
                                                  ls->second.numel() == 2 && scaling_) {
      scale_ = ls->second.as<float>()[0];
      good_steps_ = static_cast<int64_t>(ls->second.as<float>()[1]);
    }
    return be_.synchronize();
  }

 private:
  Status failed(const char* what) const {
    return internal_error(std::string("device cuda: ") + what + ": " + kc::cuda_last_error());
  }
  Status first_nonfinite_gradient() {
    BERT_ASSIGN_OR_RETURN(const float* g, arena_.host_grads());
    for (const ParamArena::Entry& e : arena_.entries())
      for (int64_t i = 0; i < e.n; ++i)
        if (!std::isfinite(g[e.offset + i]))
          return invalid_argument("the gradient of '" + e.name + "' is not finite; nothing was changed");
    return invalid_argument("the global gradient norm is not finite; nothing was changed");
  }

  runtime::Backend& be_;
  ParamArena& arena_;
  TrainerOptions o_;
  Optimizer checker_;  // the option and lr checks of the host optimizer
  void* stream_ = nullptr;
  char* scratch_ = nullptr;
  size_t reduce_bytes_ = 0;
  kc::DeviceTensorListStorage list_;
  int64_t steps_ = 0;
  bool scaling_ = false;
  float scale_ = 1.f;
  int64_t good_steps_ = 0;
};

}  // namespace

namespace cuda_plugin {

Result<std::unique_ptr<ParamOptimizer>> make_cuda_optimizer(runtime::Backend& backend, ParamArena& arena,
                                                            const TrainerOptions& options) {
  auto opt = std::make_unique<CudaOptimizer>(backend, arena, options);
  BERT_RETURN_IF_ERROR(opt->init());
  return std::unique_ptr<ParamOptimizer>(std::move(opt));
}

}  // namespace cuda_plugin

}  // namespace bert
