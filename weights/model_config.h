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
  kPreTraining,             // MLM + NSP (ALBERT: SOP): prediction_logits, seq_relationship_logits / sop_logits
  kDiscriminator,           // ELECTRA replaced-token detection: logits [batch, seq]
};
const char* head_kind_name(HeadKind h);

// An activation named by config.json (hidden_act / activation), or fixed by a head.
enum class HiddenAct { kGeluErf, kGeluTanh, kRelu, kGeluQuick, kTanh };
const char* hidden_act_name(HiddenAct a);

// The architecture families this engine runs. They share one forward pass; what differs is data
// (parameter names, position ids, head shapes and activations) and three pieces of code
// (factorised embedding projection, shared layers, grouped linears).
enum class ModelFamily { kBert, kRoberta, kDistilBert, kElectra, kAlbert, kSqueezeBert };
const char* model_family_name(ModelFamily f);  // the config.json model_type

// How position ids are made from input ids.
enum class PositionIds {
  kFromZero,      // 0, 1, 2, ... (BERT and most)
  kAfterPadding,  // RoBERTa: pad_token_id + 1 + index among non-pad tokens; pad tokens get pad_token_id
};

// Channel groups of SqueezeBERT's grouped 1x1 convolutions (all 1 for the other families).
struct LinearGroups {
  int64_t q = 1, k = 1, v = 1, post_attention = 1, intermediate = 1, output = 1;
  bool any() const { return q * k * v * post_attention * intermediate * output != 1; }
};

struct ModelConfig {
  std::string model_type;    // "bert", "roberta", "distilbert", "electra", "albert", "squeezebert"
  ModelFamily family = ModelFamily::kBert;
  std::string architecture;  // e.g. "BertForSequenceClassification"; empty when config.json names none
  HeadKind head = HeadKind::kNone;
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t num_layers = 0;
  int64_t num_heads = 0;
  int64_t intermediate_size = 0;
  int64_t max_position_embeddings = 0;
  int64_t type_vocab_size = 0;  // 0: the model has no token-type embeddings (DistilBERT)
  int64_t pad_token_id = 0;
  int64_t embedding_size = 0;   // width of the embedding tables (hidden_size unless factorised)
  bool embedding_projection = false;  // a linear embedding_size -> hidden_size after the embedding LayerNorm
  PositionIds position_ids = PositionIds::kFromZero;
  int64_t num_hidden_groups = 1;  // ALBERT: layer weight sets shared by the num_layers layers
  LinearGroups groups;            // SqueezeBERT
  int64_t num_labels = 2;
  float layer_norm_eps = 1e-12f;
  HiddenAct hidden_act = HiddenAct::kGeluErf;
  HiddenAct mlm_act = HiddenAct::kGeluErf;         // in the MLM head's transform
  bool classifier_on_pooler = true;                // sequence classification: pooler -> classifier, or
  HiddenAct classifier_act = HiddenAct::kTanh;     //   first token -> dense -> classifier_act -> classifier
  std::vector<std::string> labels;  // id2label in id order (LABEL_i when config.json has none)
  std::string json;                 // the config.json text it was parsed from

  bool has_pooler = true;

  int64_t head_dim() const { return hidden_size / num_heads; }
  bool has_mlm() const { return head == HeadKind::kMaskedLM || head == HeadKind::kPreTraining; }
  bool has_token_types() const { return type_vocab_size > 0; }
  // Distinct layer weight sets (num_hidden_groups for ALBERT, num_layers otherwise).
  int64_t num_layer_weights() const { return family == ModelFamily::kAlbert ? num_hidden_groups : num_layers; }
  // The weight set layer `layer` runs (ALBERT's int(layer / (num_layers / num_hidden_groups))).
  int64_t layer_weights_index(int64_t layer) const;
  // Longest sequence the position table allows (RoBERTa's positions start after pad_token_id).
  int64_t max_sequence_length() const;
  // The pre-training head's second output: "seq_relationship_logits" (NSP) or "sop_logits" (ALBERT).
  const char* sentence_head_output() const {
    return family == ModelFamily::kAlbert ? "sop_logits" : "seq_relationship_logits";
  }
};

// Parses config.json text. `source` names the file in error messages.
// Unknown model_type / architecture / hidden_act, or an option this engine does not implement
// (relative position embeddings, decoder mode, ALBERT inner groups, ...) is an error naming it.
Result<ModelConfig> parse_model_config(std::string_view json_text, const std::string& source);
Result<ModelConfig> read_model_config(const std::string& path);

// The family and head of an architecture name ("BertForMaskedLM"), or an error naming it.
struct ArchitectureInfo {
  ModelFamily family;
  HeadKind head;
};
Result<ArchitectureInfo> find_architecture(const std::string& architecture);

}  // namespace bert
