// Trainer: the training-mode forward pass (keeping every activation the backward needs), the
// losses of every head, and the backward pass into F32 gradient buffers. Kernels come from
// kernels/train.h and the GemmPlanner (linear backward = two strided matmuls, grouped or not).
#include <omp.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <map>

#include "bert/train.h"
#ifdef BERT_HAVE_CUDA
#include "engine/src/cuda/device_model.h"
#include "engine/src/cuda/device_trainer.h"
#endif
#include "engine/src/model_impl.h"
#include "engine/src/optimizer.h"
#include "kernels/gemm.h"
#include "kernels/train.h"
#include "weights/bert_layout.h"
#include "weights/safetensors.h"

namespace bert {

namespace {

using kernels::Activation;

// A float buffer of a fixed size, zero-initialised.
using Buffer = std::vector<float>;

float* mut(const float* p) { return const_cast<float*>(p); }  // gradient views are bound as const

// Activations of one encoder layer, kept for the backward.
struct LayerSaved {
  Buffer qkv;    // [T, 3H] (fused) or three [T, H] planes (grouped)
  Buffer probs;  // [B, nh, S, S] softmax output (before attention dropout)
  Buffer ctx;    // [T, H]
  Buffer s1;     // [T, H] attention output + residual: the first LayerNorm's input
  Buffer a;      // [T, H] first LayerNorm's output
  Buffer f_pre;  // [T, I] intermediate before the activation
  Buffer f_act;  // [T, I] after it
  Buffer s2;     // [T, H] FFN output + residual: the second LayerNorm's input
};

}  // namespace

struct Trainer::Impl {
  std::shared_ptr<const Model> model;
  const ModelConfig* c = nullptr;
  TrainerOptions o;
  std::map<std::string, Buffer> params, grads;  // engine names
  BertWeights w, g;                             // views into params and grads
  kernels::GemmPlanner gemm;
  Optimizer optimizer;
  uint64_t calls = 0;  // ForwardBackward calls: picks each call's dropout stream
#ifdef BERT_HAVE_CUDA
  // Device cuda: the parameters, gradients and optimizer live on the GPU; `params` and `grads` are
  // host copies refreshed by pull() when something reads them.
  std::unique_ptr<cuda::DeviceTrainer> device;
#endif
  // Refreshes the host copies from the GPU (device cuda; a no-op on the CPU).
  Status pull(bool want_params, bool want_grads) const;

  // The current parameters as a model source (F32 views of `params`, which must outlive it).
  ModelSource source() const;

  // Planned buffers (sizes for max_batch x max_seq).
  std::vector<int32_t> positions;
  Buffer emb_sum, emb_ln;  // [T, E]
  std::vector<Buffer> hidden;  // L + 1 of [T, H]
  std::vector<LayerSaved> saved;
  Buffer probs_drop, d_probs, d_qkv, d_ffn, d_h, d_a, d_tmp, tmp, d_emb;
  // Heads.
  Buffer pooled_pre, pooled, cls_in, first_pre, first, head_pre, head_act, head_ln, logits, d_logits, d_x, d_y;
  Buffer start_logits, end_logits, targets_f;

  Status check_labels(const BatchInput& in, const TrainLabels& y) const;
  Result<double> run(const BatchInput& in, const TrainLabels& y, float loss_scale);
};

namespace {

size_t T_of(const TrainerOptions& o) { return size_t(o.max_batch) * o.max_seq; }

}  // namespace

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
  if (!(opts.dropout >= 0.f && opts.dropout < 1.f))
    return invalid_argument("TrainerOptions.dropout must be in [0, 1), got " + std::to_string(opts.dropout));
  const LossScaling& ls = opts.loss_scaling;
  if (!(ls.init_scale > 0.f && std::isfinite(ls.init_scale)) || !(ls.growth >= 1.f && std::isfinite(ls.growth)) ||
      !(ls.backoff > 0.f && ls.backoff <= 1.f) || ls.growth_interval < 1)
    return invalid_argument("TrainerOptions.loss_scaling needs init_scale > 0, growth >= 1, backoff in (0, 1] and "
                            "growth_interval >= 1");
  if (!model->impl().device && opts.precision != TrainPrecision::kF32)
    return unsupported(std::string("TrainerOptions.precision ") + train_precision_name(opts.precision) +
                       " needs device cuda; the CPU trainer computes in fp32");
  if (!model->impl().device && (opts.fused_attention || opts.recompute_activations))
    return unsupported(std::string("TrainerOptions.") +
                       (opts.fused_attention ? "fused_attention" : "recompute_activations") +
                       " is a CUDA option; this model is on the CPU");
  auto impl = std::make_unique<Impl>();
  Impl& s = *impl;
  s.model = model;
  s.c = &c;
  s.o = opts;
  for (const auto& [name, t] : model->impl().f32) {
    s.params[name].assign(t.as<float>(), t.as<float>() + t.numel());
    s.grads[name].assign(t.numel(), 0.f);
  }
  auto lookup = [](std::map<std::string, Buffer>& m) {
    return [&m](const std::string& name) -> const float* {
      auto it = m.find(name);
      return it == m.end() ? nullptr : it->second.data();
    };
  };
  BERT_RETURN_IF_ERROR(bind_weights(c, lookup(s.params), s.w));
  BERT_RETURN_IF_ERROR(bind_weights(c, lookup(s.grads), s.g));
  // No weight decay on biases and LayerNorm weights (transformers' no_decay = ["bias", "LayerNorm.weight"]).
  s.optimizer = Optimizer(opts.optimizer);
  for (auto& [name, value] : s.params) {
    if (model->impl().device) break;  // device cuda keeps the moments on the GPU
    const bool decay = !(name.ends_with(".bias") || name.ends_with(".gamma") || name.ends_with(".beta"));
    BERT_RETURN_IF_ERROR(s.optimizer.add(name, value.data(), s.grads[name].data(), int64_t(value.size()), decay));
  }

