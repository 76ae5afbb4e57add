// Session: a planned workspace plus the CPU forward pass of every supported encoder family and its heads.
#include <omp.h>

#include <chrono>
#include <cmath>
#include <cstring>

#include "engine/src/model_impl.h"
#ifdef BERT_HAVE_CUDA
#include "engine/src/cuda/device_model.h"
#endif
#include "kernels/gemm.h"
#include "kernels/pooling.h"

namespace bert {

namespace {

// Carves one allocation into float buffers, 64-byte aligned.
class Workspace {
 public:
  size_t add(size_t floats) {
    size_t at = size_;
    size_ += (floats + 15) / 16 * 16;
    return at;
  }
  bool allocate() {
    data_.reset(new (std::nothrow) float[size_ + 16]);
    if (!data_) return false;
    base_ = reinterpret_cast<float*>((reinterpret_cast<uintptr_t>(data_.get()) + 63) & ~uintptr_t(63));
    return true;
  }
  float* at(size_t offset) const { return base_ + offset; }
  size_t bytes() const { return size_ * sizeof(float); }

 private:
  std::unique_ptr<float[]> data_;
  float* base_ = nullptr;
  size_t size_ = 0;
};

}  // namespace

struct Session::Impl {
  std::shared_ptr<const Model> model;
  const Model::Impl* m = nullptr;
  SessionOptions options;
  kernels::GemmPlanner gemm;
  Workspace ws;
  std::vector<int32_t> positions;  // [max tokens]
  // Buffer offsets.
  size_t emb = 0, hidden = 0, attn_x = 0, tmp = 0, qkv = 0, scores = 0, ctx = 0, ffn = 0, pooled = 0;
  size_t first = 0, logits = 0, logits2 = 0, mlm_t = 0, sentence = 0;
  int hidden_slots = 0;
  std::vector<OutputView> outputs;  // from the last Run; entries are reused, so a Run allocates nothing
  size_t published = 0;             // outputs[0, published) are valid
  std::vector<std::string> hidden_names;  // "hidden_states.<i>", made once

  // Records an output of this run, reusing the entry of the same name from the previous run.
  void publish(std::string_view name, std::initializer_list<int64_t> shape, const float* data) {
    if (published == outputs.size()) outputs.push_back({std::string(name), {}, nullptr});
    OutputView& o = outputs[published++];
    if (o.name != name) o.name = name;
    o.shape.assign(shape);
    o.data = data;
  }
  std::vector<OpProfile> profile;   // per op, when options.profile
#ifdef BERT_HAVE_CUDA
  std::unique_ptr<cuda::DeviceRunner> device;  // the CUDA forward (device cuda models), else null
#endif

  // Times the scope into profile[op] when profiling (ops are few; a linear scan is cheapest).
  struct Timed {
    Impl* s;
    const char* op;
    std::chrono::steady_clock::time_point start;
    Timed(Impl* s, const char* op) : s(s), op(op) {
      if (s->options.profile) start = std::chrono::steady_clock::now();
    }
    ~Timed() {
      if (!s->options.profile) return;
      double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      for (auto& p : s->profile)
        if (p.op == op) {
          p.seconds += dt;
          ++p.calls;
          return;
        }
      s->profile.push_back({op, dt, 1});
    }
  };

  float* hidden_slot(int layer) const {
    const ModelConfig& c = m->source.config;
    int slot = options.keep_hidden_states ? layer : layer % 2;
    return ws.at(hidden) + static_cast<size_t>(slot) * options.max_batch * options.max_seq * c.hidden_size;
  }

