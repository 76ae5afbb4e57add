// Synthetic weights: the real shapes from param_specs, values from a seeded generator.
#include "weights/synthetic.h"

#include <nlohmann/json.hpp>
#include <random>

#include "weights/bert_layout.h"

namespace bert {

namespace {

using json = nlohmann::json;

// HF-style config.json for each named shape: what save_pretrained writes for the real models.
const std::vector<std::pair<std::string, json>>& shape_table() {
  auto bert_like = [](const char* type, const char* base, int layers, int hidden, int heads, int inter) {
    return json{{"model_type", type},         {"architectures", {base}},
                {"vocab_size", 30522},        {"hidden_size", hidden},
                {"num_hidden_layers", layers}, {"num_attention_heads", heads},
                {"intermediate_size", inter}, {"max_position_embeddings", 512},
                {"type_vocab_size", 2},       {"hidden_act", "gelu"},
                {"layer_norm_eps", 1e-12},    {"pad_token_id", 0}};
  };
  static const std::vector<std::pair<std::string, json>> table = [&] {
    std::vector<std::pair<std::string, json>> t;
    t.emplace_back("bert-base", bert_like("bert", "BertModel", 12, 768, 12, 3072));
    t.emplace_back("bert-large", bert_like("bert", "BertModel", 24, 1024, 16, 4096));
    t.emplace_back("bert-tiny", bert_like("bert", "BertModel", 2, 128, 2, 512));
    t.emplace_back("bert-mini", bert_like("bert", "BertModel", 4, 256, 4, 1024));
    json roberta = bert_like("roberta", "RobertaModel", 12, 768, 12, 3072);
    roberta.update({{"vocab_size", 50265}, {"max_position_embeddings", 514}, {"type_vocab_size", 1},
                    {"pad_token_id", 1}, {"layer_norm_eps", 1e-5}});
    t.emplace_back("roberta-base", roberta);
    t.emplace_back("distilbert-base",
                   json{{"model_type", "distilbert"}, {"architectures", {"DistilBertModel"}}, {"vocab_size", 30522},
                        {"dim", 768}, {"n_layers", 6}, {"n_heads", 12}, {"hidden_dim", 3072},
                        {"max_position_embeddings", 512}, {"activation", "gelu"}, {"pad_token_id", 0}});
    json electra = bert_like("electra", "ElectraModel", 12, 256, 4, 1024);
    electra["embedding_size"] = 128;
    t.emplace_back("electra-small", electra);
    json albert = bert_like("albert", "AlbertModel", 12, 768, 12, 3072);
    albert.update({{"embedding_size", 128}, {"vocab_size", 30000}, {"hidden_act", "gelu_new"},
                   {"num_hidden_groups", 1}, {"inner_group_num", 1}});
    t.emplace_back("albert-base", albert);
    json squeeze = bert_like("squeezebert", "SqueezeBertModel", 12, 768, 12, 3072);
    squeeze.update({{"vocab_size", 30528}, {"embedding_size", 768}, {"q_groups", 4}, {"k_groups", 4},
                    {"v_groups", 4}, {"post_attention_groups", 1}, {"intermediate_groups", 4},
                    {"output_groups", 4}});
    t.emplace_back("squeezebert-uncased", squeeze);
    return t;
  }();
  return table;
}

}  // namespace

const std::vector<std::string>& synthetic_shapes() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> n;
    for (const auto& [name, config] : shape_table()) n.push_back(name);
    return n;
  }();
  return names;
}

Result<std::string> synthetic_config_json(const std::string& shape, const std::string& architecture) {
  for (const auto& [name, config] : shape_table()) {
    if (shape != name) continue;
    json j = config;
    if (!architecture.empty()) j["architectures"] = {architecture};
    return j.dump(2);
  }
  std::string known;
  for (const std::string& n : synthetic_shapes()) known += (known.empty() ? "" : ", ") + n;
  return invalid_argument("unknown model shape '" + shape + "' (known: " + known + ")");
}

ModelSource synthetic_model(const ModelConfig& config, uint32_t seed) {
  ModelSource m;
  m.config = config;
  m.origin = "synthetic(seed=" + std::to_string(seed) + ")";
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.f, 0.02f);
  for (const ParamSpec& spec : param_specs(config)) {
    if (spec.optional) continue;
    Tensor t = make_owned_tensor(DType::kF32, spec.shape);
    float* p = static_cast<float*>(mutable_data(t));
    const bool gamma = spec.name.ends_with(".gamma");
    for (int64_t i = 0; i < t.numel(); ++i) p[i] = (gamma ? 1.f : 0.f) + normal(rng);
    m.tensors[spec.name] = std::move(t);
  }
  return m;
}

}  // namespace bert
