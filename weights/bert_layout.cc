// The BERT parameter table and the HF -> engine mapping built on it.
#include "weights/bert_layout.h"

#include <cstring>

#include "engine/core/half.h"

namespace bert {

namespace {

// HF names of one encoder layer's parameters (without .weight / .bias), per family.
struct LayerNames {
  const char* q;
  const char* k;
  const char* v;
  const char* attn_out;
  const char* attn_ln;
  const char* ffn_in;
  const char* ffn_out;
  const char* ffn_ln;
};
constexpr LayerNames kBertLayer = {"attention.self.query",  "attention.self.key",   "attention.self.value",
                                   "attention.output.dense", "attention.output.LayerNorm", "intermediate.dense",
                                   "output.dense",           "output.LayerNorm"};
constexpr LayerNames kDistilBertLayer = {"attention.q_lin", "attention.k_lin", "attention.v_lin",
                                         "attention.out_lin", "sa_layer_norm", "ffn.lin1",
                                         "ffn.lin2",          "output_layer_norm"};
constexpr LayerNames kAlbertLayer = {"attention.query", "attention.key", "attention.value",
                                     "attention.dense", "attention.LayerNorm", "ffn",
                                     "ffn_output",      "full_layer_layer_norm"};
constexpr LayerNames kSqueezeBertLayer = {"attention.query",        "attention.key",
                                          "attention.value",        "post_attention.conv1d",
                                          "post_attention.layernorm", "intermediate.conv1d",
                                          "output.conv1d",          "output.layernorm"};

// HF names of the heads (relative to the checkpoint root), per family.
struct HeadNames {
  const char* pooler;             // relative to the base prefix
  const char* classifier_dense;   // first-token sequence classifiers (nullptr: classifier on the pooler)
  const char* classifier;         // sequence classification output
  const char* mlm_transform;      // MLM: dense -> act -> LayerNorm -> decoder (+ bias)
  const char* mlm_ln;
  const char* mlm_decoder;        // tied to the word embeddings
  const char* mlm_bias;
  const char* mlm_bias_alias;     // the .bin format's second name for the bias (nullptr: none)
  const char* sentence;           // pre-training's sentence head (NSP / SOP)
};

struct FamilyLayout {
  const char* prefix;
  const char* layer_prefix;  // "encoder.layer.{i}." with {i} the weight set index
  LayerNames layer;
  const char* embedding_projection;  // relative to the base prefix
  HeadNames heads;
};

const FamilyLayout& family_layout(ModelFamily f) {
  static const FamilyLayout kBert = {
      "bert.", "encoder.layer.{i}.", kBertLayer, nullptr,
      {"pooler.dense", nullptr, "classifier", "cls.predictions.transform.dense", "cls.predictions.transform.LayerNorm",
       "cls.predictions.decoder", "cls.predictions.bias", "cls.predictions.decoder.bias", "cls.seq_relationship"}};
  static const FamilyLayout kRoberta = {
      "roberta.", "encoder.layer.{i}.", kBertLayer, nullptr,
      {"pooler.dense", "classifier.dense", "classifier.out_proj", "lm_head.dense", "lm_head.layer_norm",
       "lm_head.decoder", "lm_head.bias", "lm_head.decoder.bias", nullptr}};
  static const FamilyLayout kDistilBert = {
      "distilbert.", "transformer.layer.{i}.", kDistilBertLayer, nullptr,
      {nullptr, "pre_classifier", "classifier", "vocab_transform", "vocab_layer_norm", "vocab_projector",
       "vocab_projector.bias", nullptr, nullptr}};
  static const FamilyLayout kElectra = {
      "electra.", "encoder.layer.{i}.", kBertLayer, "embeddings_project",
      {nullptr, "classifier.dense", "classifier.out_proj", "generator_predictions.dense",
       "generator_predictions.LayerNorm", "generator_lm_head", "generator_lm_head.bias", nullptr, nullptr}};
  static const FamilyLayout kAlbert = {
      "albert.", "encoder.albert_layer_groups.{i}.albert_layers.0.", kAlbertLayer,
      "encoder.embedding_hidden_mapping_in",
      {"pooler", nullptr, "classifier", "predictions.dense", "predictions.LayerNorm", "predictions.decoder",
       "predictions.bias", "predictions.decoder.bias", "sop_classifier.classifier"}};
  static const FamilyLayout kSqueezeBert = {
      "transformer.", "encoder.layers.{i}.", kSqueezeBertLayer, nullptr,
      {"pooler.dense", nullptr, "classifier", "cls.predictions.transform.dense", "cls.predictions.transform.LayerNorm",
       "cls.predictions.decoder", "cls.predictions.bias", "cls.predictions.decoder.bias", nullptr}};
  switch (f) {
    case ModelFamily::kBert: return kBert;
    case ModelFamily::kRoberta: return kRoberta;
    case ModelFamily::kDistilBert: return kDistilBert;
    case ModelFamily::kElectra: return kElectra;
    case ModelFamily::kAlbert: return kAlbert;
    case ModelFamily::kSqueezeBert: return kSqueezeBert;
  }
  return kBert;
}

std::string layer_prefix(const FamilyLayout& f, int64_t index) {
  std::string s = f.layer_prefix;
  s.replace(s.find("{i}"), 3, std::to_string(index));
  return s;
}

}  // namespace

std::string hf_base_prefix(const ModelConfig& config) { return family_layout(config.family).prefix; }

std::vector<ParamSpec> param_specs(const ModelConfig& c) { return param_specs(c, hf_base_prefix(c)); }

std::vector<ParamSpec> param_specs(const ModelConfig& c, const std::string& p) {
  const FamilyLayout& f = family_layout(c.family);
  const HeadNames& hn = f.heads;
  const int64_t H = c.hidden_size, I = c.intermediate_size, V = c.vocab_size, E = c.embedding_size;
  std::vector<ParamSpec> s;
  auto add = [&](std::string name, std::vector<std::string> hf, std::vector<int64_t> shape) -> ParamSpec& {
    ParamSpec& spec = s.emplace_back();
    spec.name = std::move(name), spec.hf_names = std::move(hf), spec.shape = std::move(shape);
    return spec;
  };
  // A linear layer: engine "<name>.weight" [N, K / groups] and "<name>.bias" [N] from HF "<hf>.weight/.bias".
  auto linear = [&](const std::string& name, const std::string& hf, int64_t N, int64_t K, int64_t groups = 1) {
    add(name + ".weight", {hf + ".weight"}, {N, K / groups});
    add(name + ".bias", {hf + ".bias"}, {N});
  };
  auto layernorm = [&](const std::string& name, const std::string& hf, int64_t width) {
    add(name + ".gamma", {hf + ".weight"}, {width});
    add(name + ".beta", {hf + ".bias"}, {width});
  };

  const std::string e = p + "embeddings.";
  add("embeddings.word", {e + "word_embeddings.weight"}, {V, E});
  add("embeddings.position", {e + "position_embeddings.weight"}, {c.max_position_embeddings, E});
  if (c.has_token_types()) add("embeddings.token_type", {e + "token_type_embeddings.weight"}, {c.type_vocab_size, E});
  layernorm("embeddings.ln", e + "LayerNorm", E);
  if (c.embedding_projection) linear("embeddings.project", p + f.embedding_projection, H, E);

  const LinearGroups& g = c.groups;
  for (int64_t l = 0; l < c.num_layer_weights(); ++l) {
    const std::string hl = p + layer_prefix(f, l);
    const std::string el = "layer." + std::to_string(l) + ".";
    const LayerNames& n = f.layer;
    if (!g.any()) {  // Q, K and V fused into one [3H, H] GEMM
      const std::string q = hl + n.q, k = hl + n.k, v = hl + n.v;
      add(el + "attn.qkv.weight", {q + ".weight", k + ".weight", v + ".weight"}, {3 * H, H});
      add(el + "attn.qkv.bias", {q + ".bias", k + ".bias", v + ".bias"}, {3 * H});
    } else {
      linear(el + "attn.q", hl + n.q, H, H, g.q);
      linear(el + "attn.k", hl + n.k, H, H, g.k);
      linear(el + "attn.v", hl + n.v, H, H, g.v);
    }
    linear(el + "attn.out", hl + n.attn_out, H, H, g.post_attention);
    layernorm(el + "attn.ln", hl + n.attn_ln, H);
    linear(el + "ffn.in", hl + n.ffn_in, I, H, g.intermediate);
    linear(el + "ffn.out", hl + n.ffn_out, H, I, g.output);
    layernorm(el + "ffn.ln", hl + n.ffn_ln, H);
  }
  if (c.family == ModelFamily::kSqueezeBert)  // its encoder linears are Conv1d weights [N, K / groups, 1]
    for (ParamSpec& spec : s) spec.conv1d = spec.name.starts_with("layer.") && spec.name.ends_with(".weight");

  if (c.has_pooler) linear("pooler", p + hn.pooler, H, H);
  const int64_t L = c.num_labels;
  switch (c.head) {
    case HeadKind::kNone: break;
    case HeadKind::kSequenceClassification:
      if (!c.classifier_on_pooler) linear("head.pre", hn.classifier_dense, H, H);
      linear("head.classifier", hn.classifier, L, H);
      break;
    case HeadKind::kTokenClassification: linear("head.classifier", "classifier", L, H); break;
    case HeadKind::kQuestionAnswering: linear("head.qa", "qa_outputs", 2, H); break;
    case HeadKind::kDiscriminator:
      linear("head.disc.dense", "discriminator_predictions.dense", H, H);
      linear("head.disc.out", "discriminator_predictions.dense_prediction", 1, H);
      break;
    case HeadKind::kMaskedLM:
    case HeadKind::kPreTraining:
      linear("head.mlm.transform", hn.mlm_transform, E, H);
      layernorm("head.mlm.ln", hn.mlm_ln, E);
      // Tied to embeddings.word unless the checkpoint holds a different decoder.
      add("head.mlm.decoder.weight", {std::string(hn.mlm_decoder) + ".weight"}, {V, E}).optional = true;
      add("head.mlm.decoder.bias", {hn.mlm_bias}, {V}).hf_alias = hn.mlm_bias_alias ? hn.mlm_bias_alias : "";
      if (c.head == HeadKind::kPreTraining) linear("head.nsp", hn.sentence, 2, H);
      break;
  }
  return s;
}

Result<Tensor> to_f32(const Tensor& t, const std::string& what) {
  if (t.dtype == DType::kF32) return t;
  if (t.dtype != DType::kF16 && t.dtype != DType::kBF16)
    return unsupported(what + ": dtype " + std::string(dtype_name(t.dtype)) + " is not a float type (F32, F16, BF16)");
  Tensor out = make_owned_tensor(DType::kF32, t.shape);
  auto* dst = static_cast<float*>(mutable_data(out));
  if (t.dtype == DType::kF16) f16_to_f32(t.as<uint16_t>(), dst, t.numel());
  else bf16_to_f32(t.as<uint16_t>(), dst, t.numel());
  return out;
}

Result<Tensor> from_f32(const Tensor& t, DType dtype, const std::string& what) {
  if (t.dtype != DType::kF32) return internal_error(what + ": expected an F32 tensor");
  if (dtype == DType::kF32) return t;
  if (dtype != DType::kF16 && dtype != DType::kBF16)
    return unsupported(what + ": cannot store weights as " + std::string(dtype_name(dtype)));
  Tensor out = make_owned_tensor(dtype, t.shape);
  auto* dst = static_cast<uint16_t*>(mutable_data(out));
  if (dtype == DType::kF16) f32_to_f16(t.as<float>(), dst, t.numel());
  else f32_to_bf16(t.as<float>(), dst, t.numel());
  return out;
}

namespace {

bool same_values(const Tensor& a, const Tensor& b) {
  return a.dtype == b.dtype && a.shape == b.shape && std::memcmp(a.data, b.data, a.nbytes()) == 0;
}

// Buffers HF keeps in state dicts that are not parameters.
bool is_known_buffer(const std::string& name) {
  return name.ends_with("embeddings.position_ids") || name.ends_with("embeddings.token_type_ids");
}

}  // namespace

Result<ConvertedWeights> hf_to_engine(const ModelConfig& config, const TensorMap& hf, const std::string& source) {
  const std::string base = hf_base_prefix(config);
  std::string prefix;
  if (hf.count(base + "embeddings.word_embeddings.weight")) prefix = base;
  else if (!hf.count("embeddings.word_embeddings.weight"))
    return format_error(source + ": no tensor '" + base + "embeddings.word_embeddings.weight' or "
                        "'embeddings.word_embeddings.weight': not a " + config.model_type + " checkpoint");

  ConvertedWeights out;
  std::map<std::string, bool> consumed;
  for (const ParamSpec& spec : param_specs(config, prefix)) {
    std::vector<const Tensor*> parts;
    for (const auto& hn : spec.hf_names) {
      const Tensor* t = nullptr;
      if (auto it = hf.find(hn); it != hf.end()) t = &it->second;
      else if (auto alias = hf.find(spec.hf_alias); !spec.hf_alias.empty() && alias != hf.end()) t = &alias->second;
      if (!t) {
        if (spec.optional) break;
        return format_error(source + ": missing tensor '" + hn + "' (needed for " +
                            head_kind_name(config.head) + " head / encoder of this config)");
      }
      parts.push_back(t);
    }
    if (parts.size() != spec.hf_names.size()) continue;  // optional and absent
    if (!spec.hf_alias.empty()) consumed[spec.hf_alias] = true;  // the .bin keeps both names

    // Check each part: its share of the engine shape (Conv1d weights carry a trailing 1).
    for (size_t i = 0; i < parts.size(); ++i) {
      const Tensor& t = *parts[i];
      const std::string& hn = spec.hf_names[i];
      std::vector<int64_t> want = spec.shape;
      want[0] /= static_cast<int64_t>(parts.size());
      if (spec.conv1d) want.push_back(1);
      if (t.shape != want)
        return format_error(source + ": tensor '" + hn + "' has shape " + shape_string(t.shape) +
                            " but the config needs " + shape_string(want));
      consumed[hn] = true;
    }
    if (spec.name == "head.mlm.decoder.weight" &&
        same_values(*parts[0], hf.at(prefix + "embeddings.word_embeddings.weight")))
      continue;  // tied: the engine reads embeddings.word
    if (parts.size() == 1) {
      BERT_ASSIGN_OR_RETURN(Tensor t, to_f32(*parts[0], source + ": " + spec.hf_names[0]));
      t.shape = spec.shape;  // drops a Conv1d's trailing 1 (same bytes)
      out.tensors[spec.name] = std::move(t);
      continue;
    }
    Tensor fused = make_owned_tensor(DType::kF32, spec.shape);
    auto* dst = static_cast<uint8_t*>(mutable_data(fused));
    for (size_t i = 0; i < parts.size(); ++i) {
      BERT_ASSIGN_OR_RETURN(Tensor t, to_f32(*parts[i], source + ": " + spec.hf_names[i]));
      std::memcpy(dst, t.data, t.nbytes());
      dst += t.nbytes();
    }
    out.tensors[spec.name] = std::move(fused);
  }
  for (const auto& [name, t] : hf)
    if (!consumed.count(name) && !is_known_buffer(name)) out.unused.push_back(name);
  return out;
}

Status validate_engine_tensors(const ModelConfig& config, const TensorMap& tensors, const std::string& source) {
  for (const ParamSpec& spec : param_specs(config)) {
    auto it = tensors.find(spec.name);
    if (it == tensors.end()) {
      if (spec.optional) continue;
      return format_error(source + ": missing tensor '" + spec.name + "'");
    }
    const Tensor& t = it->second;
    if (t.shape != spec.shape)
      return format_error(source + ": tensor '" + spec.name + "' has shape " + shape_string(t.shape) +
                          " but the config needs " + shape_string(spec.shape));
    if (t.dtype != DType::kF32 && t.dtype != DType::kF16 && t.dtype != DType::kBF16)
      return format_error(source + ": tensor '" + spec.name + "' has dtype " +
                          std::string(dtype_name(t.dtype)) + "; expected F32, F16 or BF16");
  }
  return Status::Ok();
}

}  // namespace bert
