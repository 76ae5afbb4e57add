// Training optimizers (AdamW, LAMB) with gradient clipping, and the linear warmup/decay learning-rate
// schedule's factor. Internal to the engine. The per-tensor math is in kernels/optimizer.h; this is the
// bookkeeping: registered parameters, their moments, the step count and the checkpoint state.
//
//   Optimizer opt({.kind = OptimizerKind::kAdamW, .lr = 5e-5f});
//   opt.add("bert.encoder.layer.0.attention.self.query.weight", w, dw, n, /*decay=*/true);
//   LinearSchedule schedule{.warmup_steps = 1000, .total_steps = 100000};
//   ... forward/backward accumulate into the gradient buffers ...
//   Result<double> grad_norm = opt.step(opt.options().lr * schedule.lr_factor(opt.steps()));
//   opt.zero_grads();
//
// Deterministic: the same sequence of calls gives bit-identical parameters whatever the number of
// OpenMP threads.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <unordered_set>
#include <utility>
#include <vector>

#include "bert/status.h"
#include "bert/train.h"
#include "engine/core/tensor.h"

namespace bert {

// OptimizerKind, OptimizerOptions and LinearSchedule (transformers' get_linear_schedule_with_warmup;
// lr_factor is defined in optimizer.cc) are public, in bert/train.h. Semantics this file relies on:
//  - OptimizerOptions.lr is the base rate; step() takes the rate to use (base * schedule factor).
//  - LinearSchedule::lr_factor(step) takes the number of updates already made (LambdaLR): update k
//    (0-based) runs with lr_factor(k), so the first update of a warmup runs with lr 0 (moments and
//    the step count still advance, as in PyTorch).
//  - eps defaults to AdamW's 1e-8; LAMB users usually pass 1e-6 (NVIDIA's BERT recipe).

class Optimizer {
 public:
  explicit Optimizer(const OptimizerOptions& options = {});
  Optimizer(const Optimizer&) = delete;
  Optimizer& operator=(const Optimizer&) = delete;
  Optimizer(Optimizer&&) = default;
  Optimizer& operator=(Optimizer&&) = default;

  // Registers a parameter and its gradient buffer (n floats each, owned by the caller and alive as
  // long as the Optimizer is used; they must not overlap). decay = false for biases and LayerNorm
  // weights. The moments live in `m` and `v` (n floats each, zeroed by the caller: a trainer's
  // parameter arena) or, when those are null, in buffers the optimizer allocates (zero). Errors: an
  // empty or duplicate name, n < 0, null buffers, or a call after the first step (the step count,
  // which drives bias correction, is shared).
  Status add(std::string name, float* param, float* grad, int64_t n, bool decay, float* m = nullptr,
             float* v = nullptr);

  // One update of every registered parameter with learning rate `lr`:
  //  (a) if a gradient holds NaN or Inf, returns an error naming the first such parameter in
  //      registration order and changes nothing (parameters, gradients, moments, step count);
  //  (b) computes the global L2 norm of all gradients (returned, before clipping) and, when
  //      max_grad_norm > 0, clips as torch.nn.utils.clip_grad_norm_ does: the gradients are scaled
  //      by max_grad_norm / (norm + 1e-6) when that factor is below 1;
  //  (c) the AdamW or LAMB update of each parameter (with the clipped gradients; weight decay only
  //      where decay = true; LAMB's trust ratio ||p|| / ||u|| only where weight decay applies and
  //      both norms are > 0, else 1);
  //  (d) steps() += 1;
  //  (e) with zero_grads, every gradient is set to 0 (zero_grads() below), AdamW's in the update's own
  //      pass, with the clipping folded in too (the clipped gradients are then never written).
  // Invalid options or lr (betas outside [0, 1), a negative eps, weight decay or max_grad_norm, a
  // negative or non-finite lr) are reported before anything changes.
  Result<double> step(float lr, bool zero_grads = false);

  // Sharded parameters (ZeRO): `reduce` turns this rank's sum of squared gradients into the sum over
  // every rank (NaN when any rank holds a NaN or Inf), so that clipping and the finite check are
  // global. Every rank's step() calls it exactly once, before anything changes.
  void set_norm_reducer(std::function<Status(double* sum_squares)> reduce) { reduce_norm_ = std::move(reduce); }

  // The option and lr checks step() starts with (also for the CUDA trainer's device optimizer).
  Status check_step_arguments(float lr) const;

  // Sets every registered gradient to 0.
  void zero_grads();

  int64_t steps() const { return steps_; }
  // The step count alone (a sharded optimizer restoring its moments itself); >= 0.
  Status set_steps(int64_t steps) {
    if (steps < 0) return format_error("optimizer step count " + std::to_string(steps) + " is negative");
    steps_ = steps;
    return Status::Ok();
  }
  const OptimizerOptions& options() const { return options_; }
  size_t num_params() const { return params_.size(); }

  // Checkpoint state (copies): "opt.step" (I64, shape [1]) and, per parameter in registration order,
  // "opt.m.<name>" and "opt.v.<name>" (F32, shape [n]).
  std::vector<std::pair<std::string, Tensor>> state() const;
  // Restores what state() saved into an Optimizer with the same parameters registered. Every
  // tensor is checked (presence, dtype, shape) before anything changes; the error names the first
  // wrong one. Other entries of the map (model weights in the same checkpoint) are ignored.
  Status load_state(const TensorMap& state);

 private:
  struct Param {
    std::string name;
    float* value = nullptr;
    float* grad = nullptr;
    int64_t n = 0;
    bool decay = false;
    float* m = nullptr;  // first and second moments (external, or owned below)
    float* v = nullptr;
    std::vector<float> owned_m, owned_v;
  };

  void adamw_update(Param& p, float lr, int64_t step, float grad_scale, bool zero_grad);
  void lamb_update(Param& p, float lr, int64_t step);

  OptimizerOptions options_;
  std::vector<Param> params_;
  std::unordered_set<std::string> names_;
  std::vector<double> grad_sum_squares_;  // per parameter, scratch for step()
  std::vector<float> lamb_scratch_;       // LAMB's raw update u, as long as the largest parameter
  int64_t steps_ = 0;
  std::function<Status(double*)> reduce_norm_;
};

}  // namespace bert
