// config.json -> ModelConfig for every supported family, each field checked for presence, type and consistency.
#include "weights/model_config.h"

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <tuple>

#include "weights/mapped_file.h"  // check_regular_file

namespace bert {

const char* head_kind_name(HeadKind h) {
  switch (h) {
    case HeadKind::kNone: return "none";
    case HeadKind::kSequenceClassification: return "sequence_classification";
    case HeadKind::kTokenClassification: return "token_classification";
    case HeadKind::kQuestionAnswering: return "question_answering";
    case HeadKind::kMaskedLM: return "masked_lm";
    case HeadKind::kPreTraining: return "pretraining";
    case HeadKind::kDiscriminator: return "discriminator";
  }
  return "?";
}

const char* hidden_act_name(HiddenAct a) {
  switch (a) {
    case HiddenAct::kGeluErf: return "gelu";
    case HiddenAct::kGeluTanh: return "gelu_new";
    case HiddenAct::kRelu: return "relu";
    case HiddenAct::kGeluQuick: return "quick_gelu";
    case HiddenAct::kTanh: return "tanh";
  }
  return "?";
}

const char* model_family_name(ModelFamily f) {
  switch (f) {
    case ModelFamily::kBert: return "bert";
    case ModelFamily::kRoberta: return "roberta";
    case ModelFamily::kDistilBert: return "distilbert";
    case ModelFamily::kElectra: return "electra";
    case ModelFamily::kAlbert: return "albert";
    case ModelFamily::kSqueezeBert: return "squeezebert";
  }
  return "?";
}

int64_t ModelConfig::layer_weights_index(int64_t layer) const {
  if (family != ModelFamily::kAlbert) return layer;
  // transformers: int(i / (num_hidden_layers / num_hidden_groups)), in floating point.
  return static_cast<int64_t>(static_cast<double>(layer) /
                              (static_cast<double>(num_layers) / static_cast<double>(num_hidden_groups)));
}

int64_t ModelConfig::max_sequence_length() const {
  return position_ids == PositionIds::kAfterPadding ? max_position_embeddings - pad_token_id - 1
                                                    : max_position_embeddings;
}

namespace {

using F = ModelFamily;
using H = HeadKind;

struct ModelTypeEntry {
  const char* model_type;
  ModelFamily family;
};
constexpr ModelTypeEntry kModelTypes[] = {
    {"bert", F::kBert},       {"roberta", F::kRoberta}, {"xlm-roberta", F::kRoberta}, {"distilbert", F::kDistilBert},
    {"electra", F::kElectra}, {"albert", F::kAlbert},   {"squeezebert", F::kSqueezeBert},
};

struct ArchitectureEntry {
  const char* name;
  ModelFamily family;
  HeadKind head;
};
constexpr ArchitectureEntry kArchitectures[] = {
    {"BertModel", F::kBert, H::kNone},
    {"BertForSequenceClassification", F::kBert, H::kSequenceClassification},
    {"BertForTokenClassification", F::kBert, H::kTokenClassification},
    {"BertForQuestionAnswering", F::kBert, H::kQuestionAnswering},
    {"BertForMaskedLM", F::kBert, H::kMaskedLM},
    {"BertForPreTraining", F::kBert, H::kPreTraining},
    {"RobertaModel", F::kRoberta, H::kNone},
    {"RobertaForSequenceClassification", F::kRoberta, H::kSequenceClassification},
    {"RobertaForTokenClassification", F::kRoberta, H::kTokenClassification},
    {"RobertaForQuestionAnswering", F::kRoberta, H::kQuestionAnswering},
    {"RobertaForMaskedLM", F::kRoberta, H::kMaskedLM},
    {"XLMRobertaModel", F::kRoberta, H::kNone},
    {"XLMRobertaForSequenceClassification", F::kRoberta, H::kSequenceClassification},
    {"XLMRobertaForTokenClassification", F::kRoberta, H::kTokenClassification},
    {"XLMRobertaForQuestionAnswering", F::kRoberta, H::kQuestionAnswering},
    {"XLMRobertaForMaskedLM", F::kRoberta, H::kMaskedLM},
    {"DistilBertModel", F::kDistilBert, H::kNone},
    {"DistilBertForSequenceClassification", F::kDistilBert, H::kSequenceClassification},
    {"DistilBertForTokenClassification", F::kDistilBert, H::kTokenClassification},
    {"DistilBertForQuestionAnswering", F::kDistilBert, H::kQuestionAnswering},
    {"DistilBertForMaskedLM", F::kDistilBert, H::kMaskedLM},
    {"ElectraModel", F::kElectra, H::kNone},
    {"ElectraForSequenceClassification", F::kElectra, H::kSequenceClassification},
    {"ElectraForTokenClassification", F::kElectra, H::kTokenClassification},
    {"ElectraForQuestionAnswering", F::kElectra, H::kQuestionAnswering},
    {"ElectraForMaskedLM", F::kElectra, H::kMaskedLM},
    {"ElectraForPreTraining", F::kElectra, H::kDiscriminator},
    {"AlbertModel", F::kAlbert, H::kNone},
    {"AlbertForSequenceClassification", F::kAlbert, H::kSequenceClassification},
    {"AlbertForTokenClassification", F::kAlbert, H::kTokenClassification},
    {"AlbertForQuestionAnswering", F::kAlbert, H::kQuestionAnswering},
    {"AlbertForMaskedLM", F::kAlbert, H::kMaskedLM},
    {"AlbertForPreTraining", F::kAlbert, H::kPreTraining},
    {"SqueezeBertModel", F::kSqueezeBert, H::kNone},
    {"SqueezeBertForSequenceClassification", F::kSqueezeBert, H::kSequenceClassification},
    {"SqueezeBertForTokenClassification", F::kSqueezeBert, H::kTokenClassification},
    {"SqueezeBertForQuestionAnswering", F::kSqueezeBert, H::kQuestionAnswering},
    {"SqueezeBertForMaskedLM", F::kSqueezeBert, H::kMaskedLM},
};

struct ActEntry {
  const char* name;
  HiddenAct act;
};
constexpr ActEntry kActivations[] = {
    {"gelu", HiddenAct::kGeluErf},          {"gelu_new", HiddenAct::kGeluTanh},
    {"gelu_pytorch_tanh", HiddenAct::kGeluTanh}, {"gelu_fast", HiddenAct::kGeluTanh},
    {"relu", HiddenAct::kRelu},             {"quick_gelu", HiddenAct::kGeluQuick},
    {"tanh", HiddenAct::kTanh},
};

using json = nlohmann::json;

// Reads an integer field; `required` fields must exist.
Status get_int(const json& j, const char* key, const std::string& src, bool required, int64_t* out) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) {
    if (required) return format_error(src + ": missing field '" + key + "'");
    return Status::Ok();
  }
  if (!it->is_number_integer()) return format_error(src + ": field '" + key + "' must be an integer");
  if (it->is_number_unsigned() && it->get<uint64_t>() > static_cast<uint64_t>(INT64_MAX))
    return out_of_range(src + ": field '" + key + "' is " + std::to_string(it->get<uint64_t>()) +
                        ", beyond any size this engine accepts");
  *out = it->get<int64_t>();
  return Status::Ok();
}