  s.positions.resize(T_of(opts));
  if (model->impl().device) {  // device cuda: the GPU holds the training state and activations
#ifdef BERT_HAVE_CUDA
    const cuda::DeviceModel& dm = *model->impl().device;
    if (dm.precision != Precision::kF32)
      return unsupported(std::string("training on device cuda keeps fp32 parameters: load the model in fp32 (this "
                                     "one is ") + precision_name(dm.precision) +
                         ") and pick the compute with TrainerOptions.precision (fp32, tf32, fp16, bf16)");
    BERT_ASSIGN_OR_RETURN(s.device, cuda::DeviceTrainer::Create(c, s.params, opts, dm.allow_tf32));
#endif
    return std::unique_ptr<Trainer>(new Trainer(std::move(impl)));
  }
  const size_t B = opts.max_batch, S = opts.max_seq, T = T_of(opts);
  const size_t H = c.hidden_size, I = c.intermediate_size, E = c.embedding_size, nh = c.num_heads;
  const size_t V = c.vocab_size, L = c.num_labels;
  s.emb_sum.resize(T * E);
  s.emb_ln.resize(T * E);
  s.d_emb.resize(T * E);
  s.hidden.assign(c.num_layers + 1, Buffer(T * H));
  s.saved.resize(c.num_layers);
  for (LayerSaved& l : s.saved) {
    l.qkv.resize(T * 3 * H), l.probs.resize(B * nh * S * S), l.ctx.resize(T * H), l.s1.resize(T * H);
    l.a.resize(T * H), l.f_pre.resize(T * I), l.f_act.resize(T * I), l.s2.resize(T * H);
  }
  s.probs_drop.resize(B * nh * S * S), s.d_probs.resize(B * nh * S * S);
  s.d_qkv.resize(T * 3 * H), s.d_ffn.resize(T * I);
  s.d_h.resize(T * H), s.d_a.resize(T * H), s.d_tmp.resize(T * H), s.tmp.resize(T * H);
  s.pooled_pre.resize(B * H), s.pooled.resize(B * H), s.first_pre.resize(B * H), s.first.resize(B * H);
  s.cls_in.resize(T * H), s.d_x.resize(T * H), s.d_y.resize(T * H);
  size_t logit_width = std::max<size_t>(L, 2);
  if (c.has_mlm()) logit_width = V;
  s.logits.resize(T * logit_width), s.d_logits.resize(T * logit_width);
  if (c.has_mlm()) s.head_pre.resize(T * E), s.head_act.resize(T * E), s.head_ln.resize(T * E);
  if (c.head == HeadKind::kDiscriminator) s.head_pre.resize(T * H), s.head_act.resize(T * H);
  s.start_logits.resize(std::max(T, 2 * B)), s.end_logits.resize(std::max(T, 2 * B)), s.targets_f.resize(T);
  return std::unique_ptr<Trainer>(new Trainer(std::move(impl)));
}

Status Trainer::Impl::pull(bool want_params, bool want_grads) const {
#ifdef BERT_HAVE_CUDA
  if (device) {
    auto& self = const_cast<Impl&>(*this);  // the host copies are a cache of the device state
    return device->Download(want_params ? &self.params : nullptr, want_grads ? &self.grads : nullptr);
  }
#endif
  return Status::Ok();
}

void Trainer::ZeroGrad() {
#ifdef BERT_HAVE_CUDA
  if (impl_->device) {
    (void)impl_->device->ZeroGrad();  // a failure here resurfaces as the next call's error
    return;
  }
#endif
  for (auto& [name, grad] : impl_->grads) std::fill(grad.begin(), grad.end(), 0.f);
}

Status Trainer::Impl::check_labels(const BatchInput& in, const TrainLabels& y) const {
  const int64_t B = in.batch, S = in.seq;
  auto check = [&](const int32_t* v, int64_t n, int64_t classes, const char* what, const char* size_name) -> Status {
    if (!v) return invalid_argument(std::string("the ") + head_kind_name(c->head) + " head needs labels '" + what + "'");
    for (int64_t i = 0; i < n; ++i)
      if (v[i] != -100 && (v[i] < 0 || v[i] >= classes))
        return out_of_range(std::string(what) + "[" + std::to_string(i) + "] = " + std::to_string(v[i]) +
                            " is outside 0.." + std::to_string(classes - 1) + " (" + size_name + ") and is not -100");
    return Status::Ok();
  };
  switch (c->head) {
    case HeadKind::kNone: return invalid_argument("a base model (no head) has no loss to train; use a model with a head");
    case HeadKind::kSequenceClassification:
      if (c->num_labels == 1) {
        if (!y.regression) return invalid_argument("num_labels 1 is regression: it needs float labels 'labels'");
        return Status::Ok();
      }
      return check(y.labels, B, c->num_labels, "labels", "num_labels");
    case HeadKind::kTokenClassification: return check(y.labels, B * S, c->num_labels, "labels", "num_labels");
    case HeadKind::kQuestionAnswering:
      if (!y.start_positions || !y.end_positions)
        return invalid_argument("the question_answering head needs 'start_positions' and 'end_positions'");
      return Status::Ok();
    case HeadKind::kMaskedLM: return check(y.labels, B * S, c->vocab_size, "labels", "vocab_size");
    case HeadKind::kPreTraining:
      BERT_RETURN_IF_ERROR(check(y.labels, B * S, c->vocab_size, "labels", "vocab_size"));
      return check(y.sentence_labels, B, 2,
                   c->family == ModelFamily::kAlbert ? "sentence_order_label" : "next_sentence_label", "2 classes");
    case HeadKind::kDiscriminator: return check(y.labels, B * S, 2, "labels", "0 or 1");
  }
  return Status::Ok();
}

