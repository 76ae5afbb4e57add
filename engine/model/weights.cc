// The network's view of the parameters (engine/model/weights.h): binding engine tensor names to the
// per-layer pointers, the activation of a config, and position ids.
#include "engine/model/weights.h"

namespace bert {

kernels::Activation to_activation(HiddenAct a) {
  switch (a) {
    case HiddenAct::kGeluErf: return kernels::Activation::kGeluErf;
    case HiddenAct::kGeluTanh: return kernels::Activation::kGeluTanh;
    case HiddenAct::kRelu: return kernels::Activation::kRelu;
    case HiddenAct::kGeluQuick: return kernels::Activation::kGeluQuick;
    case HiddenAct::kTanh: return kernels::Activation::kTanh;
  }
  return kernels::Activation::kGeluErf;
}

void compute_position_ids(const ModelConfig& c, const int32_t* ids, int64_t B, int64_t S, int32_t* positions) {
  if (c.position_ids == PositionIds::kAfterPadding) {
    const int32_t pad = static_cast<int32_t>(c.pad_token_id);
    for (int64_t b = 0; b < B; ++b) {
      int32_t count = 0;
      for (int64_t t = b * S; t < (b + 1) * S; ++t) positions[t] = ids[t] == pad ? pad : pad + ++count;
    }
  } else {
    for (int64_t t = 0; t < B * S; ++t) positions[t] = static_cast<int32_t>(t % S);
  }
}

Status bind_weights(const ModelConfig& c, const std::function<const float*(const std::string&)>& lookup,
                    BertWeights& w) {
  w = BertWeights();
  Status missing;
  auto get = [&](const std::string& name, bool optional = false) -> const float* {
    const float* p = lookup(name);
    if (!p && !optional && missing.ok()) missing = internal_error("model is missing tensor '" + name + "'");
    return p;
  };
  auto linear = [&](const std::string& name, int64_t N, int64_t K, int64_t groups = 1) {
    return Linear{get(name + ".weight"), get(name + ".bias"), N, K, groups};
  };
  auto layernorm = [&](const std::string& name) { return LayerNormWeights{get(name + ".gamma"), get(name + ".beta")}; };
  const int64_t H = c.hidden_size, I = c.intermediate_size, E = c.embedding_size, V = c.vocab_size;
  w.word = get("embeddings.word");
  w.position = get("embeddings.position");
  if (c.has_token_types()) w.token_type = get("embeddings.token_type");
  w.emb_ln = layernorm("embeddings.ln");
  if (c.embedding_projection) w.emb_project = linear("embeddings.project", H, E);
  const LinearGroups& g = c.groups;
  for (int64_t l = 0; l < c.num_layer_weights(); ++l) {
    const std::string p = "layer." + std::to_string(l) + ".";
    LayerWeights lw;
    if (!g.any()) {
      lw.qkv = linear(p + "attn.qkv", 3 * H, H);
    } else {
      lw.q = linear(p + "attn.q", H, H, g.q);
      lw.k = linear(p + "attn.k", H, H, g.k);
      lw.v = linear(p + "attn.v", H, H, g.v);
    }
    lw.out = linear(p + "attn.out", H, H, g.post_attention);
    lw.attn_ln = layernorm(p + "attn.ln");
    lw.ffn_in = linear(p + "ffn.in", I, H, g.intermediate);
    lw.ffn_out = linear(p + "ffn.out", H, I, g.output);
    lw.ffn_ln = layernorm(p + "ffn.ln");
    w.layers.push_back(lw);
  }
  if (c.has_pooler) w.pooler = linear("pooler", H, H);
  const int64_t L = c.num_labels;
  switch (c.head) {
    case HeadKind::kNone: break;
    case HeadKind::kSequenceClassification:
      if (!c.classifier_on_pooler) w.pre_classifier = linear("head.pre", H, H);
      w.classifier = linear("head.classifier", L, H);
      break;
    case HeadKind::kTokenClassification: w.classifier = linear("head.classifier", L, H); break;
    case HeadKind::kQuestionAnswering: w.qa = linear("head.qa", 2, H); break;
    case HeadKind::kDiscriminator:
      w.disc_dense = linear("head.disc.dense", H, H);
      w.disc_out = linear("head.disc.out", 1, H);
      break;
    case HeadKind::kMaskedLM:
    case HeadKind::kPreTraining:
      w.mlm_transform = linear("head.mlm.transform", E, H);
      w.mlm_ln = layernorm("head.mlm.ln");
      w.mlm_decoder = Linear{get("head.mlm.decoder.weight", /*optional=*/true), get("head.mlm.decoder.bias"), V, E};
      if (!w.mlm_decoder.w) w.mlm_decoder.w = w.word;  // tied
      if (c.head == HeadKind::kPreTraining) w.nsp = linear("head.nsp", 2, H);
      break;
  }
  return missing;
}

}  // namespace bert