// The largest value each size field may have. Generous (a few times the largest released model) but
// small enough that no product of them overflows and nothing is allocated for an absurd config: the
// sizes are checked here, before the parameter list, the label names or any tensor exist.
constexpr int64_t kMaxVocab = int64_t{1} << 24, kMaxHidden = int64_t{1} << 16, kMaxLayers = 1024,
                  kMaxIntermediate = int64_t{1} << 18, kMaxPositions = int64_t{1} << 20,
                  kMaxTypeVocab = int64_t{1} << 16, kMaxLabels = int64_t{1} << 20;

Status require_at_most(int64_t v, int64_t max, const char* key, const std::string& src) {
  if (v > max)
    return out_of_range(src + ": field '" + key + "' is " + std::to_string(v) + "; this engine accepts at most " +
                        std::to_string(max));
  return Status::Ok();
}

Status require_positive(int64_t v, const char* key, const std::string& src) {
  if (v <= 0)
    return format_error(src + ": field '" + key + "' must be positive, got " + std::to_string(v));
  return Status::Ok();
}

Status get_activation(const json& j, const char* key, const std::string& src, HiddenAct* out) {
  auto it = j.find(key);
  if (it == j.end()) return Status::Ok();
  if (!it->is_string()) return format_error(src + ": field '" + key + "' must be a string");
  const std::string act = it->get<std::string>();
  for (const auto& a : kActivations)
    if (act == a.name) return *out = a.act, Status::Ok();
  std::string known;
  for (const auto& a : kActivations) known += std::string(known.empty() ? "" : ", ") + a.name;
  return unsupported(src + ": " + key + " '" + act + "' is not supported (supported: " + known + ")");
}

