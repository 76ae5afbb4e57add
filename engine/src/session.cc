// Session: a planned workspace plus the CPU forward pass of a BERT encoder and its heads.
#include <omp.h>

#include <chrono>
#include <cmath>
#include <cstring>

#include "engine/src/model_impl.h"
#include "kernels/gemm.h"

namespace bert {

namespace {

kernels::Activation to_activation(HiddenAct a) {
  switch (a) {
    case HiddenAct::kGeluErf: return kernels::Activation::kGeluErf;
    case HiddenAct::kGeluTanh: return kernels::Activation::kGeluTanh;
    case HiddenAct::kRelu: return kernels::Activation::kRelu;
    case HiddenAct::kGeluQuick: return kernels::Activation::kGeluQuick;
  }
  return kernels::Activation::kGeluErf;
}

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
  size_t hidden = 0, attn_x = 0, tmp = 0, qkv = 0, scores = 0, ctx = 0, ffn = 0, pooled = 0;
  size_t logits = 0, logits2 = 0, mlm_t = 0;
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
std::vector<OpProfile> Session::Profile() const { return impl_->profile; }
size_t Session::workspace_bytes() const { return impl_->ws.bytes(); }

Result<std::unique_ptr<Session>> Session::Create(std::shared_ptr<const Model> model, const SessionOptions& opts) {
  if (!model) return invalid_argument("Session::Create: model is null");
  auto impl = std::make_unique<Impl>();
  impl->model = model;
  impl->m = &model->impl();
  impl->options = opts;
  const ModelConfig& c = impl->m->source.config;
  SessionOptions& o = impl->options;
  if (o.max_seq == 0) o.max_seq = static_cast<int>(c.max_position_embeddings);
  if (o.max_batch <= 0) return invalid_argument("SessionOptions.max_batch must be positive, got " + std::to_string(o.max_batch));
  if (o.max_seq <= 0 || o.max_seq > c.max_position_embeddings)
    return out_of_range("SessionOptions.max_seq " + std::to_string(o.max_seq) + " must be in 1.." +
                        std::to_string(c.max_position_embeddings) + " (the model's max_position_embeddings)");
  if (o.num_threads < 0) return invalid_argument("SessionOptions.num_threads must be >= 0");

  const size_t B = o.max_batch, S = o.max_seq, T = B * S;
  const size_t H = c.hidden_size, I = c.intermediate_size, V = c.vocab_size, nh = c.num_heads;
  Impl& s = *impl;
  s.hidden_slots = o.keep_hidden_states ? static_cast<int>(c.num_layers) + 1 : 2;
  s.hidden = s.ws.add(s.hidden_slots * T * H);
  s.attn_x = s.ws.add(T * H);
  s.tmp = s.ws.add(T * H);
  s.qkv = s.ws.add(T * 3 * H);
  s.scores = s.ws.add(B * nh * S * S);
  s.ctx = s.ws.add(T * H);
  s.ffn = s.ws.add(T * I);
  if (c.has_pooler()) s.pooled = s.ws.add(B * H);
  switch (c.head) {
    case HeadKind::kNone: break;
    case HeadKind::kSequenceClassification: s.logits = s.ws.add(B * c.num_labels); break;
    case HeadKind::kTokenClassification: s.logits = s.ws.add(T * c.num_labels); break;
    case HeadKind::kQuestionAnswering:
      s.logits = s.ws.add(T);
      s.logits2 = s.ws.add(T);
      break;
    case HeadKind::kMaskedLM:
    case HeadKind::kPreTraining:
      s.mlm_t = s.ws.add(T * H);
      s.logits = s.ws.add(T * V);
      if (c.head == HeadKind::kPreTraining) s.logits2 = s.ws.add(B * 2);
      break;
  }
  if (!s.ws.allocate())
    return out_of_range("cannot allocate a " + std::to_string(s.ws.bytes() >> 20) + " MiB workspace for max_batch " +
                        std::to_string(B) + " x max_seq " + std::to_string(S) + "; lower them");
  s.positions.resize(T);
  for (int64_t l = 0; l <= c.num_layers; ++l) s.hidden_names.push_back("hidden_states." + std::to_string(l));
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
                        std::to_string(options.max_seq) + " (the session's max_seq; the model's position table has " +
                        std::to_string(c.max_position_embeddings) + ")");
  const int64_t n = static_cast<int64_t>(in.batch) * in.seq;
  auto where = [&](const char* what, int64_t i) {
    return std::string(what) + "[" + std::to_string(i / in.seq) + "][" + std::to_string(i % in.seq) + "]";
  };
  for (int64_t i = 0; i < n; ++i)
    if (in.input_ids[i] < 0 || in.input_ids[i] >= c.vocab_size)
      return out_of_range(where("input_ids", i) + " = " + std::to_string(in.input_ids[i]) +
                          " is outside the vocab (vocab_size " + std::to_string(c.vocab_size) + ")");
  if (in.token_type_ids)
    for (int64_t i = 0; i < n; ++i)
      if (in.token_type_ids[i] < 0 || in.token_type_ids[i] >= c.type_vocab_size)
        return out_of_range(where("token_type_ids", i) + " = " + std::to_string(in.token_type_ids[i]) +
                            " is outside 0.." + std::to_string(c.type_vocab_size - 1) + " (type_vocab_size)");
  if (in.attention_mask)
    for (int64_t i = 0; i < n; ++i)
      if (in.attention_mask[i] != 0 && in.attention_mask[i] != 1)
        return invalid_argument(where("attention_mask", i) + " = " + std::to_string(in.attention_mask[i]) +
                                " (must be 0 or 1)");
  return Status::Ok();
}

Status Session::Run(const BatchInput& in) {
  BERT_RETURN_IF_ERROR(impl_->validate(in));
  if (impl_->options.num_threads > 0) omp_set_num_threads(impl_->options.num_threads);
  return impl_->forward(in);
}

Status Session::Impl::forward(const BatchInput& in) {
  const ModelConfig& c = m->source.config;
  const BertWeights& w = m->w;
  const kernels::CpuKernels& k = *m->kernels;
  const int64_t B = in.batch, S = in.seq, T = B * S;
  const int64_t H = c.hidden_size, I = c.intermediate_size, nh = c.num_heads, dh = c.head_dim();
  const kernels::Activation act = to_activation(c.hidden_act);
  Status failed;
  auto linear = [&](const char* op, const float* x, const float* wt, const float* bias, float* y, int64_t M, int64_t N,
                    int64_t K, kernels::Activation a = kernels::Activation::kIdentity, int64_t ldx = 0,
                    const kernels::PackedWeights* packed = nullptr) {
    Timed timed(this, op);
    kernels::LinearArgs args;
    args.x = x, args.w = wt, args.bias = bias, args.y = y, args.M = M, args.N = N, args.K = K, args.act = a,
    args.ldx = ldx, args.packed = packed;
    if (!gemm.linear(args) && failed.ok())
      failed = internal_error("oneDNN could not plan a " + std::to_string(M) + "x" + std::to_string(N) + "x" +
                              std::to_string(K) + " matmul");
  };
  auto layernorm = [&](const float* x, const float* residual, const float* g, const float* b, float* y, int64_t rows,
                       int64_t cols) {
    Timed timed(this, "layernorm");
    kernels::LayerNormArgs a;
    a.x = x, a.residual = residual, a.gamma = g, a.beta = b, a.y = y, a.rows = rows, a.cols = cols,
    a.eps = c.layer_norm_eps;
    k.layernorm(a);
  };

  // Embeddings -> hidden_states.0
  for (int64_t t = 0; t < T; ++t) positions[t] = static_cast<int32_t>(t % S);
  {
    Timed timed(this, "embed");
    kernels::EmbedArgs e;
    e.input_ids = in.input_ids, e.positions = positions.data(), e.token_types = in.token_type_ids;
    e.word_table = w.word, e.position_table = w.position, e.type_table = w.token_type;
    e.gamma = w.emb_ln_g, e.beta = w.emb_ln_b, e.out = hidden_slot(0), e.tokens = T, e.width = H;
    e.eps = c.layer_norm_eps;
    k.embed(e);
  }

  float* qkv_buf = ws.at(qkv);
  float* scores_buf = ws.at(scores);
  float* ctx_buf = ws.at(ctx);
  float* tmp_buf = ws.at(tmp);
  float* attn_buf = ws.at(attn_x);
  float* ffn_buf = ws.at(ffn);
  for (int64_t l = 0; l < c.num_layers; ++l) {
    const LayerWeights& lw = w.layers[l];
    const float* x = hidden_slot(static_cast<int>(l));
    float* y = hidden_slot(static_cast<int>(l) + 1);
    linear("gemm.qkv", x, lw.qkv_w, lw.qkv_b, qkv_buf, T, 3 * H, H, kernels::Activation::kIdentity, 0, lw.qkv_p);  // [T, 3H]: Q | K | V
    // scores[b, h] = Q[b, h] K[b, h]^T  -> [B, nh, S, S]
    kernels::BatchedMatmulArgs qk;
    qk.a = qkv_buf, qk.b = qkv_buf + H, qk.c = scores_buf;
    qk.batch0 = B, qk.batch1 = nh, qk.M = S, qk.N = S, qk.K = dh;
    const int64_t qs[4] = {S * 3 * H, dh, 3 * H, 1}, ks[4] = {S * 3 * H, dh, 1, 3 * H}, ss[4] = {nh * S * S, S * S, S, 1};
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
    pv.a = scores_buf, pv.b = qkv_buf + 2 * H, pv.c = ctx_buf;
    pv.batch0 = B, pv.batch1 = nh, pv.M = S, pv.N = dh, pv.K = S;
    const int64_t vs[4] = {S * 3 * H, dh, 3 * H, 1}, cs[4] = {S * H, dh, H, 1};
    std::memcpy(pv.a_strides, ss, sizeof ss), std::memcpy(pv.b_strides, vs, sizeof vs),
        std::memcpy(pv.c_strides, cs, sizeof cs);
    if (Timed t(this, "attention.context"); !gemm.batched_matmul(pv)) return internal_error("oneDNN could not plan the attention context matmul");
    linear("gemm.attn_out", ctx_buf, lw.out_w, lw.out_b, tmp_buf, T, H, H, kernels::Activation::kIdentity, 0, lw.out_p);
    layernorm(tmp_buf, x, lw.attn_ln_g, lw.attn_ln_b, attn_buf, T, H);
    linear("gemm.ffn_in", attn_buf, lw.ffn_in_w, lw.ffn_in_b, ffn_buf, T, I, H, act, 0, lw.ffn_in_p);
    linear("gemm.ffn_out", ffn_buf, lw.ffn_out_w, lw.ffn_out_b, tmp_buf, T, H, I, kernels::Activation::kIdentity, 0,
           lw.ffn_out_p);
    layernorm(tmp_buf, attn_buf, lw.ffn_ln_g, lw.ffn_ln_b, y, T, H);
  }
  BERT_RETURN_IF_ERROR(failed);

  const float* last = hidden_slot(static_cast<int>(c.num_layers));
  published = 0;
  if (options.keep_hidden_states)
    for (int64_t l = 0; l <= c.num_layers; ++l) publish(hidden_names[l], {B, S, H}, hidden_slot(static_cast<int>(l)));
  publish("last_hidden_state", {B, S, H}, last);
  if (c.has_pooler()) {  // tanh(W h[CLS] + b): the first token of each sequence (row stride S*H)
    linear("pooler", last, w.pooler_w, w.pooler_b, ws.at(pooled), B, H, H, kernels::Activation::kTanh, S * H);
    publish("pooler_output", {B, H}, ws.at(pooled));
  }
  const int64_t L = c.num_labels, V = c.vocab_size;
  switch (c.head) {
    case HeadKind::kNone: break;
    case HeadKind::kSequenceClassification:
      linear("head", ws.at(pooled), w.classifier_w, w.classifier_b, ws.at(logits), B, L, H);
      publish("logits", {B, L}, ws.at(logits));
      break;
    case HeadKind::kTokenClassification:
      linear("head", last, w.classifier_w, w.classifier_b, ws.at(logits), T, L, H);
      publish("logits", {B, S, L}, ws.at(logits));
      break;
    case HeadKind::kQuestionAnswering:  // one row of qa_outputs each, so both outputs come out dense
      linear("head", last, w.qa_w, w.qa_b, ws.at(logits), T, 1, H);
      linear("head", last, w.qa_w + H, w.qa_b + 1, ws.at(logits2), T, 1, H);
      publish("start_logits", {B, S}, ws.at(logits));
      publish("end_logits", {B, S}, ws.at(logits2));
      break;
    case HeadKind::kMaskedLM:
    case HeadKind::kPreTraining: {
      float* t = ws.at(mlm_t);
      linear("head", last, w.mlm_transform_w, w.mlm_transform_b, t, T, H, H, act);
      layernorm(t, nullptr, w.mlm_ln_g, w.mlm_ln_b, t, T, H);
      linear("head.mlm_decoder", t, w.mlm_decoder_w, w.mlm_decoder_b, ws.at(logits), T, V, H,
             kernels::Activation::kIdentity, 0, w.mlm_decoder_p);
      if (c.head == HeadKind::kMaskedLM) {
        publish("logits", {B, S, V}, ws.at(logits));
      } else {
        linear("head", ws.at(pooled), w.nsp_w, w.nsp_b, ws.at(logits2), B, 2, H);
        publish("prediction_logits", {B, S, V}, ws.at(logits));
        publish("seq_relationship_logits", {B, 2}, ws.at(logits2));
      }
      break;
    }
  }
  if (!failed.ok()) published = 0;
  return failed;
}

Result<OutputView> Session::Output(std::string_view name) const {
  const size_t n = impl_->published;
  for (size_t i = 0; i < n; ++i)
    if (impl_->outputs[i].name == name) return impl_->outputs[i];
  if (n == 0) return not_found("no outputs yet: call Run first");
  std::string known;
  for (size_t i = 0; i < n; ++i) known += (known.empty() ? "" : ", ") + impl_->outputs[i].name;
  return not_found("this model has no output '" + std::string(name) + "' (it has: " + known + ")");
}

std::vector<std::string> Session::OutputNames() const {
  return impl_->model->output_names(impl_->options.keep_hidden_states);
}

}  // namespace bert
