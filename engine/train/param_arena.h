// The trainable state of a model as contiguous regions on a backend: every parameter in one flat
// fp32 buffer, every gradient in a second one of the same layout and the optimizer's two moments in
// a third and fourth, with one name -> offset table for all four.
// The network binds a BertWeights to each region; optimizers walk the table; the flat gradient
// buffer is what an all-reduce or a sharded optimizer works on. Host mirrors are kept only for
// backends whose memory the host cannot read.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "engine/model/weights.h"
#include "engine/runtime/backend.h"
#include "engine/core/tensor.h"

namespace bert {

class ParamArena {
 public:
  struct Entry {
    std::string name;  // engine name
    std::vector<int64_t> shape;
    size_t offset = 0;  // floats from the start of a region (256-byte aligned)
    int64_t n = 0;
    bool decay = true;  // weight decay applies (not to biases and LayerNorm weights)
  };

  // Copies the initial values (host F32 tensors, by engine name) into a new arena on `backend`.
  static Result<std::unique_ptr<ParamArena>> Create(runtime::Backend& backend, const ModelConfig& config,
                                                    const TensorMap& initial);

  const std::vector<Entry>& entries() const { return entries_; }
  const Entry* find(const std::string& name) const;
  size_t total() const { return total_; }  // floats per region
  float* params() const { return params_; }
  float* grads() const { return grads_; }
  float* first_moments() const { return grads_ + total_; }    // AdamW / LAMB m
  float* second_moments() const { return grads_ + 2 * total_; }  // v
  // Views of the regions as the network reads them.
  const BertWeights& weights() const { return weights_; }
  const BertWeights& gradients() const { return gradients_; }

  Status zero_grads();
  // The regions as host memory (the arena itself on the CPU; a refreshed copy elsewhere).
  Result<const float*> host_params();
  Result<const float*> host_grads();
  // Replaces every parameter from host values laid out as the arena (total() floats).
  Status set_params(const float* host);

 private:
  runtime::Backend* backend_ = nullptr;
  std::vector<Entry> entries_;
  size_t total_ = 0;
  runtime::DeviceBuffer memory_;
  float* params_ = nullptr;
  float* grads_ = nullptr;
  BertWeights weights_, gradients_;
  std::vector<float> host_params_, host_grads_;  // mirrors (non-host backends)
};

}  // namespace bert