// The structural sizes, under the keys the family's config class uses.
Status parse_sizes(const json& j, const std::string& src, ModelConfig& c) {
  if (c.family == F::kDistilBert) {
    BERT_RETURN_IF_ERROR(get_int(j, "dim", src, true, &c.hidden_size));
    BERT_RETURN_IF_ERROR(get_int(j, "n_layers", src, true, &c.num_layers));
    BERT_RETURN_IF_ERROR(get_int(j, "n_heads", src, true, &c.num_heads));
    BERT_RETURN_IF_ERROR(get_int(j, "hidden_dim", src, true, &c.intermediate_size));
    c.type_vocab_size = 0;   // DistilBERT has no token types
    c.layer_norm_eps = 1e-12f;  // fixed in transformers' DistilBERT
    return get_activation(j, "activation", src, &c.hidden_act);
  }
  BERT_RETURN_IF_ERROR(get_int(j, "hidden_size", src, true, &c.hidden_size));
  BERT_RETURN_IF_ERROR(get_int(j, "num_hidden_layers", src, true, &c.num_layers));
  BERT_RETURN_IF_ERROR(get_int(j, "num_attention_heads", src, true, &c.num_heads));
  BERT_RETURN_IF_ERROR(get_int(j, "intermediate_size", src, true, &c.intermediate_size));
  c.type_vocab_size = 2;
  BERT_RETURN_IF_ERROR(get_int(j, "type_vocab_size", src, false, &c.type_vocab_size));
  BERT_RETURN_IF_ERROR(require_positive(c.type_vocab_size, "type_vocab_size", src));
  if (auto it = j.find("layer_norm_eps"); it != j.end()) {
    if (!it->is_number() || it->get<double>() <= 0)
      return format_error(src + ": field 'layer_norm_eps' must be a positive number");
    c.layer_norm_eps = static_cast<float>(it->get<double>());
  }
  return get_activation(j, "hidden_act", src, &c.hidden_act);
}

// What differs between the families beyond sizes: embeddings, layer sharing, groups, heads.
Status parse_family_options(const json& j, const std::string& src, ModelConfig& c) {
  c.embedding_size = c.hidden_size;
  c.mlm_act = c.hidden_act;
  switch (c.family) {
    case F::kBert:
      c.has_pooler = c.head == H::kNone || c.head == H::kSequenceClassification || c.head == H::kPreTraining;
      break;
    case F::kRoberta:
      c.position_ids = PositionIds::kAfterPadding;
      c.has_pooler = c.head == H::kNone;  // the task models are built without one
      c.classifier_on_pooler = false;     // classifier.dense -> tanh -> classifier.out_proj
      c.classifier_act = HiddenAct::kTanh;
      c.mlm_act = HiddenAct::kGeluErf;  // lm_head uses gelu whatever hidden_act says
      break;
    case F::kDistilBert:
      c.has_pooler = false;
      c.classifier_on_pooler = false;  // pre_classifier -> ReLU -> classifier
      c.classifier_act = HiddenAct::kRelu;
      break;
    case F::kElectra:
      BERT_RETURN_IF_ERROR(get_int(j, "embedding_size", src, true, &c.embedding_size));
      c.embedding_projection = c.embedding_size != c.hidden_size;
      c.has_pooler = false;
      c.classifier_on_pooler = false;  // classifier.dense -> GELU -> classifier.out_proj
      c.classifier_act = HiddenAct::kGeluErf;
      c.mlm_act = HiddenAct::kGeluErf;  // generator_predictions uses gelu
      break;
    case F::kAlbert: {
      BERT_RETURN_IF_ERROR(get_int(j, "embedding_size", src, true, &c.embedding_size));
      c.embedding_projection = true;  // embedding_hidden_mapping_in, even when the sizes agree
      BERT_RETURN_IF_ERROR(get_int(j, "num_hidden_groups", src, false, &c.num_hidden_groups));
      BERT_RETURN_IF_ERROR(require_positive(c.num_hidden_groups, "num_hidden_groups", src));
      if (c.num_hidden_groups > c.num_layers)
        return format_error(src + ": num_hidden_groups " + std::to_string(c.num_hidden_groups) +
                            " exceeds num_hidden_layers " + std::to_string(c.num_layers));
      int64_t inner = 1;
      BERT_RETURN_IF_ERROR(get_int(j, "inner_group_num", src, false, &inner));
      if (inner != 1)
        return unsupported(src + ": inner_group_num " + std::to_string(inner) +
                           " is not supported (only 1, as in every released ALBERT)");
      c.has_pooler = c.head == H::kNone || c.head == H::kSequenceClassification || c.head == H::kPreTraining;
      break;
    }
    case F::kSqueezeBert: {
      BERT_RETURN_IF_ERROR(get_int(j, "embedding_size", src, false, &c.embedding_size));
      if (c.embedding_size != c.hidden_size)
        return unsupported(src + ": embedding_size " + std::to_string(c.embedding_size) + " != hidden_size " +
                           std::to_string(c.hidden_size) + " is not supported for squeezebert");
      LinearGroups& g = c.groups;
      const struct {
        const char* key;
        int64_t* value;
        int64_t in, out;
      } groups[] = {{"q_groups", &g.q, c.hidden_size, c.hidden_size},
                    {"k_groups", &g.k, c.hidden_size, c.hidden_size},
                    {"v_groups", &g.v, c.hidden_size, c.hidden_size},
                    {"post_attention_groups", &g.post_attention, c.hidden_size, c.hidden_size},
                    {"intermediate_groups", &g.intermediate, c.hidden_size, c.intermediate_size},
                    {"output_groups", &g.output, c.intermediate_size, c.hidden_size}};
      for (const auto& e : groups) {
        BERT_RETURN_IF_ERROR(get_int(j, e.key, src, false, e.value));
        BERT_RETURN_IF_ERROR(require_positive(*e.value, e.key, src));
        if (e.in % *e.value || e.out % *e.value)
          return format_error(src + ": " + e.key + " " + std::to_string(*e.value) + " does not divide the layer's " +
                              std::to_string(e.in) + " inputs and " + std::to_string(e.out) + " outputs");
      }
      c.has_pooler = c.head == H::kNone || c.head == H::kSequenceClassification;
      break;
    }
  }
  BERT_RETURN_IF_ERROR(require_positive(c.embedding_size, "embedding_size", src));
  return require_at_most(c.embedding_size, kMaxHidden, "embedding_size", src);
}

}  // namespace