  Status validate(const BatchInput& in) const;
  Status forward(const BatchInput& in);
};

Session::Session(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Session::~Session() = default;
const SessionOptions& Session::options() const { return impl_->options; }

#ifdef BERT_HAVE_CUDA
std::vector<OpProfile> Session::Profile() const {
  return impl_->device ? impl_->device->profile() : impl_->profile;
}
size_t Session::workspace_bytes() const {
  return impl_->device ? impl_->device->workspace_bytes() : impl_->ws.bytes();
}
double Session::LastRunDeviceSeconds() const { return impl_->device ? impl_->device->last_run_seconds() : 0.0; }
#else
std::vector<OpProfile> Session::Profile() const { return impl_->profile; }
size_t Session::workspace_bytes() const { return impl_->ws.bytes(); }
double Session::LastRunDeviceSeconds() const { return 0.0; }
#endif

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
  if (o.num_threads < 0) return invalid_argument("SessionOptions.num_threads must be >= 0");
  if (o.normalize && o.pooling == Pooling::kNone)
    return invalid_argument("SessionOptions.normalize needs a pooling (cls, mean or max)");

  Impl& s = *impl;
  for (int64_t l = 0; l <= c.num_layers; ++l) s.hidden_names.push_back("hidden_states." + std::to_string(l));
  s.positions.resize(static_cast<size_t>(o.max_batch) * o.max_seq);
  if (impl->m->device) {
#ifdef BERT_HAVE_CUDA
    BERT_ASSIGN_OR_RETURN(s.device, cuda::DeviceRunner::Create(c, impl->m->device, o));
#endif
    return std::unique_ptr<Session>(new Session(std::move(impl)));
  }
  if (o.remove_padding)
    return unsupported("SessionOptions.remove_padding is a CUDA option; this model runs on the CPU");

  const size_t B = o.max_batch, S = o.max_seq, T = B * S;
  const size_t H = c.hidden_size, I = c.intermediate_size, V = c.vocab_size, nh = c.num_heads, E = c.embedding_size;
  s.hidden_slots = o.keep_hidden_states ? static_cast<int>(c.num_layers) + 1 : 2;
  if (c.embedding_projection) s.emb = s.ws.add(T * E);
  s.hidden = s.ws.add(s.hidden_slots * T * H);
  s.attn_x = s.ws.add(T * H);
  s.tmp = s.ws.add(T * H);
  s.qkv = s.ws.add(T * 3 * H);
  s.scores = s.ws.add(B * nh * S * S);
  s.ctx = s.ws.add(T * H);
  s.ffn = s.ws.add(T * I);
  if (c.has_pooler) s.pooled = s.ws.add(B * H);
  switch (c.head) {
    case HeadKind::kNone: break;
    case HeadKind::kSequenceClassification:
      if (!c.classifier_on_pooler) s.first = s.ws.add(B * H);
      s.logits = s.ws.add(B * c.num_labels);
      break;
    case HeadKind::kTokenClassification: s.logits = s.ws.add(T * c.num_labels); break;
    case HeadKind::kQuestionAnswering:
      s.logits = s.ws.add(T);
      s.logits2 = s.ws.add(T);
      break;
    case HeadKind::kDiscriminator: s.logits = s.ws.add(T); break;  // the dense layer reuses tmp
    case HeadKind::kMaskedLM:
    case HeadKind::kPreTraining:
      s.mlm_t = s.ws.add(T * E);
      s.logits = s.ws.add(T * V);
      if (c.head == HeadKind::kPreTraining) s.logits2 = s.ws.add(B * 2);
      break;
  }
  if (o.pooling != Pooling::kNone) s.sentence = s.ws.add(B * H);
  if (!s.ws.allocate())
    return out_of_range("cannot allocate a " + std::to_string(s.ws.bytes() >> 20) + " MiB workspace for max_batch " +
                        std::to_string(B) + " x max_seq " + std::to_string(S) + "; lower them");
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

Status Session::Run(const BatchInput& in) {
  BERT_RETURN_IF_ERROR(impl_->validate(in));
  if (impl_->options.num_threads > 0) omp_set_num_threads(impl_->options.num_threads);
#ifdef BERT_HAVE_CUDA
  if (impl_->device) {
    Impl& s = *impl_;
    compute_position_ids(s.m->source.config, in.input_ids, in.batch, in.seq, s.positions.data());
    s.published = 0;
    Status st = s.device->Run(in, s.positions.data(), [&s](std::string_view name, std::initializer_list<int64_t> shape,
                                                           const float* data) { s.publish(name, shape, data); });
    if (!st.ok()) s.published = 0;
    return st;
  }
#endif
  return impl_->forward(in);
}

Status Session::Calibrate(const BatchInput& in) {
  BERT_RETURN_IF_ERROR(impl_->validate(in));
#ifdef BERT_HAVE_CUDA
  if (impl_->device) {
    compute_position_ids(impl_->m->source.config, in.input_ids, in.batch, in.seq, impl_->positions.data());
    return impl_->device->Calibrate(in, impl_->positions.data());
  }
#endif
  return invalid_argument("Calibrate is for int8 sessions on device cuda; this session runs fp32 on the CPU");
}

Status Session::Impl::forward(const BatchInput& in) {
  const ModelConfig& c = m->source.config;
  const BertWeights& w = m->w;
  const kernels::CpuKernels& k = *m->kernels;
  const int64_t B = in.batch, S = in.seq, T = B * S;
  const int64_t H = c.hidden_size, E = c.embedding_size, nh = c.num_heads, dh = c.head_dim();
  using kernels::Activation;
  const Activation act = to_activation(c.hidden_act);
  Status failed;
  // y = act(x W^T + b) over M rows of x (row stride ldx; 0 = dense).
  auto linear = [&](const char* op, const float* x, const Linear& lin, float* y, int64_t M,
                    Activation a = Activation::kIdentity, int64_t ldx = 0) {
    Timed timed(this, op);
    kernels::LinearArgs args;
    args.x = x, args.w = lin.w, args.bias = lin.b, args.y = y, args.M = M, args.N = lin.N, args.K = lin.K;
    args.groups = lin.groups, args.act = a, args.ldx = ldx, args.packed = lin.packed;
    if (!gemm.linear(args) && failed.ok())
      failed = internal_error(std::string("oneDNN could not plan ") + op + ": " + std::to_string(M) + "x" +
                              std::to_string(lin.N) + "x" + std::to_string(lin.K) + " matmul");
  };
  auto layernorm = [&](const float* x, const float* residual, const LayerNormWeights& ln, float* y, int64_t rows,
                       int64_t cols) {
    Timed timed(this, "layernorm");
    kernels::LayerNormArgs a;
    a.x = x, a.residual = residual, a.gamma = ln.gamma, a.beta = ln.beta, a.y = y, a.rows = rows, a.cols = cols,
    a.eps = c.layer_norm_eps;
    k.layernorm(a);
  };

  // Embeddings -> hidden_states.0 (through the E -> H projection when the model factorises them).
  compute_position_ids(c, in.input_ids, B, S, positions.data());
  float* embedded = c.embedding_projection ? ws.at(emb) : hidden_slot(0);
  {
    Timed timed(this, "embed");
    kernels::EmbedArgs e;
    e.input_ids = in.input_ids, e.positions = positions.data();
    e.token_types = c.has_token_types() ? in.token_type_ids : nullptr;
    e.word_table = w.word, e.position_table = w.position, e.type_table = w.token_type;
    e.gamma = w.emb_ln.gamma, e.beta = w.emb_ln.beta, e.out = embedded, e.tokens = T, e.width = E;
    e.eps = c.layer_norm_eps;
    k.embed(e);
  }
  if (c.embedding_projection) linear("gemm.embed_project", embedded, w.emb_project, hidden_slot(0), T);

  float* qkv_buf = ws.at(qkv);
  float* scores_buf = ws.at(scores);
  float* ctx_buf = ws.at(ctx);
  float* tmp_buf = ws.at(tmp);
  float* attn_buf = ws.at(attn_x);
  float* ffn_buf = ws.at(ffn);
  for (int64_t l = 0; l < c.num_layers; ++l) {
    const LayerWeights& lw = w.layers[c.layer_weights_index(l)];  // ALBERT runs one set many times
    const float* x = hidden_slot(static_cast<int>(l));
    float* y = hidden_slot(static_cast<int>(l) + 1);
    // Q, K, V: one fused GEMM into [T, 3H] rows, or (grouped linears) three GEMMs into [T, H] planes.
    const float *q, *kk, *v;
    int64_t ld;
    if (lw.qkv) {
      linear("gemm.qkv", x, lw.qkv, qkv_buf, T);
      q = qkv_buf, kk = qkv_buf + H, v = qkv_buf + 2 * H, ld = 3 * H;
    } else {
      linear("gemm.qkv", x, lw.q, qkv_buf, T);
      linear("gemm.qkv", x, lw.k, qkv_buf + T * H, T);
      linear("gemm.qkv", x, lw.v, qkv_buf + 2 * T * H, T);
      q = qkv_buf, kk = qkv_buf + T * H, v = qkv_buf + 2 * T * H, ld = H;
    }
    // scores[b, h] = Q[b, h] K[b, h]^T  -> [B, nh, S, S]
    kernels::BatchedMatmulArgs qk;
    qk.a = q, qk.b = kk, qk.c = scores_buf;
    qk.batch0 = B, qk.batch1 = nh, qk.M = S, qk.N = S, qk.K = dh;
    const int64_t qs[4] = {S * ld, dh, ld, 1}, ks[4] = {S * ld, dh, 1, ld}, ss[4] = {nh * S * S, S * S, S, 1};
    std::memcpy(qk.a_strides, qs, sizeof qs), std::memcpy(qk.b_strides, ks, sizeof ks),
        std::memcpy(qk.c_strides, ss, sizeof ss);
    if (Timed t(this, "attention.scores"); !gemm.batched_matmul(qk)) return internal_error("oneDNN could not plan the attention scores matmul");
    kernels::SoftmaxMaskedArgs sm;
    sm.scores = scores_buf, sm.key_mask = in.attention_mask, sm.batch = B, sm.heads = nh, sm.q_len = S, sm.k_len = S;
    sm.scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(dh)));
    {
      Timed t(this, "softmax");
      k.softmax_masked(sm);
    }
    // ctx[b, s, h*dh + d] = sum_j P[b, h, s, j] V[b, j, h*dh + d]
    kernels::BatchedMatmulArgs pv;
    pv.a = scores_buf, pv.b = v, pv.c = ctx_buf;
    pv.batch0 = B, pv.batch1 = nh, pv.M = S, pv.N = dh, pv.K = S;
    const int64_t vs[4] = {S * ld, dh, ld, 1}, cs[4] = {S * H, dh, H, 1};
    std::memcpy(pv.a_strides, ss, sizeof ss), std::memcpy(pv.b_strides, vs, sizeof vs),
        std::memcpy(pv.c_strides, cs, sizeof cs);
    if (Timed t(this, "attention.context"); !gemm.batched_matmul(pv)) return internal_error("oneDNN could not plan the attention context matmul");
    linear("gemm.attn_out", ctx_buf, lw.out, tmp_buf, T);
    layernorm(tmp_buf, x, lw.attn_ln, attn_buf, T, H);
    linear("gemm.ffn_in", attn_buf, lw.ffn_in, ffn_buf, T, act);
    linear("gemm.ffn_out", ffn_buf, lw.ffn_out, tmp_buf, T);
    layernorm(tmp_buf, attn_buf, lw.ffn_ln, y, T, H);
  }
  BERT_RETURN_IF_ERROR(failed);