Result<double> Trainer::ForwardBackward(const BatchInput& in, const TrainLabels& labels, float loss_scale) {
  const ModelConfig& c = *impl_->c;
  if (!in.input_ids) return invalid_argument("input_ids is null");
  if (in.batch < 1 || in.batch > impl_->o.max_batch || in.seq < 1 || in.seq > impl_->o.max_seq)
    return out_of_range("batch " + std::to_string(in.batch) + " x seq " + std::to_string(in.seq) +
                        " is outside the trainer's plan (" + std::to_string(impl_->o.max_batch) + " x " +
                        std::to_string(impl_->o.max_seq) + ")");
  BERT_RETURN_IF_ERROR(validate_batch_values(c, in));
  BERT_RETURN_IF_ERROR(impl_->check_labels(in, labels));
  if (impl_->o.num_threads > 0) omp_set_num_threads(impl_->o.num_threads);
#ifdef BERT_HAVE_CUDA
  if (impl_->device) {
    Impl& s = *impl_;
    compute_position_ids(c, in.input_ids, in.batch, in.seq, s.positions.data());
    const uint64_t stream = s.o.seed * 0x9E3779B97F4A7C15ull + (++s.calls);  // as run() derives it
    return s.device->ForwardBackward(in, labels, loss_scale, s.positions.data(), stream);
  }
#endif
  return impl_->run(in, labels, loss_scale);
}

