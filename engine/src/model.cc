// Model::Load: read a model source, bring every weight to F32 once (one arena), resolve the kernels.
#include <algorithm>
#include <functional>
#include <map>
#include <set>

#include "engine/core/guard.h"
#include "engine/model/network.h"
#include "engine/model/precision.h"
#include "engine/src/model_impl.h"
#include "weights/bert_layout.h"

namespace bert {

Model::Model(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Model::~Model() = default;

const ModelInfo& Model::info() const { return impl_->info; }
const std::vector<std::string>& Model::vocab() const { return impl_->source.vocab; }
bool Model::lower_case() const { return impl_->source.lower_case; }

std::vector<std::string> Model::output_names(bool with_hidden_states, bool with_sentence_embedding) const {
  const ModelConfig& c = impl_->source.config;
  std::vector<std::string> names;
  if (with_hidden_states)
    for (int64_t i = 0; i <= c.num_layers; ++i) names.push_back("hidden_states." + std::to_string(i));
  names.push_back("last_hidden_state");
  if (c.has_pooler) names.push_back("pooler_output");
  for (std::string& name : model::head_output_names(c)) names.push_back(std::move(name));
  if (with_sentence_embedding) names.push_back("sentence_embedding");
  return names;
}

double Model::forward_flops(int64_t batch, int64_t seq) const {
  const BertWeights& w = impl_->w;
  const ModelConfig& c = impl_->source.config;
  const double T = double(batch) * seq, B = double(batch);
  auto gemm = [](const Linear& l, double rows) { return l ? 2.0 * rows * l.N * l.K / l.groups : 0.0; };
  double layers = 0;
  for (int64_t l = 0; l < c.num_layers; ++l) {
    const LayerWeights& lw = w.layers[c.layer_weights_index(l)];
    for (const Linear* lin : {&lw.qkv, &lw.q, &lw.k, &lw.v, &lw.out, &lw.ffn_in, &lw.ffn_out}) layers += gemm(*lin, T);
    layers += 2.0 * 2.0 * B * seq * seq * c.hidden_size;  // QK^T and PV over all heads
  }
  double heads = gemm(w.emb_project, T) + gemm(w.pooler, B) + gemm(w.pre_classifier, B) + gemm(w.nsp, B) +
                 gemm(w.disc_dense, T) + gemm(w.disc_out, T) + gemm(w.qa, T) + gemm(w.mlm_transform, T) +
                 gemm(w.mlm_decoder, T);
  heads += gemm(w.classifier, c.head == HeadKind::kTokenClassification ? T : B);
  return layers + heads;
}

Status validate_batch_values(const ModelConfig& c, const BatchInput& in) {
  const int64_t n = static_cast<int64_t>(in.batch) * in.seq;
  auto where = [&](const char* what, int64_t i) {
    return std::string(what) + "[" + std::to_string(i / in.seq) + "][" + std::to_string(i % in.seq) + "]";
  };
  for (int64_t i = 0; i < n; ++i)
    if (in.input_ids[i] < 0 || in.input_ids[i] >= c.vocab_size)
      return out_of_range(where("input_ids", i) + " = " + std::to_string(in.input_ids[i]) +
                          " is outside the vocab (vocab_size " + std::to_string(c.vocab_size) + ")");
  if (in.token_type_ids && !c.has_token_types()) {
    for (int64_t i = 0; i < n; ++i)
      if (in.token_type_ids[i] != 0)
        return invalid_argument(where("token_type_ids", i) + " = " + std::to_string(in.token_type_ids[i]) + ": " +
                                c.model_type + " models have no token types (pass none, or zeros)");
  } else if (in.token_type_ids) {
    for (int64_t i = 0; i < n; ++i)
      if (in.token_type_ids[i] < 0 || in.token_type_ids[i] >= c.type_vocab_size)
        return out_of_range(where("token_type_ids", i) + " = " + std::to_string(in.token_type_ids[i]) +
                            " is outside 0.." + std::to_string(c.type_vocab_size - 1) + " (type_vocab_size)");
  }
  if (in.attention_mask)
    for (int64_t i = 0; i < n; ++i)
      if (in.attention_mask[i] != 0 && in.attention_mask[i] != 1)
        return invalid_argument(where("attention_mask", i) + " = " + std::to_string(in.attention_mask[i]) +
                                " (must be 0 or 1)");
  return Status::Ok();
}

const char* precision_name(Precision p) {
  switch (p) {
    case Precision::kF32: return "fp32";
    case Precision::kF16: return "fp16";
    case Precision::kInt8: return "int8";
    case Precision::kBF16: return "bf16";
  }
  return "?";
}

namespace {

// Packs the big GEMM weights once for oneDNN's kernels: the encoder's linear layers in the policy's
// element type (bf16 / int8 always packed: that is their storage), the rest fp32 when asked.
Status pack_weights(Model::Impl& m, kernels::WeightType encoder, bool pack_f32) {
  auto pack = [&](Linear& l) {
    if (!l || !pack_f32) return;
    m.packed.push_back(kernels::pack_linear_weights(l.w, l.N, l.K, l.groups));
    l.packed = m.packed.back().get();
  };
  for (size_t i = 0; i < m.w.layers.size(); ++i)
    for (Linear* lin : {&m.w.layers[i].qkv, &m.w.layers[i].q, &m.w.layers[i].k, &m.w.layers[i].v, &m.w.layers[i].out,
                        &m.w.layers[i].ffn_in, &m.w.layers[i].ffn_out}) {
      if (encoder == kernels::WeightType::kF32 || !*lin) {
        pack(*lin);
        continue;
      }
      const std::string what = std::string(kernels::weight_type_name(encoder)) + " weights of layer " + std::to_string(i);
      if (lin->groups != 1)
        return unsupported(what + ": grouped linear layers (SqueezeBERT) have no " + kernels::weight_type_name(encoder) +
                           " kernel; load it in fp32");
      auto p = kernels::pack_linear_weights_lowp(lin->w, lin->N, lin->K, encoder);
      if (!p.ok()) return p.status().with_context(what);
      m.packed.push_back(std::move(*p));
      lin->packed = m.packed.back().get();
    }
  pack(m.w.emb_project);
  pack(m.w.mlm_decoder);
  return Status::Ok();
}

}  // namespace

Result<std::shared_ptr<const Model>> Model::Load(const std::string& path, const LoadOptions& options) {
  return guarded(path, [&]() -> Result<std::shared_ptr<const Model>> {
    BERT_ASSIGN_OR_RETURN(ModelSource source, load_model_source(path));
    return load_model_from_source(std::move(source), options);
  });
}

Result<std::shared_ptr<const Model>> make_model(std::unique_ptr<Model::Impl> impl) {
  return std::shared_ptr<const Model>(new Model(std::move(impl)));
}

namespace {

// Uploads every F32 tensor into one device arena and binds the device view of the weights.
Status upload_weights(Model::Impl& m) {
  runtime::Backend& be = *m.device;
  size_t floats = 0;
  for (const auto& [name, t] : m.f32) floats += (static_cast<size_t>(t.numel()) + 63) / 64 * 64;
  void* p = be.allocate(floats * sizeof(float));
  if (!p)
    return out_of_range("cannot allocate " + std::to_string((floats * 4) >> 20) + " MiB for the weights on " +
                        be.name());
  m.device_arena = runtime::DeviceBuffer(&be, p);
  std::map<std::string, const float*> placed;
  float* next = static_cast<float*>(p);
  for (const auto& [name, t] : m.f32) {
    BERT_RETURN_IF_ERROR(be.upload(next, t.data, t.nbytes()).with_context("uploading " + name));
    placed[name] = next;
    next += (static_cast<size_t>(t.numel()) + 63) / 64 * 64;
  }
  m.info.device_weight_bytes = floats * sizeof(float);
  BERT_RETURN_IF_ERROR(be.synchronize());  // sessions read the weights from their own streams
  return bind_weights(m.source.config, [&](const std::string& name) -> const float* {
    auto it = placed.find(name);
    return it == placed.end() ? nullptr : it->second;
  }, m.device_w);
}

}  // namespace

Result<std::unique_ptr<runtime::Backend>> make_backend(const Model::Impl& m, runtime::GemmCompute compute) {
  if (!m.device) return runtime::make_cpu_backend(compute);
  return runtime::make_cuda_backend(compute);
}

Result<std::shared_ptr<const Model>> load_model_from_source(ModelSource source, const LoadOptions& options) {
  BERT_ASSIGN_OR_RETURN(model::PrecisionPolicy policy,
                        model::PrecisionPolicy::ForInference(options.device, options.precision, options.allow_tf32));
  auto impl = std::make_unique<Model::Impl>();
  impl->options = options;
  impl->source = std::move(source);
  const std::string& path = impl->source.origin;
  impl->kernels = &kernels::cpu_kernels();

  // Only the model's parameters (a training checkpoint also holds optimizer state).
  std::set<std::string> wanted;
  for (const ParamSpec& spec : param_specs(impl->source.config)) wanted.insert(spec.name);
  for (auto it = impl->source.tensors.begin(); it != impl->source.tensors.end();)
    it = wanted.count(it->first) ? std::next(it) : impl->source.tensors.erase(it);
  if (!options.allow_non_finite)  // a NaN weight would print confident labels with null probabilities
    for (const auto& [name, t] : impl->source.tensors)
      if (Status st = check_finite(t, path + ": tensor '" + name + "'"); !st.ok())
        return Status(st.code(), st.message() + " (LoadOptions.allow_non_finite, bert_run --allow-non-finite, "
                                                "accepts it)");
  // One arena for every tensor that is not already F32.
  size_t arena_floats = 0;
  std::string stored = impl->source.stored_dtype.empty() ? "F32" : impl->source.stored_dtype;
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
  const auto lookup = [&](const std::string& name) -> const float* {
    auto it = impl->f32.find(name);
    return it == impl->f32.end() ? nullptr : it->second.as<float>();
  };
  BERT_RETURN_IF_ERROR(bind_weights(impl->source.config, lookup, impl->w).with_context(path));
  if (options.device == Device::kCpu)
    BERT_RETURN_IF_ERROR(pack_weights(*impl, policy.encoder_weights(), options.pack_weights).with_context(path));
  if (options.device == Device::kCuda) {
    BERT_ASSIGN_OR_RETURN(impl->device, runtime::make_cuda_backend(policy.gemm_compute()));
    BERT_RETURN_IF_ERROR(upload_weights(*impl).with_context(path));
    impl->info.device = impl->device->name();
  }

  const ModelConfig& c = impl->source.config;
  ModelInfo& info = impl->info;
  info.model_type = c.model_type;
  info.family = model_family_name(c.family);
  info.architecture = c.architecture;
  info.head = head_kind_name(c.head);
  info.vocab_size = c.vocab_size;
  info.hidden_size = c.hidden_size;
  info.num_layers = c.num_layers;
  info.num_heads = c.num_heads;
  info.intermediate_size = c.intermediate_size;
  info.max_position_embeddings = c.max_position_embeddings;
  info.max_seq = c.max_sequence_length();
  info.type_vocab_size = c.type_vocab_size;
  info.embedding_size = c.embedding_size;
  info.num_layer_weights = c.num_layer_weights();
  info.num_labels = c.num_labels;
  info.labels = c.labels;
  info.weights_dtype = stored;
  info.cpu_isa = kernels::cpu_isa_name(impl->kernels->isa);
  if (info.device.empty()) info.device = "cpu";
  info.precision = precision_name(options.precision);
  info.precision_detail = policy.describe();
  return make_model(std::move(impl));
}

}  // namespace bert