  const float* last = hidden_slot(static_cast<int>(c.num_layers));
  published = 0;
  if (options.keep_hidden_states)
    for (int64_t l = 0; l <= c.num_layers; ++l) publish(hidden_names[l], {B, S, H}, hidden_slot(static_cast<int>(l)));
  publish("last_hidden_state", {B, S, H}, last);
  if (c.has_pooler) {  // tanh(W h[CLS] + b): the first token of each sequence (row stride S*H)
    linear("pooler", last, w.pooler, ws.at(pooled), B, Activation::kTanh, S * H);
    publish("pooler_output", {B, H}, ws.at(pooled));
  }
  const int64_t L = c.num_labels, V = c.vocab_size;
  switch (c.head) {
    case HeadKind::kNone: break;
    case HeadKind::kSequenceClassification:
      if (c.classifier_on_pooler) {
        linear("head", ws.at(pooled), w.classifier, ws.at(logits), B);
      } else {  // first token -> dense -> activation -> classifier
        linear("head", last, w.pre_classifier, ws.at(first), B, to_activation(c.classifier_act), S * H);
        linear("head", ws.at(first), w.classifier, ws.at(logits), B);
      }
      publish("logits", {B, L}, ws.at(logits));
      break;
    case HeadKind::kTokenClassification:
      linear("head", last, w.classifier, ws.at(logits), T);
      publish("logits", {B, S, L}, ws.at(logits));
      break;
    case HeadKind::kQuestionAnswering:  // one row of qa_outputs each, so both outputs come out dense
      linear("head", last, Linear{w.qa.w, w.qa.b, 1, H}, ws.at(logits), T);
      linear("head", last, Linear{w.qa.w + H, w.qa.b + 1, 1, H}, ws.at(logits2), T);
      publish("start_logits", {B, S}, ws.at(logits));
      publish("end_logits", {B, S}, ws.at(logits2));
      break;
    case HeadKind::kDiscriminator:  // per token: dense -> hidden_act -> one logit
      linear("head", last, w.disc_dense, tmp_buf, T, act);
      linear("head", tmp_buf, w.disc_out, ws.at(logits), T);
      publish("logits", {B, S}, ws.at(logits));
      break;
    case HeadKind::kMaskedLM:
    case HeadKind::kPreTraining: {
      float* t = ws.at(mlm_t);
      linear("head", last, w.mlm_transform, t, T, to_activation(c.mlm_act));
      layernorm(t, nullptr, w.mlm_ln, t, T, E);
      linear("head.mlm_decoder", t, w.mlm_decoder, ws.at(logits), T);
      if (c.head == HeadKind::kMaskedLM) {
        publish("logits", {B, S, V}, ws.at(logits));
      } else {
        linear("head", ws.at(pooled), w.nsp, ws.at(logits2), B);
        publish("prediction_logits", {B, S, V}, ws.at(logits));
        publish(c.sentence_head_output(), {B, 2}, ws.at(logits2));
      }
      break;
    }
  }
  if (options.pooling != Pooling::kNone) {
    Timed timed(this, "pooling");
    kernels::PoolArgs p;
    p.hidden = last, p.mask = in.attention_mask, p.out = ws.at(sentence), p.batch = B, p.seq = S, p.width = H;
    p.kind = options.pooling == Pooling::kCls    ? kernels::TokenPooling::kCls
             : options.pooling == Pooling::kMean ? kernels::TokenPooling::kMean
                                                 : kernels::TokenPooling::kMax;
    p.normalize = options.normalize;
    kernels::pool_tokens_f32_ref(p);
    publish("sentence_embedding", {B, H}, ws.at(sentence));
  }
  if (!failed.ok()) published = 0;
  return failed;
}

Result<OutputView> Session::Output(std::string_view name) const {
  const size_t n = impl_->published;
  for (size_t i = 0; i < n; ++i)
    if (impl_->outputs[i].name == name) return impl_->outputs[i];
  if (n == 0 && !impl_->options.copy_outputs && impl_->m->device)
    return not_found("outputs stay on the GPU in this session (SessionOptions.copy_outputs is false)");
  if (n == 0) return not_found("no outputs yet: call Run first");
  std::string known;
  for (size_t i = 0; i < n; ++i) known += (known.empty() ? "" : ", ") + impl_->outputs[i].name;
  return not_found("this model has no output '" + std::string(name) + "' (it has: " + known + ")");
}

std::vector<std::string> Session::OutputNames() const {
  return impl_->model->output_names(impl_->options.keep_hidden_states, impl_->options.pooling != Pooling::kNone);
}

}  // namespace bert