Result<double> Trainer::Impl::run(const BatchInput& in, const TrainLabels& y, float loss_scale) {
  const int64_t B = in.batch, S = in.seq, T = B * S;
  const int64_t H = c->hidden_size, I = c->intermediate_size, E = c->embedding_size, nh = c->num_heads;
  const int64_t dh = c->head_dim(), V = c->vocab_size, NL = c->num_labels;
  const Activation act = to_activation(c->hidden_act);
  const float p_drop = o.dropout;
  const uint64_t stream = o.seed * 0x9E3779B97F4A7C15ull + (++calls);
  Status failed;
  auto check = [&](bool ok, const char* what) {
    if (!ok && failed.ok()) failed = internal_error(std::string("oneDNN could not plan ") + what);
  };

  // ---- building blocks -------------------------------------------------------------------------
  // y = x W^T + b (rows of x with stride ldx), no activation (the trainer keeps pre-activations).
  auto linear = [&](const char* what, const float* x, const Linear& lin, float* out, int64_t M, int64_t ldx = 0) {
    kernels::LinearArgs a;
    a.x = x, a.w = lin.w, a.bias = lin.b, a.y = out, a.M = M, a.N = lin.N, a.K = lin.K, a.groups = lin.groups;
    a.ldx = ldx;
    check(gemm.linear(a), what);
  };
  // dx (= or +=) dy W; dW += dy^T x; db += colsum(dy). Rows of x and dx have stride ldx (0 = K).
  auto linear_backward = [&](const char* what, const Linear& lin, const Linear& glin, const float* x, const float* dy,
                             float* dx, int64_t M, bool accumulate_dx, int64_t ldx = 0) {
    const int64_t N = lin.N, K = lin.K, G = lin.groups, Ng = N / G, Kg = K / G;
    if (!ldx) ldx = K;
    if (dx) {
      kernels::BatchedMatmulArgs a;
      a.a = dy, a.b = lin.w, a.c = dx, a.batch0 = 1, a.batch1 = G, a.M = M, a.N = Kg, a.K = Ng;
      a.accumulate = accumulate_dx;
      const int64_t as[4] = {0, Ng, N, 1}, bs[4] = {0, Ng * Kg, Kg, 1}, cs[4] = {0, Kg, ldx, 1};
      std::memcpy(a.a_strides, as, sizeof as), std::memcpy(a.b_strides, bs, sizeof bs), std::memcpy(a.c_strides, cs, sizeof cs);
      check(gemm.batched_matmul(a), what);
    }
    kernels::BatchedMatmulArgs b;
    b.a = dy, b.b = x, b.c = mut(glin.w), b.batch0 = 1, b.batch1 = G, b.M = Ng, b.N = Kg, b.K = M, b.accumulate = true;
    const int64_t as[4] = {0, Ng, 1, N}, bs[4] = {0, Kg, ldx, 1}, cs[4] = {0, Ng * Kg, Kg, 1};
    std::memcpy(b.a_strides, as, sizeof as), std::memcpy(b.b_strides, bs, sizeof bs), std::memcpy(b.c_strides, cs, sizeof cs);
    check(gemm.batched_matmul(b), what);
    kernels::column_sum_f32({dy, mut(glin.b), M, N, 0});
  };
  auto layernorm = [&](const float* x, const float* residual, const LayerNormWeights& ln, float* out, float* sum,
                       int64_t rows, int64_t cols) {
    // sum = x + residual (kept for the backward), out = LN(sum)
    if (residual) {
      for (int64_t i = 0; i < rows * cols; ++i) sum[i] = x[i] + residual[i];
    } else if (sum != x) {
      std::memcpy(sum, x, sizeof(float) * rows * cols);
    }
    kernels::LayerNormArgs a;
    a.x = sum, a.residual = nullptr, a.gamma = ln.gamma, a.beta = ln.beta, a.y = out, a.rows = rows, a.cols = cols;
    a.eps = c->layer_norm_eps;
    model->impl().kernels->layernorm(a);
  };
  auto layernorm_backward = [&](const float* sum, const LayerNormWeights& ln, const LayerNormWeights& gln,
                                const float* dy, float* ds, int64_t rows, int64_t cols) {
    kernels::layernorm_backward_f32({sum, ln.gamma, dy, ds, mut(gln.gamma), mut(gln.beta), rows, cols, c->layer_norm_eps});
  };
  auto activation = [&](float* x, int64_t count, Activation a) {
    if (a != Activation::kIdentity) model->impl().kernels->activation({x, count, a});
  };
  // Dropout site `site` of this call: the same (stream, site) regenerates the same mask.
  auto dropout = [&](float* x, int64_t count, uint64_t site) {
    if (p_drop > 0) kernels::dropout_f32({x, count, p_drop, stream, site << 40});
  };
  enum Site : uint64_t { kEmbed = 1, kClassifierIn = 2, kClassifierHidden = 3, kLayerBase = 16 };
  auto layer_site = [](int64_t l, uint64_t k) { return uint64_t(kLayerBase) + uint64_t(l) * 4 + k; };

  // ---- forward ---------------------------------------------------------------------------------
  compute_position_ids(*c, in.input_ids, B, S, positions.data());
  {
    kernels::EmbedArgs e;  // the sum only (no LayerNorm): the backward needs it
    e.input_ids = in.input_ids, e.positions = positions.data();
    e.token_types = c->has_token_types() ? in.token_type_ids : nullptr;
    e.word_table = w.word, e.position_table = w.position, e.type_table = w.token_type;
    e.gamma = nullptr, e.beta = nullptr, e.out = emb_sum.data(), e.tokens = T, e.width = E;
    model->impl().kernels->embed(e);
  }
  float* emb_out = c->embedding_projection ? emb_ln.data() : hidden[0].data();
  layernorm(emb_sum.data(), nullptr, w.emb_ln, emb_out, emb_sum.data(), T, E);
  dropout(emb_out, T * E, kEmbed);
  if (c->embedding_projection) linear("embedding projection", emb_out, w.emb_project, hidden[0].data(), T);

  const float scale = static_cast<float>(1.0 / std::sqrt(double(dh)));
  // Q, K, V of layer l: pointers and row stride inside its qkv buffer.
  auto qkv_views = [&](float* base, const LayerWeights& lw, float** q, float** k, float** v, int64_t* ld) {
    if (lw.qkv) *q = base, *k = base + H, *v = base + 2 * H, *ld = 3 * H;
    else *q = base, *k = base + T * H, *v = base + 2 * T * H, *ld = H;
  };
  auto attn_matmul = [&](const float* a, const float* b, float* out, int64_t M, int64_t N, int64_t K,
                         std::array<int64_t, 4> as, std::array<int64_t, 4> bs, std::array<int64_t, 4> cs, bool acc) {
    kernels::BatchedMatmulArgs m;
    m.a = a, m.b = b, m.c = out, m.batch0 = B, m.batch1 = nh, m.M = M, m.N = N, m.K = K, m.accumulate = acc;
    std::copy(as.begin(), as.end(), m.a_strides), std::copy(bs.begin(), bs.end(), m.b_strides);
    std::copy(cs.begin(), cs.end(), m.c_strides);
    check(gemm.batched_matmul(m), "an attention matmul");
  };
  const std::array<int64_t, 4> probs_st = {nh * S * S, S * S, S, 1}, probs_t = {nh * S * S, S * S, 1, S};
  const std::array<int64_t, 4> ctx_st = {S * H, dh, H, 1};

  for (int64_t l = 0; l < c->num_layers; ++l) {
    const LayerWeights& lw = w.layers[c->layer_weights_index(l)];
    LayerSaved& sv = saved[l];
    const float* x = hidden[l].data();
    float *q, *k, *v;
    int64_t ld;
    qkv_views(sv.qkv.data(), lw, &q, &k, &v, &ld);
    if (lw.qkv) {
      linear("qkv", x, lw.qkv, sv.qkv.data(), T);
    } else {
      linear("q", x, lw.q, q, T), linear("k", x, lw.k, k, T), linear("v", x, lw.v, v, T);
    }
    const std::array<int64_t, 4> qs = {S * ld, dh, ld, 1}, kt = {S * ld, dh, 1, ld};
    attn_matmul(q, k, sv.probs.data(), S, S, dh, qs, kt, probs_st, false);
    kernels::SoftmaxMaskedArgs sm;
    sm.scores = sv.probs.data(), sm.key_mask = in.attention_mask, sm.batch = B, sm.heads = nh, sm.q_len = S, sm.k_len = S;
    sm.scale = scale;
    model->impl().kernels->softmax_masked(sm);
    const float* p_used = sv.probs.data();
    if (p_drop > 0) {
      std::memcpy(probs_drop.data(), sv.probs.data(), sizeof(float) * B * nh * S * S);
      dropout(probs_drop.data(), B * nh * S * S, layer_site(l, 0));
      p_used = probs_drop.data();
    }
    attn_matmul(p_used, v, sv.ctx.data(), S, dh, S, probs_st, qs, ctx_st, false);
    linear("attention output", sv.ctx.data(), lw.out, tmp.data(), T);
    dropout(tmp.data(), T * H, layer_site(l, 1));
    layernorm(tmp.data(), x, lw.attn_ln, sv.a.data(), sv.s1.data(), T, H);
    linear("intermediate", sv.a.data(), lw.ffn_in, sv.f_pre.data(), T);
    std::memcpy(sv.f_act.data(), sv.f_pre.data(), sizeof(float) * T * I);
    activation(sv.f_act.data(), T * I, act);
    linear("output", sv.f_act.data(), lw.ffn_out, tmp.data(), T);
    dropout(tmp.data(), T * H, layer_site(l, 2));
    layernorm(tmp.data(), sv.a.data(), lw.ffn_ln, hidden[l + 1].data(), sv.s2.data(), T, H);
  }
  BERT_RETURN_IF_ERROR(failed);
  const float* last = hidden[c->num_layers].data();

  // ---- heads: forward, loss, and the gradient of the loss wrt `last` into d_h -------------------
  std::fill(d_h.begin(), d_h.begin() + T * H, 0.f);
  double loss = 0;
  auto first_tokens = [&](const float* src, float* dst) {  // rows 0, S, 2S, ... of [T, H]
    for (int64_t b = 0; b < B; ++b) std::memcpy(dst + b * H, src + b * S * H, sizeof(float) * H);
  };
  auto add_first_tokens = [&](const float* src, float* dst) {
    for (int64_t b = 0; b < B; ++b)
      for (int64_t j = 0; j < H; ++j) dst[b * S * H + j] += src[b * H + j];
  };
  auto cross_entropy = [&](const float* logits_p, const int32_t* targets, float* dlogits_p, int64_t rows,
                           int64_t classes, float weight, int32_t ignore = -100) {
    int64_t count = 0;
    for (int64_t i = 0; i < rows; ++i) count += targets[i] != ignore;
    kernels::CrossEntropyArgs a;
    a.logits = logits_p, a.targets = targets, a.dlogits = dlogits_p, a.rows = rows, a.classes = classes;
    a.ignore_index = ignore, a.grad_scale = count ? weight * loss_scale / float(count) : 0.f;
    kernels::LossSum ls = kernels::cross_entropy_f32(a);
    return count ? weight * ls.sum / double(count) : 0.0;  // torch: a mean over nothing is NaN; we give 0
  };
  // The pooler's forward, and its backward from d_pooled (in d_y) into d_h.
  auto pooler_forward = [&] {
    linear("pooler", last, w.pooler, pooled_pre.data(), B, S * H);
    std::memcpy(pooled.data(), pooled_pre.data(), sizeof(float) * B * H);
    activation(pooled.data(), B * H, Activation::kTanh);
  };
  auto pooler_backward = [&](float* d_pooled) {
    kernels::activation_backward_f32({pooled_pre.data(), d_pooled, B * H, Activation::kTanh});
    linear_backward("pooler", w.pooler, g.pooler, last, d_pooled, d_h.data(), B, true, S * H);
  };

  if (c->has_pooler) pooler_forward();
  switch (c->head) {
    case HeadKind::kNone: break;
    case HeadKind::kSequenceClassification: {
      float* cin = cls_in.data();
      if (c->classifier_on_pooler) {
        std::memcpy(cin, pooled.data(), sizeof(float) * B * H);
        dropout(cin, B * H, kClassifierIn);
      } else {  // first token -> dropout -> dense -> act -> dropout
        first_tokens(last, first.data());
        dropout(first.data(), B * H, kClassifierIn);
        linear("classifier dense", first.data(), w.pre_classifier, first_pre.data(), B);
        std::memcpy(cin, first_pre.data(), sizeof(float) * B * H);
        activation(cin, B * H, to_activation(c->classifier_act));
        dropout(cin, B * H, kClassifierHidden);
      }
      linear("classifier", cin, w.classifier, logits.data(), B);
      BERT_RETURN_IF_ERROR(failed);
      if (NL == 1) {
        kernels::LossSum ls = kernels::mse_f32_ref({logits.data(), y.regression, d_logits.data(), B, loss_scale / float(B)});
        loss = ls.sum / double(B);
      } else {
        loss = cross_entropy(logits.data(), y.labels, d_logits.data(), B, NL, 1.f);
      }
      float* d_cin = d_x.data();
      linear_backward("classifier", w.classifier, g.classifier, cin, d_logits.data(), d_cin, B, false);
      if (c->classifier_on_pooler) {
        dropout(d_cin, B * H, kClassifierIn);
        pooler_backward(d_cin);
      } else {
        dropout(d_cin, B * H, kClassifierHidden);
        kernels::activation_backward_f32({first_pre.data(), d_cin, B * H, to_activation(c->classifier_act)});
        float* d_first = d_y.data();
        linear_backward("classifier dense", w.pre_classifier, g.pre_classifier, first.data(), d_cin, d_first, B, false);
        dropout(d_first, B * H, kClassifierIn);
        add_first_tokens(d_first, d_h.data());
      }
      break;
    }
    case HeadKind::kTokenClassification: {
      std::memcpy(cls_in.data(), last, sizeof(float) * T * H);
      dropout(cls_in.data(), T * H, kClassifierIn);
      linear("classifier", cls_in.data(), w.classifier, logits.data(), T);
      BERT_RETURN_IF_ERROR(failed);
      loss = cross_entropy(logits.data(), y.labels, d_logits.data(), T, NL, 1.f);
      linear_backward("classifier", w.classifier, g.classifier, cls_in.data(), d_logits.data(), d_x.data(), T, false);
      dropout(d_x.data(), T * H, kClassifierIn);
      for (int64_t i = 0; i < T * H; ++i) d_h[i] += d_x[i];
      break;
    }
    case HeadKind::kQuestionAnswering: {
      linear("qa_outputs", last, w.qa, logits.data(), T);  // [T, 2]: start, end
      BERT_RETURN_IF_ERROR(failed);
      for (int64_t t = 0; t < T; ++t) start_logits[t] = logits[2 * t], end_logits[t] = logits[2 * t + 1];
      std::vector<int32_t> starts(B), ends(B);  // clamped to [0, S]; S is ignored (transformers)
      for (int64_t b = 0; b < B; ++b) {
        starts[b] = std::clamp<int32_t>(y.start_positions[b], 0, static_cast<int32_t>(S));
        ends[b] = std::clamp<int32_t>(y.end_positions[b], 0, static_cast<int32_t>(S));
      }
      float* d_start = d_x.data();
      float* d_end = d_y.data();
      loss = cross_entropy(start_logits.data(), starts.data(), d_start, B, S, 0.5f, static_cast<int32_t>(S)) +
             cross_entropy(end_logits.data(), ends.data(), d_end, B, S, 0.5f, static_cast<int32_t>(S));
      for (int64_t t = 0; t < T; ++t) d_logits[2 * t] = d_start[t], d_logits[2 * t + 1] = d_end[t];
      linear_backward("qa_outputs", w.qa, g.qa, last, d_logits.data(), d_h.data(), T, true);
      break;
    }
    case HeadKind::kDiscriminator: {
      linear("discriminator dense", last, w.disc_dense, head_pre.data(), T);
      std::memcpy(head_act.data(), head_pre.data(), sizeof(float) * T * H);
      activation(head_act.data(), T * H, act);
      linear("discriminator prediction", head_act.data(), w.disc_out, logits.data(), T);
      BERT_RETURN_IF_ERROR(failed);
      int64_t count = 0;
      for (int64_t t = 0; t < T; ++t) {
        targets_f[t] = static_cast<float>(y.labels[t]);
        count += !in.attention_mask || in.attention_mask[t];
      }
      kernels::BceWithLogitsArgs a;
      a.logits = logits.data(), a.targets = targets_f.data(), a.mask = in.attention_mask, a.dlogits = d_logits.data();
      a.n = T, a.grad_scale = count ? loss_scale / float(count) : 0.f;
      loss = count ? kernels::bce_with_logits_f32_ref(a).sum / double(count) : 0.0;
      linear_backward("discriminator prediction", w.disc_out, g.disc_out, head_act.data(), d_logits.data(), d_x.data(), T,
                      false);
      kernels::activation_backward_f32({head_pre.data(), d_x.data(), T * H, act});
      linear_backward("discriminator dense", w.disc_dense, g.disc_dense, last, d_x.data(), d_h.data(), T, true);
      break;
    }
    case HeadKind::kMaskedLM:
    case HeadKind::kPreTraining: {
      linear("mlm transform", last, w.mlm_transform, head_pre.data(), T);
      std::memcpy(head_act.data(), head_pre.data(), sizeof(float) * T * E);
      activation(head_act.data(), T * E, to_activation(c->mlm_act));
      layernorm(head_act.data(), nullptr, w.mlm_ln, head_ln.data(), head_act.data(), T, E);
      linear("mlm decoder", head_ln.data(), w.mlm_decoder, logits.data(), T);
      BERT_RETURN_IF_ERROR(failed);
      loss = cross_entropy(logits.data(), y.labels, d_logits.data(), T, V, 1.f);
      float* d_ln = d_emb.data();  // [T, E] scratch (the embedding backward runs later)
      linear_backward("mlm decoder", w.mlm_decoder, g.mlm_decoder, head_ln.data(), d_logits.data(), d_ln, T, false);
      layernorm_backward(head_act.data(), w.mlm_ln, g.mlm_ln, d_ln, d_ln, T, E);
      kernels::activation_backward_f32({head_pre.data(), d_ln, T * E, to_activation(c->mlm_act)});
      linear_backward("mlm transform", w.mlm_transform, g.mlm_transform, last, d_ln, d_h.data(), T, true);
      if (c->head == HeadKind::kPreTraining) {
        float* sent = start_logits.data();  // [B, 2]
        linear("sentence head", pooled.data(), w.nsp, sent, B);
        BERT_RETURN_IF_ERROR(failed);
        float* d_sent = end_logits.data();
        loss += cross_entropy(sent, y.sentence_labels, d_sent, B, 2, 1.f);
        float* d_pooled = d_x.data();
        linear_backward("sentence head", w.nsp, g.nsp, pooled.data(), d_sent, d_pooled, B, false);
        pooler_backward(d_pooled);
      }
      break;
    }
  }
  BERT_RETURN_IF_ERROR(failed);
  if (!std::isfinite(loss)) return invalid_argument("the loss is " + std::to_string(loss) + " (not finite)");

  // ---- backward through the encoder ------------------------------------------------------------
  for (int64_t l = c->num_layers - 1; l >= 0; --l) {
    const int64_t wi = c->layer_weights_index(l);
    const LayerWeights& lw = w.layers[wi];
    const LayerWeights& gw = g.layers[wi];
    LayerSaved& sv = saved[l];
    const float* x = hidden[l].data();
    // y = LN2(s2), s2 = drop(ffn_out(f_act)) + a
    layernorm_backward(sv.s2.data(), lw.ffn_ln, gw.ffn_ln, d_h.data(), d_a.data(), T, H);  // d_a = ds2
    std::memcpy(d_tmp.data(), d_a.data(), sizeof(float) * T * H);
    dropout(d_tmp.data(), T * H, layer_site(l, 2));
    linear_backward("output", lw.ffn_out, gw.ffn_out, sv.f_act.data(), d_tmp.data(), d_ffn.data(), T, false);
    kernels::activation_backward_f32({sv.f_pre.data(), d_ffn.data(), T * I, act});
    linear_backward("intermediate", lw.ffn_in, gw.ffn_in, sv.a.data(), d_ffn.data(), d_a.data(), T, true);
    // a = LN1(s1), s1 = drop(attn_out(ctx)) + x
    layernorm_backward(sv.s1.data(), lw.attn_ln, gw.attn_ln, d_a.data(), d_h.data(), T, H);  // d_h = ds1 (= dx so far)
    std::memcpy(d_tmp.data(), d_h.data(), sizeof(float) * T * H);
    dropout(d_tmp.data(), T * H, layer_site(l, 1));
    float* d_ctx = d_a.data();
    linear_backward("attention output", lw.out, gw.out, sv.ctx.data(), d_tmp.data(), d_ctx, T, false);
    // Attention: ctx = drop(P) V, P = softmax(scale Q K^T)
    float *q, *k, *v, *dq, *dk, *dv;
    int64_t ld;
    qkv_views(sv.qkv.data(), lw, &q, &k, &v, &ld);
    qkv_views(d_qkv.data(), lw, &dq, &dk, &dv, &ld);
    const std::array<int64_t, 4> qs = {S * ld, dh, ld, 1}, kt = {S * ld, dh, 1, ld};
    const float* p_used = sv.probs.data();
    if (p_drop > 0) {  // regenerate the dropped probabilities
      std::memcpy(probs_drop.data(), sv.probs.data(), sizeof(float) * B * nh * S * S);
      dropout(probs_drop.data(), B * nh * S * S, layer_site(l, 0));
      p_used = probs_drop.data();
    }
    attn_matmul(d_ctx, v, d_probs.data(), S, S, dh, ctx_st, kt, probs_st, false);  // dP = dctx V^T
    attn_matmul(p_used, d_ctx, dv, S, dh, S, probs_t, ctx_st, qs, false);          // dV = P^T dctx
    dropout(d_probs.data(), B * nh * S * S, layer_site(l, 0));
    kernels::softmax_backward_f32({sv.probs.data(), d_probs.data(), B, nh, S, S, scale});
    attn_matmul(d_probs.data(), k, dq, S, dh, S, probs_st, qs, qs, false);  // dQ = dS K
    attn_matmul(d_probs.data(), q, dk, S, dh, S, probs_t, qs, qs, false);   // dK = dS^T Q
    if (lw.qkv) {
      linear_backward("qkv", lw.qkv, gw.qkv, x, d_qkv.data(), d_h.data(), T, true);
    } else {
      linear_backward("q", lw.q, gw.q, x, dq, d_h.data(), T, true);
      linear_backward("k", lw.k, gw.k, x, dk, d_h.data(), T, true);
      linear_backward("v", lw.v, gw.v, x, dv, d_h.data(), T, true);
    }
    BERT_RETURN_IF_ERROR(failed);
  }

  // ---- embeddings ------------------------------------------------------------------------------
  float* d_e = c->embedding_projection ? d_emb.data() : d_h.data();
  if (c->embedding_projection)
    linear_backward("embedding projection", w.emb_project, g.emb_project, emb_ln.data(), d_h.data(), d_e, T, false);
  dropout(d_e, T * E, kEmbed);
  layernorm_backward(emb_sum.data(), w.emb_ln, g.emb_ln, d_e, d_e, T, E);
  kernels::EmbedBackwardArgs eb;
  eb.input_ids = in.input_ids, eb.positions = positions.data();
  eb.token_types = c->has_token_types() ? in.token_type_ids : nullptr;
  eb.d_out = d_e, eb.d_word = mut(g.word), eb.d_position = mut(g.position), eb.d_type = mut(g.token_type);
  eb.tokens = T, eb.width = E;
  // nn.Embedding(padding_idx=pad_token_id): the lookup adds nothing to the pad row's gradient (a tied
  // MLM decoder still does). RoBERTa's position table has the same padding_idx.
  float* word_pad = mut(g.word) + c->pad_token_id * E;
  float* pos_pad = c->position_ids == PositionIds::kAfterPadding ? mut(g.position) + c->pad_token_id * E : nullptr;
  Buffer pad_rows(word_pad, word_pad + E);
  if (pos_pad) pad_rows.insert(pad_rows.end(), pos_pad, pos_pad + E);
  kernels::embed_backward_f32(eb);
  std::copy_n(pad_rows.begin(), E, word_pad);
  if (pos_pad) std::copy_n(pad_rows.begin() + E, E, pos_pad);
  BERT_RETURN_IF_ERROR(failed);

  for (const auto& [name, grad] : grads)
    for (float v : grad)
      if (!std::isfinite(v)) return invalid_argument("the gradient of '" + name + "' is not finite (loss " +
                                                      std::to_string(loss) + ")");
  return loss;
}

