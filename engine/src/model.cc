// Model::Load: read a model source, bring every weight to F32 once (one arena), resolve the kernels.
#include <algorithm>

#include "engine/src/model_impl.h"

namespace bert {

Model::Model(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Model::~Model() = default;

const ModelInfo& Model::info() const { return impl_->info; }
const std::vector<std::string>& Model::vocab() const { return impl_->source.vocab; }
bool Model::lower_case() const { return impl_->source.lower_case; }

std::vector<std::string> Model::output_names(bool with_hidden_states) const {
  const ModelConfig& c = impl_->source.config;
  std::vector<std::string> names;
  if (with_hidden_states)
    for (int64_t i = 0; i <= c.num_layers; ++i) names.push_back("hidden_states." + std::to_string(i));
  names.push_back("last_hidden_state");
  if (c.has_pooler()) names.push_back("pooler_output");
  switch (c.head) {
    case HeadKind::kNone: break;
    case HeadKind::kSequenceClassification:
    case HeadKind::kTokenClassification:
    case HeadKind::kMaskedLM: names.push_back("logits"); break;
    case HeadKind::kQuestionAnswering:
      names.push_back("start_logits");
      names.push_back("end_logits");
      break;
    case HeadKind::kPreTraining:
      names.push_back("prediction_logits");
      names.push_back("seq_relationship_logits");
      break;
  }
  return names;
}

namespace {

Status resolve_weights(Model::Impl& m) {
  const ModelConfig& c = m.source.config;
  Status missing;
  auto get = [&](const std::string& name, bool optional = false) -> const float* {
    auto it = m.f32.find(name);
    if (it == m.f32.end()) {
      if (!optional && missing.ok()) missing = internal_error("model is missing tensor '" + name + "'");
      return nullptr;
    }
    return it->second.as<float>();
  };
  BertWeights& w = m.w;
  w.word = get("embeddings.word");
  w.position = get("embeddings.position");
  w.token_type = get("embeddings.token_type");
  w.emb_ln_g = get("embeddings.ln.gamma");
  w.emb_ln_b = get("embeddings.ln.beta");
  for (int64_t l = 0; l < c.num_layers; ++l) {
    const std::string p = "layer." + std::to_string(l) + ".";
    w.layers.push_back(LayerWeights{
        get(p + "attn.qkv.weight"), get(p + "attn.qkv.bias"), get(p + "attn.out.weight"),
        get(p + "attn.out.bias"), get(p + "attn.ln.gamma"), get(p + "attn.ln.beta"),
        get(p + "ffn.in.weight"), get(p + "ffn.in.bias"), get(p + "ffn.out.weight"),
        get(p + "ffn.out.bias"), get(p + "ffn.ln.gamma"), get(p + "ffn.ln.beta")});
  }
  if (c.has_pooler()) {
    w.pooler_w = get("pooler.weight");
    w.pooler_b = get("pooler.bias");
  }
  switch (c.head) {
    case HeadKind::kNone: break;
    case HeadKind::kSequenceClassification:
    case HeadKind::kTokenClassification:
      w.classifier_w = get("head.classifier.weight");
      w.classifier_b = get("head.classifier.bias");
      break;
    case HeadKind::kQuestionAnswering:
      w.qa_w = get("head.qa.weight");
      w.qa_b = get("head.qa.bias");
      break;
    case HeadKind::kMaskedLM:
    case HeadKind::kPreTraining:
      w.mlm_transform_w = get("head.mlm.transform.weight");
      w.mlm_transform_b = get("head.mlm.transform.bias");
      w.mlm_ln_g = get("head.mlm.ln.gamma");
      w.mlm_ln_b = get("head.mlm.ln.beta");
      w.mlm_decoder_w = get("head.mlm.decoder.weight", /*optional=*/true);
      if (!w.mlm_decoder_w) w.mlm_decoder_w = w.word;  // tied
      w.mlm_decoder_b = get("head.mlm.decoder.bias");
      if (c.head == HeadKind::kPreTraining) {
        w.nsp_w = get("head.nsp.weight");
        w.nsp_b = get("head.nsp.bias");
      }
      break;
  }
  return missing;
}

// Packs the big GEMM weights once for oneDNN's blocked kernels.
void pack_weights(Model::Impl& m) {
  const ModelConfig& c = m.source.config;
  auto pack = [&](const float* w, int64_t N, int64_t K) -> const kernels::PackedWeights* {
    if (!w) return nullptr;
    m.packed.push_back(kernels::pack_linear_weights(w, N, K));
    return m.packed.back().get();
  };
  const int64_t H = c.hidden_size, I = c.intermediate_size;
  for (LayerWeights& l : m.w.layers) {
    l.qkv_p = pack(l.qkv_w, 3 * H, H);
    l.out_p = pack(l.out_w, H, H);
    l.ffn_in_p = pack(l.ffn_in_w, I, H);
    l.ffn_out_p = pack(l.ffn_out_w, H, I);
  }
  m.w.mlm_decoder_p = pack(m.w.mlm_decoder_w, c.vocab_size, H);
}

}  // namespace

Result<std::shared_ptr<const Model>> Model::Load(const std::string& path, const LoadOptions& options) {
  if (options.device != Device::kCpu)
    return unsupported("device cuda is not available in this build (CPU only)");
  BERT_ASSIGN_OR_RETURN(ModelSource source, load_model_source(path));
  return load_model_from_source(std::move(source), options);
}

Result<std::shared_ptr<const Model>> make_model(std::unique_ptr<Model::Impl> impl) {
  return std::shared_ptr<const Model>(new Model(std::move(impl)));
}

Result<std::shared_ptr<const Model>> load_model_from_source(ModelSource source, const LoadOptions& options) {
  auto impl = std::make_unique<Model::Impl>();
  impl->source = std::move(source);
  const std::string& path = impl->source.origin;
  impl->kernels = &kernels::cpu_kernels();

  // One arena for every tensor that is not already F32.
  size_t arena_floats = 0;
  std::string stored = "F32";
  for (const auto& [name, t] : impl->source.tensors)
    if (t.dtype != DType::kF32) {
      arena_floats += static_cast<size_t>(t.numel());
      stored = std::string(dtype_name(t.dtype));
    }
  if (arena_floats) impl->arena.reset(new (std::nothrow) float[arena_floats]);
  if (arena_floats && !impl->arena) return internal_error(path + ": cannot allocate the weight arena");
  float* next = impl->arena.get();
  for (const auto& [name, t] : impl->source.tensors) {
    if (t.dtype == DType::kF32) {
      impl->f32[name] = t;
      continue;
    }
    Tensor f;
    f.dtype = DType::kF32;
    f.shape = t.shape;
    f.data = next;
    if (t.dtype == DType::kF16) impl->kernels->convert_f16_to_f32(t.as<uint16_t>(), next, t.numel());
    else if (t.dtype == DType::kBF16) impl->kernels->convert_bf16_to_f32(t.as<uint16_t>(), next, t.numel());
    else return unsupported(path + ": tensor '" + name + "' has dtype " + std::string(dtype_name(t.dtype)));
    next += t.numel();
    impl->f32[name] = f;
  }
  BERT_RETURN_IF_ERROR(resolve_weights(*impl).with_context(path));
  if (options.pack_weights) pack_weights(*impl);

  const ModelConfig& c = impl->source.config;
  ModelInfo& info = impl->info;
  info.model_type = c.model_type;
  info.architecture = c.architecture;
  info.head = head_kind_name(c.head);
  info.vocab_size = c.vocab_size;
  info.hidden_size = c.hidden_size;
  info.num_layers = c.num_layers;
  info.num_heads = c.num_heads;
  info.intermediate_size = c.intermediate_size;
  info.max_position_embeddings = c.max_position_embeddings;
  info.type_vocab_size = c.type_vocab_size;
  info.num_labels = c.num_labels;
  info.labels = c.labels;
  info.weights_dtype = stored;
  info.cpu_isa = kernels::cpu_isa_name(impl->kernels->isa);
  return make_model(std::move(impl));
}

}  // namespace bert
