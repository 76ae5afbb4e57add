// Where a model comes from, and the engine's own model file.
//
// The engine file is one safetensors container (any safetensors tool reads it) whose __metadata__
// holds: format = "bert-engine", format_version = "1", config = the HF config.json text,
// vocab = the WordPiece vocab joined by '\n' (may be empty), lower_case = "true" | "false".
// Its tensors use the engine's names and layout (weights/bert_layout.h), in F32, F16 or BF16.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "bert/status.h"
#include "weights/model_config.h"
#include "engine/core/tensor.h"

namespace bert {

inline constexpr const char* kEngineFormat = "bert-engine";
inline constexpr const char* kEngineFormatVersion = "1";

// A model ready for the engine: config, tokenizer vocab and engine-named tensors.
struct ModelSource {
  ModelConfig config;
  std::vector<std::string> vocab;  // empty when the source had no vocab.txt
  bool lower_case = true;
  TensorMap tensors;               // engine names (F32 from HF sources; as stored for engine files)
  std::vector<std::string> unused_hf_tensors;  // HF tensors the layout did not consume
  std::string origin;              // path it was read from
  std::string stored_dtype;        // "I8" when an engine file stored the encoder's linear weights as int8
};

// An HF directory: config.json, one of model.safetensors, model.safetensors.index.json,
// pytorch_model.bin, pytorch_model.bin.index.json (the first found, in that order, unless
// `weights_file` names one); vocab.txt and tokenizer_config.json if present.
Result<ModelSource> load_hf_directory(const std::string& dir, const std::string& weights_file = "");

// An engine file written by write_engine_file (validated against its own config). int8 weights (an I8
// tensor "<name>" with its per-output-channel scales "<name>.int8_scale", F32 [rows]) are dequantised to
// F32 here (q * scale), so everything above sees F32; stored_dtype says "I8".
Result<ModelSource> read_engine_file(const std::string& path);

// Either of the above: a directory is read as HF; a file is read as an engine file, unless it is
// an HF weights file (model.safetensors without engine metadata, pytorch_model.bin, *.index.json)
// with a config.json beside it, which is read as that HF directory with that weights file.
Result<ModelSource> load_model_source(const std::string& path);

// Writes an engine file; tensors (engine names, F32) are stored as `dtype` (F32, F16 or BF16).
// `extra` tensors and `extra_metadata` ride along (a training checkpoint's optimizer state); readers
// of the model ignore them. The write is atomic (temporary file + rename).
Status write_engine_file(const std::string& path, const ModelSource& model, DType dtype,
                         const std::vector<std::pair<std::string, Tensor>>& extra = {},
                         const std::map<std::string, std::string>& extra_metadata = {});

// Writes `model` back as an HF directory that transformers loads: config.json, model.safetensors
// (HF names and shapes; Q/K/V split; a tied decoder left for transformers to tie), and vocab.txt +
// tokenizer_config.json when the model has a vocab. Creates `dir` if needed.
Status write_hf_directory(const std::string& dir, const ModelSource& model);

}  // namespace bert