Result<double> Trainer::Step(float lr) {
#ifdef BERT_HAVE_CUDA
  if (impl_->device) {
    BERT_RETURN_IF_ERROR(impl_->optimizer.check_step_arguments(lr));
    return impl_->device->Step(lr);
  }
#endif
  if (impl_->o.num_threads > 0) omp_set_num_threads(impl_->o.num_threads);
  BERT_ASSIGN_OR_RETURN(double norm, impl_->optimizer.step(lr));
  impl_->optimizer.zero_grads();
  return norm;
}

float Trainer::loss_scale() const {
#ifdef BERT_HAVE_CUDA
  if (impl_->device) return impl_->device->loss_scale();
#endif
  return 1.f;
}

int64_t Trainer::steps() const {
#ifdef BERT_HAVE_CUDA
  if (impl_->device) return impl_->device->steps();
#endif
  return impl_->optimizer.steps();
}

ModelSource Trainer::Impl::source() const {
  const ModelSource& from = model->impl().source;
  ModelSource m;
  m.config = from.config;
  m.vocab = from.vocab;
  m.lower_case = from.lower_case;
  m.origin = "trainer";
  for (const auto& [name, value] : params) {
    Tensor t;
    t.dtype = DType::kF32;
    t.shape = model->impl().f32.at(name).shape;
    t.data = value.data();
    m.tensors[name] = t;
  }
  return m;
}

