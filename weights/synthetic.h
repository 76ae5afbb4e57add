// Seeded synthetic models of real shapes, for benchmarks and tests when no checkpoint is at hand.
#pragma once

#include <cstdint>
#include <string>

#include "bert/status.h"
#include "weights/model_file.h"

namespace bert {

// config.json text for a named shape: "bert-base" (L12 H768 A12 I3072), "bert-large" (L24 H1024 A16 I4096),
// "bert-tiny" (L2 H128 A2 I512), "bert-mini" (L4 H256 A4 I1024); vocab 30522, 512 positions.
// `architecture` picks the head (e.g. "BertModel", "BertForSequenceClassification").
Result<std::string> synthetic_config_json(const std::string& shape, const std::string& architecture = "BertModel");

// Every parameter of `config` filled from a seeded normal(0, 0.02) (LayerNorm gamma 1, biases small),
// F32, engine names. Same seed, same weights.
ModelSource synthetic_model(const ModelConfig& config, uint32_t seed);

}  // namespace bert
