// The network, written once: embeddings, the encoder layer (forward and backward), the pooler and
// every head, over a runtime::Backend. A Session runs it in inference mode (no saved activations,
// fused bias + activation and residual + LayerNorm); a Trainer runs it in training mode (keeps what
// the backward needs, or only each layer's input with recomputation), then the head's loss and the
// backward into a gradient BertWeights. Attention is unfused (batched matmuls + masked softmax) or the
// backend's fused kernel when one is registered and asked for. With padding removal the encoder runs
// on the batch's real tokens packed together (attention per sequence through row offsets) and its
// states are scattered back to the padded layout for the heads and the outputs. One activation plan
// is made at creation for max_batch x max_seq and allocated once on the backend: running allocates
// nothing.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "bert/engine.h"
#include "bert/train.h"
#include "engine/model/weights.h"
#include "engine/runtime/backend.h"

namespace bert::model {

struct NetworkOptions {
  int max_batch = 1;
  int max_seq = 1;
  bool training = false;
  // Inference.
  bool keep_hidden_states = false;  // every hidden_states.i is an output (else two slots alternate)
  Pooling pooling = Pooling::kNone;
  bool normalize = false;
  // Training.
  float dropout = 0.f;
  bool recompute = false;  // keep each layer's input only; recompute its activations before its backward
  // Inference: run the encoder on the real tokens only (each sequence's real tokens must come first);
  // outputs come back in the padded layout with zeros at padded positions. Needs fused attention.
  bool remove_padding = false;
  // Both: use the backend's fused attention kernel (an error at creation when it has none).
  bool fused_attention = false;
  bool profile = false;  // wall time per op (synchronising the backend around each op)
};

// An output of the last forward, in backend memory.
struct DeviceOutput {
  std::string name;
  std::vector<int64_t> shape;
  const float* data = nullptr;
};

// What a model's head names its outputs (in the order a forward publishes them), and the check of
// the labels its loss reads: both asked of the head's one class (engine/model/heads.cc).
std::vector<std::string> head_output_names(const ModelConfig& config);
Status check_head_labels(const ModelConfig& config, const TrainLabels& labels, int64_t batch, int64_t seq);

class Network {
 public:
  // `w` (backend memory) must outlive the network; so must `backend`.
  static Result<std::unique_ptr<Network>> Create(const ModelConfig& config, const BertWeights& w,
                                                 runtime::Backend& backend, const NetworkOptions& options);
  ~Network();

  // Runs the forward over a batch the caller validated (shape within the plan, ids, types, mask).
  // `dropout_stream` picks the dropout masks (training). Publishes outputs() only when it succeeds.
  Status forward(const BatchInput& in, uint64_t dropout_stream = 0);
  const std::vector<DeviceOutput>& outputs() const;

  // Training, after forward() on the same batch: the head's loss as transformers computes it (labels
  // validated by the caller), and the gradient of loss * loss_scale ADDED into `grads` (backend
  // memory, same layout as the weights). Returns the (unscaled) loss.
  Result<double> backward(const BatchInput& in, const TrainLabels& labels, float loss_scale, const BertWeights& grads);

  // Called during backward() as gradients become final: with stage = num_layers after the head and
  // pooler, l after encoder layer l, -1 after the embeddings (data parallelism starts reducing a
  // bucket of gradients while the rest of the backward runs). The backend's queued work may still be
  // running (CUDA): a consumer orders itself after the backend's stream.
  void set_gradients_ready(std::function<void(int64_t stage)> f);

  size_t workspace_bytes() const;
  std::vector<OpProfile> profile() const;

  struct Impl;

 private:
  explicit Network(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace bert::model
