// The trainable state of a model as contiguous regions on a backend: every parameter in one flat
// fp32 buffer, every gradient in a second one of the same layout and the optimizer's two moments in
// a third and fourth, with one name -> offset table.
// The network binds a BertWeights to each region; optimizers walk the table; the flat gradient
// buffer is what an all-reduce or a sharded optimizer works on. Host mirrors are kept only for
// backends whose memory the host cannot read.
//
// Data parallelism: parameters are laid out in the order the backward finishes their gradients (the
// head and pooler, the last encoder layer ... the first, the embeddings) and cut into buckets of
// about bucket_bytes, each padded to a multiple of 64 x world_size floats, so that a bucket can be
// reduced as soon as the backward has passed it and split evenly over the ranks. With ZeRO (stage >=
// 1) rank r owns block r of every bucket: the moments exist only for the owned blocks (the shard,
// shard_total() floats), and a shard gradient region receives the reduce-scattered gradients. With
// ZeRO-2 the whole gradients exist only while the backward writes them: each bucket's gradients get
// a place in a smaller region shared by buckets whose lifetimes (from the stage that first writes
// them to the stage after which they are final) do not overlap; each is reduce-scattered in place
// and its block added into the shard gradient region, which is all that lives between steps.
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
    size_t bucket = 0;  // index in buckets()
  };

  struct Layout {
    int world_size = 1, rank = 0;
    int64_t bucket_bytes = 25 << 20;
    int zero_stage = 0;  // >= 1: moments only for this rank's blocks
  };
  struct Bucket {
    size_t offset = 0, n = 0;  // floats, n a multiple of 64 x world_size
    int64_t ready_stage = 0;   // its gradients are final once the backward has passed this stage
    int64_t first_stage = 0;   // the backward's first stage that writes them
    size_t shard_offset = 0;   // where this rank's block (n / world_size floats) sits in the shard regions
    size_t grad_offset = 0;    // where its gradients sit in the gradient region (= offset below ZeRO-2)
    std::vector<size_t> shares_memory_with;  // ZeRO-2: earlier buckets whose gradient memory it reuses
  };

  // Copies the initial values (host F32 tensors, by engine name) into a new arena on `backend`.
  static Result<std::unique_ptr<ParamArena>> Create(runtime::Backend& backend, const ModelConfig& config,
                                                    const TensorMap& initial, const Layout& layout);
  // The backward's stage after which a parameter's gradient is final: num_layers for the head and
  // pooler, l for encoder layer l's own weights (ALBERT's shared ones: the first layer using them),
  // -1 for the embeddings (a tied decoder adds into the word embeddings until the end).
  static int64_t ready_stage(const ModelConfig& config, const std::string& name);
  // The backward's first stage that writes a parameter's gradient (num_layers for the word
  // embeddings when a tied decoder adds into them).
  static int64_t first_stage(const ModelConfig& config, const std::string& name);

  const std::vector<Entry>& entries() const { return entries_; }
  const Entry* find(const std::string& name) const;
  size_t total() const { return total_; }  // floats per region
  float* params() const { return params_; }
  float* grads() const { return grads_; }  // the gradient region (ZeRO-2: the shared bucket places)
  size_t grad_total() const { return grad_total_; }  // its floats (total() below ZeRO-2)
  float* bucket_grads(const Bucket& b) const { return grads_ + b.grad_offset; }
  // AdamW / LAMB m and v: laid out as the parameters (ZeRO stage 0) or as the shard (stage >= 1).
  float* first_moments() const { return moments_; }
  float* second_moments() const { return moments_ + moment_total_; }
  size_t moment_total() const { return moment_total_; }  // floats per moment region
  const Layout& layout() const { return layout_; }
  const std::vector<Bucket>& buckets() const { return buckets_; }
  size_t shard_total() const { return shard_total_; }  // floats of this rank's blocks (ZeRO)
  // ZeRO: this rank's block of every bucket, reduced over the ranks (ZeRO-2: summed over micro-steps).
  float* shard_grads() const { return shard_grads_; }
  size_t bytes() const { return bytes_; }               // everything the arena allocated
  // Views of the regions as the network reads them.
  const BertWeights& weights() const { return weights_; }
  const BertWeights& gradients() const { return gradients_; }

  Status zero_grads();  // the gradient region and the shard gradients
  // The regions as host memory (the arena itself on the CPU; a refreshed copy elsewhere). The
  // gradients are whole only below ZeRO-2 (an error there).
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
  float* moments_ = nullptr;
  float* shard_grads_ = nullptr;
  size_t moment_total_ = 0, shard_total_ = 0, grad_total_ = 0, bytes_ = 0;
  Layout layout_;
  std::vector<Bucket> buckets_;
  BertWeights weights_, gradients_;
  std::vector<float> host_params_, host_grads_;  // mirrors (non-host backends)
};

}  // namespace bert
