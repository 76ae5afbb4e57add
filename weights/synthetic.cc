// Synthetic weights: the real shapes from param_specs, values from a seeded generator.
#include "weights/synthetic.h"

#include <random>

#include "weights/bert_layout.h"

namespace bert {

Result<std::string> synthetic_config_json(const std::string& shape, const std::string& architecture) {
  struct Shape {
    const char* name;
    int layers, hidden, heads, intermediate;
  };
  static constexpr Shape kShapes[] = {
      {"bert-base", 12, 768, 12, 3072},
      {"bert-large", 24, 1024, 16, 4096},
      {"bert-tiny", 2, 128, 2, 512},
      {"bert-mini", 4, 256, 4, 1024},
  };
  for (const Shape& s : kShapes) {
    if (shape != s.name) continue;
    return std::string("{\"model_type\": \"bert\", \"architectures\": [\"") + architecture +
           "\"], \"vocab_size\": 30522, \"hidden_size\": " + std::to_string(s.hidden) +
           ", \"num_hidden_layers\": " + std::to_string(s.layers) +
           ", \"num_attention_heads\": " + std::to_string(s.heads) +
           ", \"intermediate_size\": " + std::to_string(s.intermediate) +
           ", \"max_position_embeddings\": 512, \"type_vocab_size\": 2, \"hidden_act\": \"gelu\", "
           "\"layer_norm_eps\": 1e-12, \"pad_token_id\": 0}";
  }
  return invalid_argument("unknown model shape '" + shape + "' (known: bert-base, bert-large, bert-tiny, bert-mini)");
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