Result<std::shared_ptr<const Model>> Trainer::Snapshot() const {
  BERT_RETURN_IF_ERROR(impl_->pull(true, false));
  ModelSource m = impl_->source();
  for (auto& [name, t] : m.tensors) {  // the snapshot owns copies: training goes on
    Tensor copy = make_owned_tensor(DType::kF32, t.shape);
    std::memcpy(mutable_data(copy), t.data, t.nbytes());
    t = copy;
  }
  LoadOptions load;  // on the trainer's device (fp32), so evaluating a snapshot runs where training does
  load.device = impl_->model->impl().device ? Device::kCuda : Device::kCpu;
  return load_model_from_source(std::move(m), load);
}

Status Trainer::Save(const std::string& path) const {
  BERT_RETURN_IF_ERROR(impl_->pull(true, false));
  return write_engine_file(path, impl_->source(), DType::kF32);
}

Status Trainer::SaveCheckpoint(const std::string& path, const std::string& state) const {
  BERT_RETURN_IF_ERROR(impl_->pull(true, false));
  std::vector<std::pair<std::string, Tensor>> extra;
#ifdef BERT_HAVE_CUDA
  if (impl_->device) {
    BERT_ASSIGN_OR_RETURN(extra, impl_->device->OptimizerState());
  } else
#endif
  {
    extra = impl_->optimizer.state();
  }
  Tensor calls = make_owned_tensor(DType::kI64, {1});
  *static_cast<int64_t*>(mutable_data(calls)) = static_cast<int64_t>(impl_->calls);
  extra.emplace_back("trainer.calls", calls);
  return write_engine_file(path, impl_->source(), DType::kF32, extra, {{"training_state", state}});
}

