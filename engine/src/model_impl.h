// Internal view of a loaded model: its description, the F32 weights on the host (bound per layer for
// the network) and, for device cuda, the same weights uploaded once into one device arena.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "bert/engine.h"
#include "engine/model/weights.h"
#include "engine/runtime/backend.h"
#include "kernels/cpu/dispatch.h"
#include "kernels/gemm.h"
#include "weights/model_file.h"

namespace bert {

// Checks a batch's values against the model: token ids inside the vocab, token types inside the
// type vocab (zeros only when the model has none), mask values 0/1. The error names the first bad
// entry as input_ids[b][s]. The caller checks the pointers and the batch x seq bounds.
Status validate_batch_values(const ModelConfig& config, const BatchInput& batch);

struct Model::Impl {
  ModelSource source;  // config, vocab, tensors (keeps mmaps alive)
  ModelInfo info;
  LoadOptions options;
  std::unique_ptr<float[]> arena;  // F32 copies of weights stored as F16/BF16 (one allocation)
  TensorMap f32;                   // every tensor as F32 (zero copy where the file held F32)
  BertWeights w;                   // host pointers into f32 (CPU packing attached)
  std::vector<kernels::PackedWeightsPtr> packed;  // owns the packed copies the pointers above use
  const kernels::CpuKernels* kernels = nullptr;
  // Device cuda: the backend that owns the upload, the weights arena and the device view of it.
  std::unique_ptr<runtime::Backend> device;
  runtime::DeviceBuffer device_arena;
  BertWeights device_w;

  // The weights the network reads on this model's device.
  const BertWeights& weights() const { return device ? device_w : w; }
};

// Builds a model from a source already in memory (synthetic weights, a converted checkpoint).
Result<std::shared_ptr<const Model>> load_model_from_source(ModelSource source, const LoadOptions& options = {});

// The backend a Session or Trainer of `model` runs on (a new one each: it owns GEMM plans / a stream).
Result<std::unique_ptr<runtime::Backend>> make_backend(const Model::Impl& model, runtime::GemmCompute compute);

}  // namespace bert
