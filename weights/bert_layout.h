// The engine's parameter layout for every supported family: each tensor the engine reads, its shape
// from the config, and the HuggingFace parameter(s) it comes from. The families differ here only in
// names (tables in bert_layout.cc); conversion, validation and the way back to HF names all read it.
#pragma once

#include <string>
#include <vector>

#include "bert/status.h"
#include "weights/model_config.h"
#include "engine/core/tensor.h"

namespace bert {

struct ParamSpec {
  std::string name;                   // engine name, e.g. "layer.0.attn.qkv.weight"
  std::vector<std::string> hf_names;  // HF names, concatenated along dim 0 (Q, K, V fuse into one)
  std::vector<int64_t> shape;         // engine shape
  bool optional = false;              // the MLM decoder: absent or equal to the word embeddings = tied
  bool conv1d = false;                // HF stores it as a Conv1d weight: shape + [1]
  std::string hf_alias;               // another name the checkpoint may store it under (.bin's decoder.bias)
};

// The base-model prefix a family's task checkpoints use ("bert.", "roberta.", "transformer.", ...).
std::string hf_base_prefix(const ModelConfig& config);

// The parameters of a model with this config. `hf_prefix` is the base-model prefix the checkpoint
// uses (hf_base_prefix for models with a head, "" for a bare base model).
std::vector<ParamSpec> param_specs(const ModelConfig& config, const std::string& hf_prefix);
std::vector<ParamSpec> param_specs(const ModelConfig& config);  // with hf_base_prefix

// What a conversion from HF names produced.
struct ConvertedWeights {
  TensorMap tensors;                 // engine names -> F32 tensors
  std::vector<std::string> unused;   // HF tensors no spec consumed (reported, not fatal)
};

// Maps an HF checkpoint onto the engine layout: detects the prefix, checks every tensor's presence
// and shape against the config (the first mismatch is named), fuses Q/K/V, resolves the tied MLM
// decoder, and converts every tensor to F32. `source` names the checkpoint in messages.
Result<ConvertedWeights> hf_to_engine(const ModelConfig& config, const TensorMap& hf, const std::string& source);

// Checks engine-named tensors against the specs (presence, shape, float dtype).
Status validate_engine_tensors(const ModelConfig& config, const TensorMap& tensors, const std::string& source);

// Copies a F32/F16/BF16 tensor into a new F32 tensor (F32 input is returned as is, zero copy).
Result<Tensor> to_f32(const Tensor& t, const std::string& what);
// Converts a F32 tensor to F32, F16 or BF16 (round to nearest even).
Result<Tensor> from_f32(const Tensor& t, DType dtype, const std::string& what);

}  // namespace bert
