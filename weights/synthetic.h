// Seeded synthetic models of real shapes, for benchmarks and tests when no checkpoint is at hand.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "bert/status.h"
#include "weights/model_file.h"

namespace bert {

// config.json text for a named shape (vocab 30522 and 512 positions unless noted):
//   bert-base (L12 H768 A12 I3072), bert-large (L24 H1024 A16 I4096), bert-tiny (L2 H128 A2 I512),
//   bert-mini (L4 H256 A4 I1024), roberta-base (L12 H768, vocab 50265, 514 positions, pad 1),
//   distilbert-base (L6 H768 A12 I3072), electra-small (E128 H256 L12 A4 I1024),
//   albert-base (E128 H768 L12 A12 I3072, one shared layer, vocab 30000, gelu_new),
//   squeezebert-uncased (L12 H768 A12 I3072, vocab 30528, groups q/k/v 4, intermediate 4, output 4).
// `architecture` picks the head (e.g. "BertForSequenceClassification"); empty: the family's base model.
Result<std::string> synthetic_config_json(const std::string& shape, const std::string& architecture = "");
// The shape names above, in that order.
const std::vector<std::string>& synthetic_shapes();

// Every parameter of `config` filled from a seeded normal(0, 0.02) (LayerNorm gamma 1, biases small),
// F32, engine names. Same seed, same weights.
ModelSource synthetic_model(const ModelConfig& config, uint32_t seed);

}  // namespace bert
