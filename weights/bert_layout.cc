// The BERT parameter table and the HF -> engine mapping built on it.
#include "weights/bert_layout.h"

#include <cstring>

#include "kernels/cpu/dispatch.h"

namespace bert {

std::vector<ParamSpec> param_specs(const ModelConfig& c, const std::string& p) {
  const int64_t H = c.hidden_size, I = c.intermediate_size, V = c.vocab_size;
  std::vector<ParamSpec> s;
  auto add = [&](std::string name, std::vector<std::string> hf, std::vector<int64_t> shape, bool opt = false) {
    s.push_back({std::move(name), std::move(hf), std::move(shape), opt});
  };
  const std::string e = p + "embeddings.";
  add("embeddings.word", {e + "word_embeddings.weight"}, {V, H});
  add("embeddings.position", {e + "position_embeddings.weight"}, {c.max_position_embeddings, H});
  add("embeddings.token_type", {e + "token_type_embeddings.weight"}, {c.type_vocab_size, H});
  add("embeddings.ln.gamma", {e + "LayerNorm.weight"}, {H});
  add("embeddings.ln.beta", {e + "LayerNorm.bias"}, {H});
  for (int64_t l = 0; l < c.num_layers; ++l) {
    const std::string hl = p + "encoder.layer." + std::to_string(l) + ".";
    const std::string el = "layer." + std::to_string(l) + ".";
    const std::string a = hl + "attention.self.";
    add(el + "attn.qkv.weight", {a + "query.weight", a + "key.weight", a + "value.weight"}, {3 * H, H});
    add(el + "attn.qkv.bias", {a + "query.bias", a + "key.bias", a + "value.bias"}, {3 * H});
    add(el + "attn.out.weight", {hl + "attention.output.dense.weight"}, {H, H});
    add(el + "attn.out.bias", {hl + "attention.output.dense.bias"}, {H});
    add(el + "attn.ln.gamma", {hl + "attention.output.LayerNorm.weight"}, {H});
    add(el + "attn.ln.beta", {hl + "attention.output.LayerNorm.bias"}, {H});
    add(el + "ffn.in.weight", {hl + "intermediate.dense.weight"}, {I, H});
    add(el + "ffn.in.bias", {hl + "intermediate.dense.bias"}, {I});
    add(el + "ffn.out.weight", {hl + "output.dense.weight"}, {H, I});
    add(el + "ffn.out.bias", {hl + "output.dense.bias"}, {H});
    add(el + "ffn.ln.gamma", {hl + "output.LayerNorm.weight"}, {H});
    add(el + "ffn.ln.beta", {hl + "output.LayerNorm.bias"}, {H});
  }
  if (c.has_pooler()) {
    add("pooler.weight", {p + "pooler.dense.weight"}, {H, H});
    add("pooler.bias", {p + "pooler.dense.bias"}, {H});
  }
  const int64_t L = c.num_labels;
  switch (c.head) {
    case HeadKind::kNone: break;
    case HeadKind::kSequenceClassification:
    case HeadKind::kTokenClassification:
      add("head.classifier.weight", {"classifier.weight"}, {L, H});
      add("head.classifier.bias", {"classifier.bias"}, {L});
      break;
    case HeadKind::kQuestionAnswering:
      add("head.qa.weight", {"qa_outputs.weight"}, {2, H});
      add("head.qa.bias", {"qa_outputs.bias"}, {2});
      break;
    case HeadKind::kMaskedLM:
    case HeadKind::kPreTraining:
      add("head.mlm.transform.weight", {"cls.predictions.transform.dense.weight"}, {H, H});
      add("head.mlm.transform.bias", {"cls.predictions.transform.dense.bias"}, {H});
      add("head.mlm.ln.gamma", {"cls.predictions.transform.LayerNorm.weight"}, {H});
      add("head.mlm.ln.beta", {"cls.predictions.transform.LayerNorm.bias"}, {H});
      // Tied to embeddings.word unless the checkpoint holds a different decoder.
      add("head.mlm.decoder.weight", {"cls.predictions.decoder.weight"}, {V, H}, /*optional=*/true);
      add("head.mlm.decoder.bias", {"cls.predictions.bias"}, {V});
      if (c.head == HeadKind::kPreTraining) {
        add("head.nsp.weight", {"cls.seq_relationship.weight"}, {2, H});
        add("head.nsp.bias", {"cls.seq_relationship.bias"}, {2});
      }
      break;
  }
  return s;
}

Result<Tensor> to_f32(const Tensor& t, const std::string& what) {
  if (t.dtype == DType::kF32) return t;
  if (t.dtype != DType::kF16 && t.dtype != DType::kBF16)
    return unsupported(what + ": dtype " + std::string(dtype_name(t.dtype)) + " is not a float type (F32, F16, BF16)");
  Tensor out = make_owned_tensor(DType::kF32, t.shape);
  const auto& k = kernels::cpu_kernels();
  auto* dst = static_cast<float*>(mutable_data(out));
  if (t.dtype == DType::kF16) k.convert_f16_to_f32(t.as<uint16_t>(), dst, t.numel());
  else k.convert_bf16_to_f32(t.as<uint16_t>(), dst, t.numel());
  return out;
}

Result<Tensor> from_f32(const Tensor& t, DType dtype, const std::string& what) {
  if (t.dtype != DType::kF32) return internal_error(what + ": expected an F32 tensor");
  if (dtype == DType::kF32) return t;
  if (dtype != DType::kF16 && dtype != DType::kBF16)
    return unsupported(what + ": cannot store weights as " + std::string(dtype_name(dtype)));
  Tensor out = make_owned_tensor(dtype, t.shape);
  const auto& k = kernels::cpu_kernels();
  auto* dst = static_cast<uint16_t*>(mutable_data(out));
  if (dtype == DType::kF16) k.convert_f32_to_f16(t.as<float>(), dst, t.numel());
  else k.convert_f32_to_bf16(t.as<float>(), dst, t.numel());
  return out;
}

namespace {

// Finds `name` or its known alias (the .bin format also stores the MLM bias as decoder.bias).
const Tensor* find_hf(const TensorMap& hf, const std::string& name) {
  if (auto it = hf.find(name); it != hf.end()) return &it->second;
  if (name == "cls.predictions.bias")
    if (auto it = hf.find("cls.predictions.decoder.bias"); it != hf.end()) return &it->second;
  return nullptr;
}

bool same_values(const Tensor& a, const Tensor& b) {
  return a.dtype == b.dtype && a.shape == b.shape && std::memcmp(a.data, b.data, a.nbytes()) == 0;
}

// Buffers HF keeps in state dicts that are not parameters.
bool is_known_buffer(const std::string& name) {
  return name.ends_with("embeddings.position_ids") || name.ends_with("embeddings.token_type_ids");
}

}  // namespace

Result<ConvertedWeights> hf_to_engine(const ModelConfig& config, const TensorMap& hf, const std::string& source) {
  std::string prefix;
  if (hf.count("bert.embeddings.word_embeddings.weight")) prefix = "bert.";
  else if (!hf.count("embeddings.word_embeddings.weight"))
    return format_error(source + ": no tensor 'bert.embeddings.word_embeddings.weight' or "
                        "'embeddings.word_embeddings.weight': not a BERT checkpoint");

  ConvertedWeights out;
  std::map<std::string, bool> consumed;
  for (const ParamSpec& spec : param_specs(config, prefix)) {
    std::vector<const Tensor*> parts;
    for (const auto& hn : spec.hf_names) {
      const Tensor* t = find_hf(hf, hn);
      if (!t) {
        if (spec.optional) break;
        return format_error(source + ": missing tensor '" + hn + "' (needed for " +
                            head_kind_name(config.head) + " head / encoder of this config)");
      }
      parts.push_back(t);
    }
    if (parts.size() != spec.hf_names.size()) continue;  // optional and absent

    // Check each part: float dtype, and its share of the engine shape.
    int64_t rows = 0;
    for (size_t i = 0; i < parts.size(); ++i) {
      const Tensor& t = *parts[i];
      const std::string& hn = spec.hf_names[i];
      std::vector<int64_t> want = spec.shape;
      want[0] /= static_cast<int64_t>(parts.size());
      if (t.shape != want)
        return format_error(source + ": tensor '" + hn + "' has shape " + shape_string(t.shape) +
                            " but the config needs " + shape_string(want));
      rows += t.shape[0];
      consumed[hn] = true;
    }
    if (spec.name == "head.mlm.decoder.weight") {
      if (same_values(*parts[0], *find_hf(hf, prefix + "embeddings.word_embeddings.weight"))) continue;  // tied
    }
    if (parts.size() == 1) {
      BERT_ASSIGN_OR_RETURN(Tensor t, to_f32(*parts[0], source + ": " + spec.hf_names[0]));
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
  if (config.has_mlm())  // the .bin format keeps both names of the MLM bias
    consumed["cls.predictions.decoder.bias"] = consumed["cls.predictions.decoder.weight"] = true;
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
