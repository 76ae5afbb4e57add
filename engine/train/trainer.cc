// Trainer: the shared network (engine/model) in training mode on the model's backend, the head's
// loss and backward into a flat gradient region (engine/train/param_arena.h), the optimizer over
// the same regions, and checkpoints. The Model it was made from is not changed. With a communicator
// of several ranks it trains data-parallel: rank 0's parameters broadcast at creation, gradients
// reduced in buckets during the backward (engine/train/grad_sync.h), and with ZeRO a sharded optimizer.
#include <omp.h>

#include <chrono>
#include <cmath>
#include <cstring>

#include "bert/train.h"
#include "engine/model/network.h"
#include "engine/model/precision.h"
#include "engine/src/model_impl.h"
#include "engine/train/grad_sync.h"
#include "engine/train/param_arena.h"
#include "engine/train/param_optimizer.h"
#include "weights/bert_layout.h"
#include "weights/safetensors.h"

namespace bert {

struct Trainer::Impl {
  std::shared_ptr<const Model> model;
  const ModelConfig* c = nullptr;
  TrainerOptions o;
  std::unique_ptr<runtime::Backend> backend;
  std::unique_ptr<ParamArena> arena;  // parameters and gradients (fp32 masters)
  std::unique_ptr<model::Network> network;
  std::unique_ptr<ParamOptimizer> optimizer;
  uint64_t calls = 0;  // ForwardBackward calls: picks each call's dropout stream
  std::vector<OpProfile> profile;  // TrainerOptions.profile: the ops outside the network
  // Adds the seconds since `start` to the profile entry `op` (when profiling).
  void timed(const char* op, std::chrono::steady_clock::time_point start) {
    if (!o.profile) return;
    (void)backend->synchronize();
    const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    for (OpProfile& p : profile)
      if (p.op == op) {
        p.seconds += dt, ++p.calls;
        return;
      }
    profile.push_back(OpProfile{op, dt, 1, {}});
  }
  // Data parallelism (null for one process): the host communicator, the one the gradients travel on
  // (the same, or NCCL for CUDA), and the bucketed reduction.
  std::shared_ptr<Communicator> comm, grad_comm;
  std::unique_ptr<GradientSync> sync;
  bool distributed() const { return sync != nullptr; }
  bool writer() const { return !comm || comm->rank() == 0; }

