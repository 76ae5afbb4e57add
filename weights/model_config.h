// The model description the engine runs from, parsed and validated from a HuggingFace config.json.
// One description for every architecture: fields that do not apply keep their defaults.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "bert/status.h"

namespace bert {

// What sits on top of the encoder.
enum class HeadKind {
  kNone,                    // BertModel: hidden states + pooler
  kSequenceClassification,  // pooler -> classifier: logits [batch, num_labels]
  kTokenClassification,     // classifier per token: logits [batch, seq, num_labels]
  kQuestionAnswering,       // qa_outputs per token: start_logits, end_logits [batch, seq]
  kMaskedLM,                // transform + tied decoder: logits [batch, seq, vocab]
  kPreTraining,             // MLM + NSP: prediction_logits, seq_relationship_logits
};
const char* head_kind_name(HeadKind h);

// The feed-forward activation named by config.json's hidden_act.
enum class HiddenAct { kGeluErf, kGeluTanh, kRelu, kGeluQuick };
const char* hidden_act_name(HiddenAct a);

struct ModelConfig {
  std::string model_type;    // "bert"
  std::string architecture;  // e.g. "BertForSequenceClassification"; empty when config.json names none
  HeadKind head = HeadKind::kNone;
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t num_layers = 0;
  int64_t num_heads = 0;
  int64_t intermediate_size = 0;
  int64_t max_position_embeddings = 0;
  int64_t type_vocab_size = 0;
  int64_t pad_token_id = 0;
  int64_t num_labels = 2;
  float layer_norm_eps = 1e-12f;
  HiddenAct hidden_act = HiddenAct::kGeluErf;
  std::vector<std::string> labels;  // id2label in id order (LABEL_i when config.json has none)
  std::string json;                 // the config.json text it was parsed from

  int64_t head_dim() const { return hidden_size / num_heads; }
  bool has_pooler() const {
    return head == HeadKind::kNone || head == HeadKind::kSequenceClassification ||
           head == HeadKind::kPreTraining;
  }
  bool has_mlm() const { return head == HeadKind::kMaskedLM || head == HeadKind::kPreTraining; }
};

// Parses config.json text. `source` names the file in error messages.
// Unknown model_type / architecture / hidden_act, or an option this engine does not implement
// (relative position embeddings, decoder mode, ...) is an error naming it.
Result<ModelConfig> parse_model_config(std::string_view json_text, const std::string& source);
Result<ModelConfig> read_model_config(const std::string& path);

// HeadKind for an architecture name ("BertForMaskedLM"), or an error naming it.
Result<HeadKind> head_for_architecture(const std::string& architecture);

}  // namespace bert
