// The optimizer of a Trainer over its ParamArena, on the arena's backend: AdamW or LAMB with global-norm
// clipping, and (on devices whose GEMMs compute in fp16) dynamic loss scaling. The host version wraps
// engine/train/optimizer.h over the arena's regions; the CUDA version (engine/runtime/cuda/
// cuda_optimizer.cc) runs the multi-tensor kernels of kernels/cuda with its moments on the device.
// Both write the same checkpoint state ("opt.step", "opt.m.<name>", "opt.v.<name>").
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "bert/comm.h"
#include "bert/train.h"
#include "engine/runtime/backend.h"
#include "engine/train/param_arena.h"
#include "engine/core/tensor.h"

namespace bert {

class ParamOptimizer {
 public:
  virtual ~ParamOptimizer() = default;
  // One update from the accumulated gradients, which are zeroed after it. Returns the global gradient
  // norm before clipping, or +inf when dynamic loss scaling found an overflow and skipped the step.
  // A non-finite gradient without loss scaling is an error naming the first bad parameter.
  virtual Result<double> step(float lr) = 0;
  virtual int64_t steps() const = 0;
  virtual float loss_scale() const = 0;  // 1 unless dynamic loss scaling is on
  virtual Result<std::vector<std::pair<std::string, Tensor>>> state() const = 0;
  // Checks every tensor before anything changes; other entries of `state` are ignored.
  virtual Status load_state(const TensorMap& state) = 0;
};

// The optimizer for `arena` on `backend` (which must outlive it), per the trainer's options. With
// ZeRO (the arena's layout has zero_stage >= 1) it updates this rank's shard from the reduce-scattered
// gradients and all-gathers the parameters over `comm`; its state() and load_state() are then
// collective and use the one-process layout (whole tensors).
Result<std::unique_ptr<ParamOptimizer>> make_param_optimizer(runtime::Backend& backend, ParamArena& arena,
                                                             const TrainerOptions& options,
                                                             Communicator* comm = nullptr);
// The CUDA one (engine/runtime/cuda/cuda_optimizer.cc; an error in builds without CUDA).
Result<std::unique_ptr<ParamOptimizer>> make_cuda_optimizer(runtime::Backend& backend, ParamArena& arena,
                                                            const TrainerOptions& options);

}  // namespace bert