Result<std::string> Trainer::LoadCheckpoint(const std::string& path) {
  BERT_ASSIGN_OR_RETURN(SafetensorsFile f, SafetensorsFile::Open(path));
  auto state = f.metadata().find("training_state");
  const Tensor* calls = f.find("trainer.calls");
  if (state == f.metadata().end() || !calls || calls->dtype != DType::kI64 || calls->numel() != 1)
    return format_error(path + ": not a training checkpoint (no training_state / trainer.calls)");
  // Every parameter must be there with our shape, in F32, before anything changes.
  for (const auto& [name, value] : impl_->params) {
    const Tensor* t = f.find(name);
    if (!t) return format_error(path + ": checkpoint has no tensor '" + name + "' (a different model?)");
    if (t->dtype != DType::kF32 || t->numel() != static_cast<int64_t>(value.size()))
      return format_error(path + ": tensor '" + name + "' is " + std::string(dtype_name(t->dtype)) + " " +
                          shape_string(t->shape) + "; this model needs F32 with " + std::to_string(value.size()) +
                          " values");
  }
#ifdef BERT_HAVE_CUDA
  if (impl_->device) {
    for (auto& [name, value] : impl_->params) std::memcpy(value.data(), f.find(name)->data, value.size() * 4);
    BERT_RETURN_IF_ERROR(impl_->device->Restore(impl_->params, f.tensors()).with_context(path));
  } else
#endif
  {
    BERT_RETURN_IF_ERROR(impl_->optimizer.load_state(f.tensors()).with_context(path));
    for (auto& [name, value] : impl_->params) {
      const Tensor* t = f.find(name);
      std::memcpy(value.data(), t->data, t->nbytes());
    }
  }
  impl_->calls = static_cast<uint64_t>(calls->as<int64_t>()[0]);
  ZeroGrad();
  return state->second;
}

