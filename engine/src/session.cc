// Session: the shared network (engine/model) in inference mode on the model's backend, its outputs
// published by name. On the CPU outputs are views into the network's workspace; on a device they are
// copied back into host buffers that grow once to their largest size.
#include <omp.h>

#include <chrono>

#include "engine/model/network.h"
#include "engine/model/precision.h"
#include "engine/src/model_impl.h"

namespace bert {

struct Session::Impl {
  std::shared_ptr<const Model> model;
  const Model::Impl* m = nullptr;
  SessionOptions options;
  std::unique_ptr<runtime::Backend> backend;
  std::unique_ptr<model::Network> network;
  std::vector<OutputView> outputs;  // from the last successful Run; entries reused (no allocation per Run)
  size_t published = 0;             // outputs[0, published) are valid
  std::vector<std::vector<float>> host;  // device outputs copied back (per output slot)
  double last_run_seconds = 0;

  Status validate(const BatchInput& in) const;
  Status run(const BatchInput& in);
};

Session::Session(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Session::~Session() = default;
const SessionOptions& Session::options() const { return impl_->options; }
std::vector<OpProfile> Session::Profile() const { return impl_->network->profile(); }
size_t Session::workspace_bytes() const { return impl_->network->workspace_bytes(); }
double Session::LastRunDeviceSeconds() const { return impl_->last_run_seconds; }

Result<std::unique_ptr<Session>> Session::Create(std::shared_ptr<const Model> model, const SessionOptions& opts) {
  if (!model) return invalid_argument("Session::Create: model is null");
  auto impl = std::make_unique<Impl>();
  impl->model = model;
  impl->m = &model->impl();
  impl->options = opts;
  const ModelConfig& c = impl->m->source.config;
  SessionOptions& o = impl->options;
  const int64_t max_seq = c.max_sequence_length();
  if (o.max_seq == 0) o.max_seq = static_cast<int>(max_seq);
  if (o.max_batch <= 0) return invalid_argument("SessionOptions.max_batch must be positive, got " + std::to_string(o.max_batch));
  if (o.max_seq <= 0 || o.max_seq > max_seq)
    return out_of_range("SessionOptions.max_seq " + std::to_string(o.max_seq) + " must be in 1.." +
                        std::to_string(max_seq) + " (what the model's max_position_embeddings " +
                        std::to_string(c.max_position_embeddings) + " allows)");
  if (o.num_threads < 0 || o.num_threads > kMaxThreads)
    return out_of_range("SessionOptions.num_threads " + std::to_string(o.num_threads) + " must be in 0.." +
                        std::to_string(kMaxThreads));
  if (o.normalize && o.pooling == Pooling::kNone)
    return invalid_argument("SessionOptions.normalize needs a pooling (cls, mean or max)");

  const LoadOptions& lo = impl->m->options;
  BERT_ASSIGN_OR_RETURN(model::PrecisionPolicy policy,
                        model::PrecisionPolicy::ForInference(lo.device, lo.precision, lo.allow_tf32));
  BERT_ASSIGN_OR_RETURN(impl->backend, make_backend(*impl->m, policy.gemm_compute()));
  BERT_RETURN_IF_ERROR(impl->backend->set_attention_compute(policy.at(model::Site::kAttention).compute));
  model::NetworkOptions no;
  no.max_batch = o.max_batch, no.max_seq = o.max_seq, no.training = false;
  no.keep_hidden_states = o.keep_hidden_states, no.pooling = o.pooling, no.normalize = o.normalize;
  no.fused_attention = impl->backend->has_fused_attention(false, c.head_dim());
  no.remove_padding = o.remove_padding;
  no.profile = o.profile;
  BERT_ASSIGN_OR_RETURN(impl->network,
                        model::Network::Create(c, impl->m->weights(), *impl->backend, no));
  return std::unique_ptr<Session>(new Session(std::move(impl)));
}

Status Session::Impl::validate(const BatchInput& in) const {
  const ModelConfig& c = m->source.config;
  if (!in.input_ids) return invalid_argument("input_ids is null");
  if (in.batch < 1 || in.batch > options.max_batch)
    return out_of_range("batch " + std::to_string(in.batch) + " is outside 1.." + std::to_string(options.max_batch) +
                        " (the session's max_batch)");
  if (in.seq < 1 || in.seq > options.max_seq)
    return out_of_range("sequence length " + std::to_string(in.seq) + " is outside 1.." +
                        std::to_string(options.max_seq) + " (the session's max_seq; the model's max_position_embeddings " +
                        std::to_string(c.max_position_embeddings) + " allows " + std::to_string(c.max_sequence_length()) + ")");
  return validate_batch_values(c, in);
}

Status Session::Impl::run(const BatchInput& in) {
  const auto start = std::chrono::steady_clock::now();
  BERT_RETURN_IF_ERROR(network->forward(in));
  const bool on_host = backend->device() == Device::kCpu;
  size_t i = 0;
  for (const model::DeviceOutput& d : network->outputs()) {
    if (i == outputs.size()) outputs.emplace_back(), host.emplace_back();
    OutputView& out = outputs[i];
    if (out.name != d.name) out.name = d.name;
    out.shape = d.shape;
    out.data = d.data;
    if (!on_host && options.copy_outputs) {
      int64_t n = 1;
      for (int64_t s : d.shape) n *= s;
      if (host[i].size() < static_cast<size_t>(n)) host[i].resize(n);
      BERT_RETURN_IF_ERROR(backend->download(host[i].data(), d.data, sizeof(float) * n).with_context(d.name));
      out.data = host[i].data();
    }
    ++i;
  }
  BERT_RETURN_IF_ERROR(backend->synchronize());
  if (on_host || options.copy_outputs) published = i;
  if (!on_host) last_run_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return Status::Ok();
}

Status Session::Run(const BatchInput& in) {
  impl_->published = 0;  // a failed Run leaves no outputs from an earlier one
  BERT_RETURN_IF_ERROR(impl_->validate(in));
  if (impl_->options.num_threads > 0) omp_set_num_threads(impl_->options.num_threads);
  return impl_->run(in);
}

Status Session::Calibrate(const BatchInput& in) {
  BERT_RETURN_IF_ERROR(impl_->validate(in));
  if (impl_->m->options.precision != Precision::kInt8)
    return unsupported(std::string("Calibrate is for int8 sessions; this model is ") +
                       precision_name(impl_->m->options.precision));
  impl_->published = 0;
  runtime::Backend& be = *impl_->backend;
  BERT_RETURN_IF_ERROR(be.set_int8_activation_scales(kernels::Int8ActivationScales::kRecord));
  if (impl_->options.num_threads > 0) omp_set_num_threads(impl_->options.num_threads);
  Status st = impl_->run(in);
  BERT_RETURN_IF_ERROR(be.set_int8_activation_scales(kernels::Int8ActivationScales::kStatic));
  return st.with_context("calibration run");
}

Result<OutputView> Session::Output(std::string_view name) const {
  const size_t n = impl_->published;
  for (size_t i = 0; i < n; ++i)
    if (impl_->outputs[i].name == name) return impl_->outputs[i];
  if (n == 0 && !impl_->options.copy_outputs && impl_->m->device)
    return not_found("outputs stay on the device in this session (SessionOptions.copy_outputs is false)");
  if (n == 0) return not_found("no outputs: call Run first (a failed Run publishes none)");
  std::string known;
  for (size_t i = 0; i < n; ++i) known += (known.empty() ? "" : ", ") + impl_->outputs[i].name;
  return not_found("this model has no output '" + std::string(name) + "' (it has: " + known + ")");
}

std::vector<std::string> Session::OutputNames() const {
  return impl_->model->output_names(impl_->options.keep_hidden_states, impl_->options.pooling != Pooling::kNone);
}

}  // namespace bert
