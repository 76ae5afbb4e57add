// Making models without an engine file on disk, and writing engine files: seeded synthetic models
// from a named shape or a config.json text, models from in-memory bytes or tensors, checkpoint
// conversion (HF -> engine file, engine file -> HF directory). Public header for tools, benches and
// apps; no oneDNN or CUDA types; errors are values.
//
//   auto model = bert::LoadSynthetic({.preset = "bert-tiny", .architecture = "BertForMaskedLM"});
//   auto report = bert::ConvertCheckpoint("hf_dir", "model.bert", {.dtype = bert::DType::kF16});
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "bert/dtype.h"
#include "bert/engine.h"
#include "bert/status.h"
#include "bert/tensors_file.h"

namespace bert {

// The shape names LoadSynthetic knows, in a fixed order: bert-base, bert-large, bert-tiny, bert-mini,
// roberta-base, distilbert-base, electra-small, albert-base, squeezebert-uncased.
const std::vector<std::string>& SyntheticPresets();

// A model with seeded random weights (normal(0, 0.02), LayerNorm gamma 1): same spec, same weights.
struct SyntheticSpec {
  std::string preset{};        // one of SyntheticPresets() ...
  std::string config_json{};   // ... or a config.json text (exactly one of the two)
  std::string architecture{};  // with a preset: the head, e.g. "BertForSequenceClassification" (empty: base model)
  uint32_t seed = 1234;
  // Optional WordPiece vocab embedded in the model: a vocab.txt path, or the tokens in id order.
  std::string vocab_path{};
  std::vector<std::string> vocab{};
  bool lower_case = true;
  // true: the vocab must have exactly vocab_size tokens (training draws ids from all of them);
  // false: at most vocab_size.
  bool vocab_must_match = false;
  std::string origin{};  // names the spec in error messages (default: the preset, or "config.json text")
};

// The synthetic model, loaded (no file is written).
Result<std::shared_ptr<const Model>> LoadSynthetic(const SyntheticSpec& spec, const LoadOptions& options = {});

// A model from memory: the bytes of an engine file (as tools/convert_weights writes it), validated as
// Model::Load validates a file. `name` stands for the bytes in error messages.
Result<std::shared_ptr<const Model>> LoadFromMemory(std::span<const uint8_t> engine_file_bytes,
                                                    const LoadOptions& options = {},
                                                    const std::string& name = "<memory>");

// A model from a config.json text and its tensors, under HuggingFace's names (as in a
// model.safetensors: the tensors are checked against the config, Q/K/V fused, converted to F32) or
// already in the engine's layout (hf_names = false: the names an engine file holds).
struct ModelParts {
  std::string config_json{};
  std::vector<std::pair<std::string, HostTensor>> tensors{};
  bool hf_names = true;
  std::vector<std::string> vocab{};  // optional WordPiece vocab, id order
  bool lower_case = true;
  std::string origin = "<memory>";  // names the parts in error messages
};
Result<std::shared_ptr<const Model>> LoadFromMemory(const ModelParts& parts, const LoadOptions& options = {});

// What a conversion wrote.
struct ConvertReport {
  std::string model_type{};    // config.json's model_type
  std::string architecture{};  // may be empty
  std::string head{};          // "none", "sequence_classification", ...
  int64_t num_layers = 0, hidden_size = 0;
  int64_t parameters = 0;    // elements of every tensor written
  size_t vocab_tokens = 0;   // 0: the file cannot tokenize text
  std::vector<std::string> unused_hf_tensors{};  // checkpoint tensors the model does not use
};

struct ConvertOptions {
  DType dtype = DType::kF32;  // F32, F16, BF16, or I8 (the encoder's linear weights per-channel int8, the rest F32)
  std::string vocab_path{};     // embeds (or replaces) the vocab; at most vocab_size tokens
  bool allow_non_finite = false;  // convert weights that are NaN or infinite (an error naming the tensor otherwise)
};

// An HF directory (or one weights file in it: model.safetensors, pytorch_model.bin, an index) or an
// engine file -> one engine file at dst_path (written atomically).
Result<ConvertReport> ConvertCheckpoint(const std::string& src_path, const std::string& dst_path,
                                        const ConvertOptions& options = {});
// A synthetic model written as an engine file (spec.vocab / vocab_path embedded as in LoadSynthetic).
Result<ConvertReport> WriteSynthetic(const SyntheticSpec& spec, const std::string& dst_path, DType dtype = DType::kF32);
// Anything Model::Load reads -> an HF directory transformers loads (config.json, model.safetensors, and
// vocab.txt + tokenizer_config.json when the model has a vocab). Creates dst_dir if needed.
Result<ConvertReport> ConvertToHf(const std::string& src_path, const std::string& dst_dir);

}  // namespace bert