Result<ArchitectureInfo> find_architecture(const std::string& architecture) {
  for (const auto& a : kArchitectures)
    if (architecture == a.name) return ArchitectureInfo{a.family, a.head};
  std::string known;
  for (const auto& a : kArchitectures) known += std::string(known.empty() ? "" : ", ") + a.name;
  return unsupported("architecture '" + architecture + "' is not supported (known: " + known + ")");
}

Result<ModelConfig> parse_model_config(std::string_view json_text, const std::string& src) {
  json j = json::parse(json_text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return format_error(src + ": not valid JSON");
  if (!j.is_object()) return format_error(src + ": top level must be a JSON object");

  ModelConfig c;
  c.json = std::string(json_text);
  auto mt = j.find("model_type");
  if (mt == j.end() || !mt->is_string()) return format_error(src + ": missing string field 'model_type'");
  c.model_type = mt->get<std::string>();
  bool known_type = false;
  for (const auto& t : kModelTypes)
    if (c.model_type == t.model_type) c.family = t.family, known_type = true;
  if (!known_type) {
    std::string known;
    for (const auto& t : kModelTypes) known += std::string(known.empty() ? "" : ", ") + t.model_type;
    return unsupported(src + ": model_type '" + c.model_type + "' is not supported (supported: " + known + ")");
  }

  if (auto it = j.find("architectures"); it != j.end() && !it->is_null()) {
    if (!it->is_array() || it->empty() || !(*it)[0].is_string())
      return format_error(src + ": field 'architectures' must be a non-empty list of strings");
    if (it->size() > 1) return unsupported(src + ": more than one entry in 'architectures'");
    c.architecture = (*it)[0].get<std::string>();
    auto arch = find_architecture(c.architecture);
    if (!arch.ok()) return arch.status().with_context(src);
    if (arch->family != c.family)
      return format_error(src + ": architecture '" + c.architecture + "' is for model_type '" +
                          model_family_name(arch->family) + "', not '" + c.model_type + "'");
    c.head = arch->head;
  }

  BERT_RETURN_IF_ERROR(get_int(j, "vocab_size", src, true, &c.vocab_size));
  BERT_RETURN_IF_ERROR(get_int(j, "max_position_embeddings", src, true, &c.max_position_embeddings));
  BERT_RETURN_IF_ERROR(get_int(j, "pad_token_id", src, false, &c.pad_token_id));
  BERT_RETURN_IF_ERROR(parse_sizes(j, src, c));
  for (auto [v, k] : {std::pair{c.vocab_size, "vocab_size"}, {c.hidden_size, "hidden_size"},
                      {c.num_layers, "num_hidden_layers"}, {c.num_heads, "num_attention_heads"},
                      {c.intermediate_size, "intermediate_size"},
                      {c.max_position_embeddings, "max_position_embeddings"}})
    BERT_RETURN_IF_ERROR(require_positive(v, k, src));
  for (auto [v, k, max] : {std::tuple{c.vocab_size, "vocab_size", kMaxVocab}, {c.hidden_size, "hidden_size", kMaxHidden},
                           {c.num_layers, "num_hidden_layers", kMaxLayers},
                           {c.num_heads, "num_attention_heads", kMaxHidden},
                           {c.intermediate_size, "intermediate_size", kMaxIntermediate},
                           {c.max_position_embeddings, "max_position_embeddings", kMaxPositions},
                           {c.type_vocab_size, "type_vocab_size", kMaxTypeVocab}})
    BERT_RETURN_IF_ERROR(require_at_most(v, max, k, src));
  if (c.hidden_size % c.num_heads != 0)
    return format_error(src + ": hidden_size " + std::to_string(c.hidden_size) +
                        " is not divisible by num_attention_heads " + std::to_string(c.num_heads));
  if (c.pad_token_id < 0 || c.pad_token_id >= c.vocab_size)
    return format_error(src + ": pad_token_id " + std::to_string(c.pad_token_id) + " is outside the vocab");
  BERT_RETURN_IF_ERROR(parse_family_options(j, src, c));
  if (c.max_sequence_length() < 1)
    return format_error(src + ": max_position_embeddings " + std::to_string(c.max_position_embeddings) +
                        " leaves no positions after pad_token_id " + std::to_string(c.pad_token_id));

  // Options that change the computation in ways this engine does not implement.
  if (auto it = j.find("position_embedding_type");
      it != j.end() && !(it->is_string() && it->get<std::string>() == "absolute"))
    return unsupported(src + ": position_embedding_type " + it->dump() + " is not supported (only \"absolute\")");
  for (const char* flag : {"is_decoder", "add_cross_attention"})
    if (auto it = j.find(flag); it != j.end() && it->is_boolean() && it->get<bool>())
      return unsupported(src + ": '" + flag + "': true is not supported (encoder-only engine)");

  // Labels: id2label gives both the count and the names; num_labels alone gives the count.
  if (auto it = j.find("id2label"); it != j.end() && !it->is_null()) {
    if (!it->is_object() || it->empty()) return format_error(src + ": field 'id2label' must be a non-empty object");
    BERT_RETURN_IF_ERROR(require_at_most(static_cast<int64_t>(it->size()), kMaxLabels, "id2label", src));
    c.labels.assign(it->size(), "");
    for (auto& [k, v] : it->items()) {
      char* end = nullptr;
      long id = std::strtol(k.c_str(), &end, 10);
      if (k.empty() || *end != '\0' || id < 0 || id >= static_cast<long>(c.labels.size()) || !v.is_string())
        return format_error(src + ": id2label must map the ids 0..n-1 to strings; bad entry '" + k + "'");
      c.labels[id] = v.get<std::string>();
    }
    c.num_labels = static_cast<int64_t>(c.labels.size());
  }
  int64_t num_labels = c.num_labels;
  BERT_RETURN_IF_ERROR(get_int(j, "num_labels", src, false, &num_labels));
  if (!c.labels.empty() && num_labels != c.num_labels)
    return format_error(src + ": num_labels " + std::to_string(num_labels) + " disagrees with id2label's " +
                        std::to_string(c.num_labels) + " entries");
  BERT_RETURN_IF_ERROR(require_positive(num_labels, "num_labels", src));
  BERT_RETURN_IF_ERROR(require_at_most(num_labels, kMaxLabels, "num_labels", src));  // before the label names exist
  c.num_labels = num_labels;
  if (c.labels.empty())
    for (int64_t i = 0; i < c.num_labels; ++i) c.labels.push_back("LABEL_" + std::to_string(i));
  return c;
}

Result<ModelConfig> read_model_config(const std::string& path) {
  BERT_RETURN_IF_ERROR(check_regular_file(path, "config file"));
  std::ifstream f(path, std::ios::binary);
  if (!f) return not_found(path + ": cannot open config file");
  std::stringstream ss;
  ss << f.rdbuf();
  return parse_model_config(ss.str(), path);
}

}  // namespace bert
