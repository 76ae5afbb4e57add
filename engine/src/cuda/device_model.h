// The engine's CUDA device (built only with BERT_HAVE_CUDA): a model's weights uploaded once into one
// device arena, and the runner a CUDA Session drives (engine/src/cuda/device_session.cc). Plain C++:
// no CUDA types, so model.cc and session.cc include it. NEVER RUN ON A GPU YET (none was lent).
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "bert/engine.h"
#include "kernels/activation.h"
#include "kernels/cuda/device_types.h"

namespace bert {

struct ModelConfig;
struct BertWeights;

namespace cuda {

using kernels::cuda::Elem;

// Carves one device allocation into 256-byte aligned buffers: add() them all, then allocate() once.
class DeviceWorkspace {
 public:
  DeviceWorkspace() = default;
  DeviceWorkspace(const DeviceWorkspace&) = delete;
  DeviceWorkspace& operator=(const DeviceWorkspace&) = delete;
  ~DeviceWorkspace();
  size_t add(size_t bytes) {
    size_t at = size_;
    size_ += (bytes + 255) / 256 * 256;
    return at;
  }
  bool allocate();  // false on failure (cuda_last_error says why)
  template <typename T = void>
  T* at(size_t offset) const {
    return reinterpret_cast<T*>(base_ + offset);
  }
  size_t bytes() const { return size_; }

 private:
  char* base_ = nullptr;
  size_t size_ = 0;
};

// One linear layer on the device: W [N, K / groups] and bias [N] in the model's element type; int8
// layers also hold W quantized per output channel, its scales and an fp32 bias.
struct DeviceLinear {
  const void* w = nullptr;
  const void* b = nullptr;
  int64_t N = 0, K = 0, groups = 1;
  const int8_t* w_i8 = nullptr;  // int8 models, encoder layers with groups == 1
  const float* w_scales = nullptr;
  const float* b_f32 = nullptr;
  explicit operator bool() const { return w != nullptr; }
};

struct DeviceLayerNorm {
  const void* gamma = nullptr;
  const void* beta = nullptr;
};

struct DeviceLayer {
  DeviceLinear qkv, q, k, v, out, ffn_in, ffn_out;
  DeviceLayerNorm attn_ln, ffn_ln;
};

// Mirrors BertWeights (engine/src/model_impl.h) with device pointers.
struct DeviceWeights {
  const void* word = nullptr;
  const void* position = nullptr;
  const void* token_type = nullptr;
  DeviceLayerNorm emb_ln;
  DeviceLinear emb_project;
  std::vector<DeviceLayer> layers;
  DeviceLinear pooler, pre_classifier, classifier, qa, mlm_transform, mlm_decoder, nsp, disc_dense, disc_out;
  DeviceLayerNorm mlm_ln;
};

// The device copy of a model: one arena, filled once through pinned staging.
struct DeviceModel {
  Precision precision = Precision::kF32;
  Elem dtype = Elem::kF32;  // element type of activations and non-int8 weights
  bool allow_tf32 = false;
  std::string device_name;
  void* arena = nullptr;
  size_t arena_bytes = 0;
  DeviceWeights w;
  ~DeviceModel();
};

// Uploads `w` (host fp32 pointers of `config`'s model) in the precision asked for. Fails with a clear
// error without a GPU, or when the GPU's memory is too small.
Result<std::shared_ptr<const DeviceModel>> upload_model(const ModelConfig& config, const BertWeights& w,
                                                        const LoadOptions& options);

// Where a CUDA session's outputs go: (name, shape, host data) as Session::Impl::publish takes them.
using PublishFn = std::function<void(std::string_view, std::initializer_list<int64_t>, const float*)>;

// The CUDA side of one session: device workspace planned for max_batch x max_seq, a stream, cuBLASLt
// plans, pinned host buffers for the inputs and outputs.
class DeviceRunner {
 public:
  static Result<std::unique_ptr<DeviceRunner>> Create(const ModelConfig& config,
                                                      std::shared_ptr<const DeviceModel> model,
                                                      const SessionOptions& options);
  ~DeviceRunner();
  // Runs a validated batch; `positions` are the host position ids (compute_position_ids). Publishes
  // host copies of the outputs (unless copy_outputs is false).
  Status Run(const BatchInput& in, const int32_t* positions, const PublishFn& publish);
  Status Calibrate(const BatchInput& in, const int32_t* positions);
  double last_run_seconds() const;
  size_t workspace_bytes() const;
  std::vector<OpProfile> profile() const;

  struct Impl;

 private:
  explicit DeviceRunner(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace cuda
}  // namespace bert