std::vector<NamedArray> Trainer::Gradients() const {
  const ModelConfig& c = *impl_->c;
  if (Status st = impl_->pull(false, true); !st.ok()) return {};  // (device cuda) nothing to report
  const float unscale = 1.f / loss_scale();  // fp16 loss scaling keeps the gradients scaled until Step
  std::vector<NamedArray> out;
  const std::string prefix = c.head == HeadKind::kNone ? "" : hf_base_prefix(c);
  for (const ParamSpec& spec : param_specs(c, prefix)) {
    auto it = impl_->grads.find(spec.name);
    if (it == impl_->grads.end()) continue;  // the tied decoder: its gradient is in the word embeddings'
    const size_t parts = spec.hf_names.size();
    const size_t per = it->second.size() / parts;
    for (size_t i = 0; i < parts; ++i) {
      NamedArray a;
      a.name = spec.hf_names[i];
      a.shape = spec.shape;
      a.shape[0] /= static_cast<int64_t>(parts);
      if (spec.conv1d) a.shape.push_back(1);
      a.values.assign(it->second.begin() + i * per, it->second.begin() + (i + 1) * per);
      if (unscale != 1.f)
        for (float& v : a.values) v *= unscale;  // (a power of two: exact)
      out.push_back(std::move(a));
    }
  }
  return out;
}

}  // namespace bert
