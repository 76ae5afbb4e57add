// Optimizer bookkeeping: parameter registry, clipping, the AdamW / LAMB steps over the kernels of
// kernels/optimizer.h, the linear schedule and the checkpoint state.
#include "engine/train/optimizer.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "kernels/optimizer.h"

namespace bert {

namespace {

constexpr const char* kStepName = "opt.step";

std::string first_moment_name(const std::string& param) { return "opt.m." + param; }
std::string second_moment_name(const std::string& param) { return "opt.v." + param; }

// An error unless lo <= value < hi (NaN fails).
Status check_range(const char* what, float value, double lo, double hi) {
  if (value >= lo && value < hi) return Status::Ok();
  return invalid_argument(std::string("optimizer: ") + what + " = " + std::to_string(value) + " is outside [" +
                          std::to_string(lo) + ", " + std::to_string(hi) + ")");
}

// The checks of one saved F32 moment before anything is loaded.
Status check_moment(const TensorMap& state, const std::string& name, int64_t n) {
  const auto it = state.find(name);
  if (it == state.end()) return not_found("optimizer state: missing tensor '" + name + "'");
  const Tensor& t = it->second;
  if (t.dtype != DType::kF32) {
    return invalid_argument("optimizer state: tensor '" + name + "' has dtype " + std::string(dtype_name(t.dtype)) +
                            ", expected F32");
  }
  if (t.shape != std::vector<int64_t>{n}) {
    return invalid_argument("optimizer state: tensor '" + name + "' has shape " + shape_string(t.shape) +
                            ", expected " + shape_string({n}));
  }
  if (n > 0 && t.data == nullptr) return invalid_argument("optimizer state: tensor '" + name + "' has no data");
  return Status::Ok();
}

Tensor copy_to_tensor(const float* values, int64_t n) {
  Tensor t = make_owned_tensor(DType::kF32, {n});
  if (n) std::memcpy(mutable_data(t), values, static_cast<size_t>(n) * sizeof(float));
  return t;
}

}  // namespace

const char* train_precision_name(TrainPrecision p) {
  switch (p) {
    case TrainPrecision::kF32: return "fp32";
    case TrainPrecision::kTF32: return "tf32";
    case TrainPrecision::kF16: return "fp16";
    case TrainPrecision::kBF16: return "bf16";
  }
  return "?";
}

float LinearSchedule::lr_factor(int64_t step) const {
  if (step < warmup_steps) {
    return static_cast<float>(static_cast<double>(step) / static_cast<double>(std::max<int64_t>(1, warmup_steps)));
  }
  const double decay = static_cast<double>(total_steps - step) /
                       static_cast<double>(std::max<int64_t>(1, total_steps - warmup_steps));
  return static_cast<float>(std::max(0.0, decay));
}

Optimizer::Optimizer(const OptimizerOptions& options) : options_(options) {}

Status Optimizer::add(std::string name, float* param, float* grad, int64_t n, bool decay, float* m, float* v) {
  if (name.empty()) return invalid_argument("optimizer: a parameter needs a name");
  if (names_.count(name)) return invalid_argument("optimizer: parameter '" + name + "' is already registered");
  if (n < 0) return invalid_argument("optimizer: parameter '" + name + "' has negative size " + std::to_string(n));
  if (n > 0 && (param == nullptr || grad == nullptr)) {
    return invalid_argument("optimizer: parameter '" + name + "' has a null value or gradient buffer");
  }
  if (steps_ > 0) {
    return invalid_argument("optimizer: parameter '" + name + "' added after step " + std::to_string(steps_) +
                            "; register every parameter before the first step");
  }
  Param p;
  p.name = name;
  p.value = param;
  p.grad = grad;
  p.n = n;
  p.decay = decay;
  if (m && v) {
    p.m = m, p.v = v;
  } else {
    p.owned_m.assign(static_cast<size_t>(n), 0.f), p.owned_v.assign(static_cast<size_t>(n), 0.f);
    p.m = p.owned_m.data(), p.v = p.owned_v.data();
  }
  if (options_.kind == OptimizerKind::kLamb && static_cast<size_t>(n) > lamb_scratch_.size()) {
    lamb_scratch_.resize(static_cast<size_t>(n));
  }
  names_.insert(std::move(name));
  params_.push_back(std::move(p));
  return Status::Ok();
}

Status Optimizer::check_step_arguments(float lr) const {
  constexpr double kInf = INFINITY;
  BERT_RETURN_IF_ERROR(check_range("lr", lr, 0.0, kInf));
  BERT_RETURN_IF_ERROR(check_range("beta1", options_.beta1, 0.0, 1.0));
  BERT_RETURN_IF_ERROR(check_range("beta2", options_.beta2, 0.0, 1.0));
  BERT_RETURN_IF_ERROR(check_range("eps", options_.eps, 0.0, kInf));
  BERT_RETURN_IF_ERROR(check_range("weight_decay", options_.weight_decay, 0.0, kInf));
  BERT_RETURN_IF_ERROR(check_range("max_grad_norm", options_.max_grad_norm, 0.0, kInf));
  return Status::Ok();
}

Result<double> Optimizer::step(float lr, bool zero_grads) {
  BERT_RETURN_IF_ERROR(check_step_arguments(lr));

  // (a) A gradient's sum of squares (in double) is finite exactly when all its elements are: even
  // FLT_MAX^2 times any realistic count fits in a double. So one pass gives both the check and the norm.
  grad_sum_squares_.resize(params_.size());
  for (size_t i = 0; i < params_.size(); ++i) {
    grad_sum_squares_[i] = kernels::sum_squares_f32(params_[i].grad, params_[i].n);
  }
  double total = 0.0;  // (b) the global norm, in registration order
  for (double s : grad_sum_squares_) total += s;
  if (reduce_norm_) BERT_RETURN_IF_ERROR(reduce_norm_(&total));
  for (size_t i = 0; i < params_.size(); ++i) {
    if (!std::isfinite(grad_sum_squares_[i])) {
      return invalid_argument("optimizer step " + std::to_string(steps_ + 1) + ": the gradient of '" +
                              params_[i].name + "' holds NaN or Inf; nothing was updated");
    }
  }
  if (!std::isfinite(total))
    return invalid_argument("optimizer step " + std::to_string(steps_ + 1) +
                            ": a gradient on another rank holds NaN or Inf; nothing was updated");

  // clip_grad_norm_ semantics. AdamW with zero_grads applies the factor in its update pass (the same
  // float products), as nobody sees the clipped gradients.
  const bool fused = zero_grads && options_.kind == OptimizerKind::kAdamW;
  const double norm = std::sqrt(total);
  float clip = 1.f;
  if (options_.max_grad_norm > 0.f) {
    const double factor = static_cast<double>(options_.max_grad_norm) / (norm + 1e-6);
    if (factor < 1.0) clip = static_cast<float>(factor);
  }
  if (clip < 1.f && !fused) {
    for (Param& p : params_) kernels::scale_f32(p.grad, p.n, clip);
  }

  // (c) The update, (d) the count, (e) the zeroing.
  const int64_t t = steps_ + 1;
  for (Param& p : params_) {
    if (options_.kind == OptimizerKind::kLamb) {
      lamb_update(p, lr, t);
    } else {
      adamw_update(p, lr, t, fused ? clip : 1.f, fused);
    }
  }
  steps_ = t;
  if (zero_grads && !fused) this->zero_grads();
  return norm;
}

void Optimizer::adamw_update(Param& p, float lr, int64_t step, float grad_scale, bool zero_grad) {
  kernels::AdamWStepArgs a;
  a.param = p.value;
  a.grad = p.grad;
  a.m = p.m;
  a.v = p.v;
  a.n = p.n;
  a.step = step;
  a.lr = lr;
  a.beta1 = options_.beta1;
  a.beta2 = options_.beta2;
  a.eps = options_.eps;
  a.weight_decay = p.decay ? options_.weight_decay : 0.f;
  a.grad_scale = grad_scale;
  a.zero_grad = zero_grad;
  kernels::adamw_step_f32(a);
}

void Optimizer::lamb_update(Param& p, float lr, int64_t step) {
  float* update = lamb_scratch_.data();
  kernels::LambUpdateArgs a;
  a.param = p.value;
  a.grad = p.grad;
  a.m = p.m;
  a.v = p.v;
  a.update = update;
  a.n = p.n;
  a.step = step;
  a.beta1 = options_.beta1;
  a.beta2 = options_.beta2;
  a.eps = options_.eps;
  a.weight_decay = p.decay ? options_.weight_decay : 0.f;
  kernels::lamb_update_f32(a);

  // apex (use_nvlamb=False): the trust ratio ||p|| / ||u|| only where weight decay applies, and 1
  // when either norm is 0.
  double trust_ratio = 1.0;
  if (a.weight_decay != 0.f) {
    const double param_norm = std::sqrt(kernels::sum_squares_f32(p.value, p.n));
    const double update_norm = std::sqrt(kernels::sum_squares_f32(update, p.n));
    if (param_norm > 0.0 && update_norm > 0.0) trust_ratio = param_norm / update_norm;
  }
  kernels::lamb_apply_f32(p.value, update, p.n, static_cast<float>(lr * trust_ratio));
}

void Optimizer::zero_grads() {
  for (Param& p : params_) std::fill(p.grad, p.grad + p.n, 0.f);
}

std::vector<std::pair<std::string, Tensor>> Optimizer::state() const {
  std::vector<std::pair<std::string, Tensor>> out;
  out.reserve(1 + 2 * params_.size());
  Tensor step = make_owned_tensor(DType::kI64, {1});
  *static_cast<int64_t*>(mutable_data(step)) = steps_;
  out.emplace_back(kStepName, std::move(step));
  for (const Param& p : params_) {
    out.emplace_back(first_moment_name(p.name), copy_to_tensor(p.m, p.n));
    out.emplace_back(second_moment_name(p.name), copy_to_tensor(p.v, p.n));
  }
  return out;
}

Status Optimizer::load_state(const TensorMap& state) {
  // Check everything first so that a bad map changes nothing.
  const auto step_it = state.find(kStepName);
  if (step_it == state.end()) return not_found(std::string("optimizer state: missing tensor '") + kStepName + "'");
  const Tensor& step = step_it->second;
  if (step.dtype != DType::kI64 || step.numel() != 1 || step.data == nullptr) {
    return invalid_argument(std::string("optimizer state: tensor '") + kStepName + "' has dtype " +
                            std::string(dtype_name(step.dtype)) + " and shape " + shape_string(step.shape) +
                            ", expected one I64");
  }
  int64_t steps = 0;
  std::memcpy(&steps, step.data, sizeof steps);
  if (steps < 0) {
    return invalid_argument(std::string("optimizer state: tensor '") + kStepName + "' holds " +
                            std::to_string(steps) + ", expected >= 0");
  }
  for (const Param& p : params_) {
    BERT_RETURN_IF_ERROR(check_moment(state, first_moment_name(p.name), p.n));
    BERT_RETURN_IF_ERROR(check_moment(state, second_moment_name(p.name), p.n));
  }

  for (Param& p : params_) {
    const size_t bytes = static_cast<size_t>(p.n) * sizeof(float);
    if (bytes == 0) continue;
    std::memcpy(p.m, state.at(first_moment_name(p.name)).data, bytes);
    std::memcpy(p.v, state.at(second_moment_name(p.name)).data, bytes);
  }
  steps_ = steps;
  return Status::Ok();
}

}  // namespace bert
