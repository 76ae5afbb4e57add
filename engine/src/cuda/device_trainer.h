// The Trainer's CUDA side (built only with BERT_HAVE_CUDA): fp32 master parameters, gradients and
// optimizer moments in one device arena, the training-mode forward pass keeping what the backward
// needs, every head's loss, the backward pass and the fused multi-tensor AdamW / LAMB step with
// global-norm clipping, all on one stream. It mirrors engine/src/trainer.cc op for op (same dropout
// streams and sites, so the same seed drops the same elements as on the CPU). Plain C++: no CUDA
// types, so trainer.cc includes it. NEVER RUN ON A GPU YET (none was lent).
#pragma once

#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "bert/train.h"
#include "weights/tensor.h"

namespace bert {

struct ModelConfig;

namespace cuda {

// Parameters (or gradients) by engine name, as trainer.cc keeps them on the host.
using HostParams = std::map<std::string, std::vector<float>>;

class DeviceTrainer {
 public:
  // Uploads `params` (every parameter of `config`'s model, fp32) and plans the device buffers for
  // options.max_batch x options.max_seq. allow_tf32: fp32 GEMMs may use TF32 tensor cores.
  static Result<std::unique_ptr<DeviceTrainer>> Create(const ModelConfig& config, const HostParams& params,
                                                       const TrainerOptions& options, bool allow_tf32);
  ~DeviceTrainer();

  // Trainer::ForwardBackward on the GPU for a batch and labels already validated by the caller.
  // positions: host position ids (compute_position_ids); dropout_stream: the call's dropout seed
  // (trainer.cc derives it from TrainerOptions.seed and the call count). Returns the loss.
  Result<double> ForwardBackward(const BatchInput& in, const TrainLabels& y, float loss_scale,
                                 const int32_t* positions, uint64_t dropout_stream);
  Status ZeroGrad();
  // Optimizer::step semantics (options and lr already checked by the caller): an error naming the
  // first non-finite gradient (nothing changes), else the global norm before clipping; then the
  // gradients are zeroed. With fp16 loss scaling an overflow skips the update instead (+inf).
  Result<double> Step(float lr);
  int64_t steps() const;
  float loss_scale() const;

  // Copies the device parameters and / or gradients into host maps of the same names and sizes.
  Status Download(HostParams* params, HostParams* grads) const;
  // The optimizer's checkpoint state, named as Optimizer::state() names it ("opt.step",
  // "opt.m.<name>", "opt.v.<name>"), and its restore together with the parameters.
  Result<std::vector<std::pair<std::string, Tensor>>> OptimizerState() const;
  Status Restore(const HostParams& params, const TensorMap& state);

  // Device bytes held: parameters + gradients + moments, and the planned activations.
  size_t state_bytes() const;
  size_t workspace_bytes() const;

  struct Impl;

 private:
  explicit DeviceTrainer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace cuda
}  // namespace bert