  // The current parameters as a model source (F32 views of host memory that must outlive it).
  Result<ModelSource> source();
};

Trainer::Trainer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Trainer::~Trainer() = default;
const TrainerOptions& Trainer::options() const { return impl_->o; }

Result<std::unique_ptr<Trainer>> Trainer::Create(std::shared_ptr<const Model> model, const TrainerOptions& opts) {
  if (!model) return invalid_argument("Trainer::Create: model is null");
  const ModelConfig& c = model->impl().source.config;
  if (opts.max_batch <= 0) return invalid_argument("TrainerOptions.max_batch must be positive");
  if (opts.max_seq <= 0 || opts.max_seq > c.max_sequence_length())
    return out_of_range("TrainerOptions.max_seq " + std::to_string(opts.max_seq) + " must be in 1.." +
                        std::to_string(c.max_sequence_length()));
  if (opts.num_threads < 0 || opts.num_threads > kMaxThreads) return out_of_range("TrainerOptions.num_threads " + std::to_string(opts.num_threads) + " must be in 0.." + std::to_string(kMaxThreads));
  if (!(opts.dropout >= 0.f && opts.dropout < 1.f))
    return invalid_argument("TrainerOptions.dropout must be in [0, 1), got " + std::to_string(opts.dropout));
  const LossScaling& ls = opts.loss_scaling;
  if (!(ls.init_scale > 0.f && std::isfinite(ls.init_scale)) || !(ls.growth >= 1.f && std::isfinite(ls.growth)) ||
      !(ls.backoff > 0.f && ls.backoff <= 1.f) || ls.growth_interval < 1)
    return invalid_argument("TrainerOptions.loss_scaling needs init_scale > 0, growth >= 1, backoff in (0, 1] and "
                            "growth_interval >= 1");
  const Model::Impl& m = model->impl();
  if (m.options.precision != Precision::kF32)
    return unsupported(std::string("training keeps fp32 parameters: load the model in fp32 (this one is ") +
                       precision_name(m.options.precision) +
                       ") and pick the GEMM compute with TrainerOptions.precision");
  BERT_ASSIGN_OR_RETURN(model::PrecisionPolicy policy,
                        model::PrecisionPolicy::ForTraining(m.options.device, opts.precision, m.options.allow_tf32));
  auto impl = std::make_unique<Impl>();
  Impl& s = *impl;
  s.model = model;
  s.c = &c;
  s.o = opts;
  if (opts.zero_stage < 0 || opts.zero_stage > 2)
    return invalid_argument("TrainerOptions.zero_stage must be 0, 1 or 2, got " + std::to_string(opts.zero_stage));
  if (opts.bucket_bytes < 4096)
    return invalid_argument("TrainerOptions.bucket_bytes must be at least 4096, got " + std::to_string(opts.bucket_bytes));
  BERT_ASSIGN_OR_RETURN(s.backend, make_backend(m, policy.gemm_compute()));
  ParamArena::Layout layout;
  const bool dp = opts.communicator && opts.communicator->world_size() > 1;
  if (dp) {
    s.comm = opts.communicator;
    layout.world_size = s.comm->world_size(), layout.rank = s.comm->rank();
    layout.bucket_bytes = opts.bucket_bytes, layout.zero_stage = opts.zero_stage;
    // (fp16 loss scaling needs nothing more: every rank's optimizer sees the same reduced gradients,
    // so all of them skip the same overflowing steps and scale alike.)
  }
  BERT_ASSIGN_OR_RETURN(s.arena, ParamArena::Create(*s.backend, c, m.f32, layout));
  model::NetworkOptions no;
  no.max_batch = opts.max_batch, no.max_seq = opts.max_seq, no.training = true, no.dropout = opts.dropout;
  no.recompute = opts.recompute_activations, no.fused_attention = opts.fused_attention;
  no.profile = opts.profile;
  BERT_ASSIGN_OR_RETURN(s.network, model::Network::Create(c, s.arena->weights(), *s.backend, no));
  if (dp) {
    if (s.backend->device() == Device::kCpu) {
      s.grad_comm = s.comm;
    } else {
      BERT_ASSIGN_OR_RETURN(s.grad_comm, Communicator::ForCuda(s.comm));
    }
    s.grad_comm->set_stream(s.backend->queue());
    // Every rank starts from rank 0's parameters.
    BERT_RETURN_IF_ERROR(
        s.grad_comm->Broadcast(s.arena->params(), static_cast<int64_t>(s.arena->total() * sizeof(float)), 0).Wait());
    BERT_RETURN_IF_ERROR(s.backend->synchronize());
    s.sync = std::make_unique<GradientSync>(*s.grad_comm, *s.arena, *s.backend, c.num_layers);
    GradientSync* sync = s.sync.get();
    s.network->set_gradients_ready([sync](int64_t stage) { sync->on_ready(stage); });
  }
  BERT_ASSIGN_OR_RETURN(s.optimizer, make_param_optimizer(*s.backend, *s.arena, opts, s.grad_comm.get()));
  return std::unique_ptr<Trainer>(new Trainer(std::move(impl)));
}

void Trainer::ZeroGrad() { (void)impl_->arena->zero_grads(); }


Result<double> Trainer::ForwardBackward(const BatchInput& in, const TrainLabels& labels, float loss_scale,
                                        bool sync_gradients) {
  Impl& s = *impl_;
  const ModelConfig& c = *s.c;
  if (!in.input_ids) return invalid_argument("input_ids is null");
  if (in.batch < 1 || in.batch > s.o.max_batch || in.seq < 1 || in.seq > s.o.max_seq)
    return out_of_range("batch " + std::to_string(in.batch) + " x seq " + std::to_string(in.seq) +
                        " is outside the trainer's plan (" + std::to_string(s.o.max_batch) + " x " +
                        std::to_string(s.o.max_seq) + ")");
  if (!(loss_scale > 0.f && std::isfinite(loss_scale)))
    return invalid_argument("loss_scale must be positive and finite, got " + std::to_string(loss_scale));
  BERT_RETURN_IF_ERROR(validate_batch_values(c, in));
  BERT_RETURN_IF_ERROR(model::check_head_labels(c, labels, in.batch, in.seq));
  if (s.o.num_threads > 0) omp_set_num_threads(s.o.num_threads);
  const uint64_t rank = s.comm ? static_cast<uint64_t>(s.comm->rank()) : 0;
  const uint64_t stream = s.o.seed * 0x9E3779B97F4A7C15ull + (++s.calls) + rank * 0xD1B54A32D192ED03ull;
  BERT_RETURN_IF_ERROR(s.network->forward(in, stream));
  const float scale = loss_scale * s.optimizer->loss_scale();  // dynamic loss scaling (fp16 GEMMs)
  // ZeRO-2 keeps no whole gradients between backward passes: every micro-step reduces.
  const bool sync = s.distributed() && (sync_gradients || s.o.zero_stage == 2);
  Status began = sync ? s.sync->begin() : Status::Ok();
  auto backward = began.ok() ? s.network->backward(in, labels, scale, s.arena->gradients())
                             : Result<double>(began);
  if (sync) {
    const Status reduced = s.sync->finish();  // always: the other ranks are reducing these buckets
    if (backward.ok() && !reduced.ok()) return reduced;
  }
  BERT_ASSIGN_OR_RETURN(double loss, std::move(backward));
  if (!std::isfinite(loss)) return invalid_argument("the loss is " + std::to_string(loss) + " (not finite)");
  // With dynamic loss scaling an overflow is not an error: Step finds it and skips the update.
  const bool scaling = s.o.precision == TrainPrecision::kF16 && s.o.loss_scaling.enabled;
  bool finite = true;
  if (!scaling && s.arena->layout().zero_stage < 2) {  // (ZeRO-2: the optimizer's global check)
    const auto start = std::chrono::steady_clock::now();
    BERT_RETURN_IF_ERROR(s.backend->all_finite(s.arena->grads(), static_cast<int64_t>(s.arena->total()), &finite));
    s.timed("check.finite", start);
  }
  if (!finite) {  // name the first parameter whose gradient is not finite
    BERT_ASSIGN_OR_RETURN(const float* g, s.arena->host_grads());
    for (const ParamArena::Entry& e : s.arena->entries())
      for (int64_t i = 0; i < e.n; ++i)
        if (!std::isfinite(g[e.offset + i]))
          return invalid_argument("the gradient of '" + e.name + "' is not finite (loss " + std::to_string(loss) + ")");
  }
  return loss;
}

Status Trainer::SyncGradients() {
  if (!impl_->distributed()) return Status::Ok();
  return impl_->sync->reduce_all();
}

TrainerMemory Trainer::Memory() const {
  const ParamArena& a = *impl_->arena;
  TrainerMemory m;
  m.parameters = static_cast<int64_t>(a.total() * sizeof(float));
  m.gradients = static_cast<int64_t>((a.grad_total() + (a.shard_grads() ? a.shard_total() : 0)) * sizeof(float));
  m.optimizer_state = static_cast<int64_t>(2 * a.moment_total() * sizeof(float));
  m.activations = static_cast<int64_t>(impl_->network->workspace_bytes());
  return m;
}

TrainerCommStats Trainer::CommStats() const {
  TrainerCommStats c;
  if (!impl_->distributed()) return c;
  c.world_size = impl_->comm->world_size(), c.zero_stage = impl_->o.zero_stage;
  const GradientSync::Stats& g = impl_->sync->stats();
  c.synced_steps = g.steps, c.bytes_per_step = g.bytes_per_step, c.wait_seconds = g.wait_seconds;
  return c;
}

uint64_t Trainer::ParameterChecksum() const {
  auto p = impl_->arena->host_params();
  if (!p.ok()) return 0;
  uint64_t h = 1469598103934665603ull;  // FNV-1a over the bits
  const uint32_t* bits = reinterpret_cast<const uint32_t*>(*p);
  for (size_t i = 0; i < impl_->arena->total(); ++i) h = (h ^ bits[i]) * 1099511628211ull;
  return h;
}

Result<double> Trainer::Step(float lr) {
  if (impl_->o.num_threads > 0) omp_set_num_threads(impl_->o.num_threads);
  const auto start = std::chrono::steady_clock::now();
  auto norm = impl_->optimizer->step(lr);
  impl_->timed("optimizer.step", start);
  return norm;
}

std::vector<OpProfile> Trainer::Profile() const {
  std::vector<OpProfile> all = impl_->network->profile();
  all.insert(all.end(), impl_->profile.begin(), impl_->profile.end());
  return all;
}

float Trainer::loss_scale() const { return impl_->optimizer->loss_scale(); }

int64_t Trainer::steps() const { return impl_->optimizer->steps(); }

Result<ModelSource> Trainer::Impl::source() {
  BERT_ASSIGN_OR_RETURN(const float* host, arena->host_params());
  const ModelSource& from = model->impl().source;
  ModelSource m;
  m.config = from.config;
  m.vocab = from.vocab;
  m.lower_case = from.lower_case;
  m.origin = "trainer";
  for (const ParamArena::Entry& e : arena->entries()) {
    Tensor t;
    t.dtype = DType::kF32;
    t.shape = e.shape;
    t.data = host + e.offset;
    m.tensors[e.name] = t;
  }
  return m;
}

Result<std::shared_ptr<const Model>> Trainer::Snapshot() const {
  BERT_ASSIGN_OR_RETURN(ModelSource m, impl_->source());
  for (auto& [name, t] : m.tensors) {  // the snapshot owns copies: training goes on
    Tensor copy = make_owned_tensor(DType::kF32, t.shape);
    std::memcpy(mutable_data(copy), t.data, t.nbytes());
    t = copy;
  }
  LoadOptions load;  // on the trainer's device (fp32), so evaluating a snapshot runs where training does
  load.device = impl_->backend->device();
  return load_model_from_source(std::move(m), load);
}

Status Trainer::Save(const std::string& path) const {
  if (!impl_->writer()) return Status::Ok();  // rank 0 writes (every rank holds the same parameters)
  BERT_ASSIGN_OR_RETURN(ModelSource m, impl_->source());
  return write_engine_file(path, m, DType::kF32);
}

Status Trainer::SaveCheckpoint(const std::string& path, const std::string& state) const {
  BERT_ASSIGN_OR_RETURN(auto extra, impl_->optimizer->state());  // collective with ZeRO
  if (!impl_->writer()) return Status::Ok();
  BERT_ASSIGN_OR_RETURN(ModelSource m, impl_->source());
  Tensor calls = make_owned_tensor(DType::kI64, {1});
  *static_cast<int64_t*>(mutable_data(calls)) = static_cast<int64_t>(impl_->calls);
  extra.emplace_back("trainer.calls", calls);
  return write_engine_file(path, m, DType::kF32, extra, {{"training_state", state}});
}

Result<std::string> Trainer::LoadCheckpoint(const std::string& path) {
  BERT_ASSIGN_OR_RETURN(SafetensorsFile f, SafetensorsFile::Open(path));
  auto state = f.metadata().find("training_state");
  const Tensor* calls = f.find("trainer.calls");
  if (state == f.metadata().end() || !calls || calls->dtype != DType::kI64 || calls->numel() != 1)
    return format_error(path + ": not a training checkpoint (no training_state / trainer.calls)");
  // Every parameter must be there with our shape, in F32, before anything changes.
  ParamArena& arena = *impl_->arena;
  for (const ParamArena::Entry& e : arena.entries()) {
    const Tensor* t = f.find(e.name);
    if (!t) return format_error(path + ": checkpoint has no tensor '" + e.name + "' (a different model?)");
    if (t->dtype != DType::kF32 || t->numel() != e.n)
      return format_error(path + ": tensor '" + e.name + "' is " + std::string(dtype_name(t->dtype)) + " " +
                          shape_string(t->shape) + "; this model needs F32 with " + std::to_string(e.n) + " values");
  }
  BERT_RETURN_IF_ERROR(impl_->optimizer->load_state(f.tensors()).with_context(path));
  std::vector<float> values(arena.total(), 0.f);
  for (const ParamArena::Entry& e : arena.entries())
    std::memcpy(values.data() + e.offset, f.find(e.name)->data, sizeof(float) * e.n);
  BERT_RETURN_IF_ERROR(arena.set_params(values.data()));
  impl_->calls = static_cast<uint64_t>(calls->as<int64_t>()[0]);
  ZeroGrad();
  return state->second;
}

std::vector<NamedArray> Trainer::Gradients() const {
  const ModelConfig& c = *impl_->c;
  auto grads = impl_->arena->host_grads();
  if (!grads.ok()) return {};
  const float* g = *grads;
  const float unscale = 1.f / loss_scale();  // dynamic loss scaling keeps the gradients scaled until Step
  std::vector<NamedArray> out;
  const std::string prefix = c.head == HeadKind::kNone ? "" : hf_base_prefix(c);
  for (const ParamSpec& spec : param_specs(c, prefix)) {
    const ParamArena::Entry* e = impl_->arena->find(spec.name);
    if (!e) continue;  // the tied decoder: its gradient is in the word embeddings'
    const size_t parts = spec.hf_names.size();
    const size_t per = static_cast<size_t>(e->n) / parts;
    for (size_t i = 0; i < parts; ++i) {
      NamedArray a;
      a.name = spec.hf_names[i];
      a.shape = spec.shape;
      a.shape[0] /= static_cast<int64_t>(parts);
      if (spec.conv1d) a.shape.push_back(1);
      const float* from = g + e->offset + i * per;
      a.values.assign(from, from + per);
      if (unscale != 1.f)
        for (float& v : a.values) v *= unscale;  // (a power of two: exact)
      out.push_back(std::move(a));
    }
  }
  return out;
}

}  // namespace bert
