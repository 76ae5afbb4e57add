// config.json -> ModelConfig, with every field checked for presence, type and consistency.
#include "weights/model_config.h"

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

namespace bert {

const char* head_kind_name(HeadKind h) {
  switch (h) {
    case HeadKind::kNone: return "none";
    case HeadKind::kSequenceClassification: return "sequence_classification";
    case HeadKind::kTokenClassification: return "token_classification";
    case HeadKind::kQuestionAnswering: return "question_answering";
    case HeadKind::kMaskedLM: return "masked_lm";
    case HeadKind::kPreTraining: return "pretraining";
  }
  return "?";
}

const char* hidden_act_name(HiddenAct a) {
  switch (a) {
    case HiddenAct::kGeluErf: return "gelu";
    case HiddenAct::kGeluTanh: return "gelu_new";
    case HiddenAct::kRelu: return "relu";
    case HiddenAct::kGeluQuick: return "quick_gelu";
  }
  return "?";
}

namespace {

struct ArchitectureEntry {
  const char* name;
  HeadKind head;
};
constexpr ArchitectureEntry kArchitectures[] = {
    {"BertModel", HeadKind::kNone},
    {"BertForSequenceClassification", HeadKind::kSequenceClassification},
    {"BertForTokenClassification", HeadKind::kTokenClassification},
    {"BertForQuestionAnswering", HeadKind::kQuestionAnswering},
    {"BertForMaskedLM", HeadKind::kMaskedLM},
    {"BertForPreTraining", HeadKind::kPreTraining},
};

struct ActEntry {
  const char* name;
  HiddenAct act;
};
constexpr ActEntry kActivations[] = {
    {"gelu", HiddenAct::kGeluErf},          {"gelu_new", HiddenAct::kGeluTanh},
    {"gelu_pytorch_tanh", HiddenAct::kGeluTanh}, {"gelu_fast", HiddenAct::kGeluTanh},
    {"relu", HiddenAct::kRelu},             {"quick_gelu", HiddenAct::kGeluQuick},
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
  *out = it->get<int64_t>();
  return Status::Ok();
}

Status require_positive(int64_t v, const char* key, const std::string& src) {
  if (v <= 0)
    return format_error(src + ": field '" + key + "' must be positive, got " + std::to_string(v));
  return Status::Ok();
}

}  // namespace

Result<HeadKind> head_for_architecture(const std::string& architecture) {
  for (const auto& a : kArchitectures)
    if (architecture == a.name) return a.head;
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
  if (c.model_type != "bert")
    return unsupported(src + ": model_type '" + c.model_type + "' is not supported (supported: bert)");

  BERT_RETURN_IF_ERROR(get_int(j, "vocab_size", src, true, &c.vocab_size));
  BERT_RETURN_IF_ERROR(get_int(j, "hidden_size", src, true, &c.hidden_size));
  BERT_RETURN_IF_ERROR(get_int(j, "num_hidden_layers", src, true, &c.num_layers));
  BERT_RETURN_IF_ERROR(get_int(j, "num_attention_heads", src, true, &c.num_heads));
  BERT_RETURN_IF_ERROR(get_int(j, "intermediate_size", src, true, &c.intermediate_size));
  BERT_RETURN_IF_ERROR(get_int(j, "max_position_embeddings", src, true, &c.max_position_embeddings));
  c.type_vocab_size = 2;
  BERT_RETURN_IF_ERROR(get_int(j, "type_vocab_size", src, false, &c.type_vocab_size));
  BERT_RETURN_IF_ERROR(get_int(j, "pad_token_id", src, false, &c.pad_token_id));
  for (auto [v, k] : {std::pair{c.vocab_size, "vocab_size"}, {c.hidden_size, "hidden_size"},
                      {c.num_layers, "num_hidden_layers"}, {c.num_heads, "num_attention_heads"},
                      {c.intermediate_size, "intermediate_size"},
                      {c.max_position_embeddings, "max_position_embeddings"},
                      {c.type_vocab_size, "type_vocab_size"}})
    BERT_RETURN_IF_ERROR(require_positive(v, k, src));
  if (c.hidden_size % c.num_heads != 0)
    return format_error(src + ": hidden_size " + std::to_string(c.hidden_size) +
                        " is not divisible by num_attention_heads " + std::to_string(c.num_heads));
  if (c.pad_token_id < 0 || c.pad_token_id >= c.vocab_size)
    return format_error(src + ": pad_token_id " + std::to_string(c.pad_token_id) + " is outside the vocab");

  if (auto it = j.find("layer_norm_eps"); it != j.end()) {
    if (!it->is_number() || it->get<double>() <= 0)
      return format_error(src + ": field 'layer_norm_eps' must be a positive number");
    c.layer_norm_eps = static_cast<float>(it->get<double>());
  }

  std::string act = "gelu";
  if (auto it = j.find("hidden_act"); it != j.end()) {
    if (!it->is_string()) return format_error(src + ": field 'hidden_act' must be a string");
    act = it->get<std::string>();
  }
  bool act_known = false;
  for (const auto& a : kActivations)
    if (act == a.name) c.hidden_act = a.act, act_known = true;
  if (!act_known) return unsupported(src + ": hidden_act '" + act + "' is not supported");

  // Options that change the computation in ways this engine does not implement.
  if (auto it = j.find("position_embedding_type");
      it != j.end() && !(it->is_string() && it->get<std::string>() == "absolute"))
    return unsupported(src + ": position_embedding_type " + it->dump() + " is not supported (only \"absolute\")");
  for (const char* flag : {"is_decoder", "add_cross_attention"})
    if (auto it = j.find(flag); it != j.end() && it->is_boolean() && it->get<bool>())
      return unsupported(src + ": '" + flag + "': true is not supported (encoder-only engine)");

  if (auto it = j.find("architectures"); it != j.end() && !it->is_null()) {
    if (!it->is_array() || it->empty() || !(*it)[0].is_string())
      return format_error(src + ": field 'architectures' must be a non-empty list of strings");
    if (it->size() > 1) return unsupported(src + ": more than one entry in 'architectures'");
    c.architecture = (*it)[0].get<std::string>();
    auto head = head_for_architecture(c.architecture);
    if (!head.ok()) return head.status().with_context(src);
    c.head = *head;
  }

  // Labels: id2label gives both the count and the names; num_labels alone gives the count.
  if (auto it = j.find("id2label"); it != j.end() && !it->is_null()) {
    if (!it->is_object() || it->empty()) return format_error(src + ": field 'id2label' must be a non-empty object");
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
  c.num_labels = num_labels;
  if (c.labels.empty())
    for (int64_t i = 0; i < c.num_labels; ++i) c.labels.push_back("LABEL_" + std::to_string(i));
  return c;
}

Result<ModelConfig> read_model_config(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return not_found(path + ": cannot open config file");
  std::stringstream ss;
  ss << f.rdbuf();
  return parse_model_config(ss.str(), path);
}

}  // namespace bert
