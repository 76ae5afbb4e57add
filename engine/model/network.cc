// The network written once (engine/model/network.h): plan, embeddings, encoder layer forward and
// backward, pooler; the heads are in heads.cc. Reads like the model's figure; every op goes through
// the backend, so the same code runs on the CPU and on CUDA.
#include "engine/model/network.h"

#include <cmath>
#include <cstring>

#include "engine/model/net.h"

namespace bert::model {

using kernels::Activation;

// ---- plan and ops ---------------------------------------------------------------------------------

Status Plan::allocate(runtime::Backend& backend) {
  void* p = backend.allocate(bytes());
  if (!p)
    return out_of_range("cannot allocate a " + std::to_string(bytes() >> 20) + " MiB activation workspace on " +
                        backend.name() + "; lower max_batch or max_seq");
  memory_ = runtime::DeviceBuffer(&backend, p);
  base_ = static_cast<float*>(p);
  return Status::Ok();
}

Ops::Timed::Timed(Ops& ops, const char* op, const char* suffix) : ops_(ops) {
  if (!ops_.profile_) return;
  op_ = op;
  if (suffix) op_ += suffix;
  ops_.check(ops_.be_.synchronize());
  gemm_calls_ = ops_.be_.gemm_calls();
  start_ = std::chrono::steady_clock::now();
}

Ops::Timed::~Timed() {
  if (!ops_.profile_) return;
  ops_.check(ops_.be_.synchronize());
  double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  OpProfile* entry = nullptr;
  for (auto& p : ops_.profile)
    if (p.op == op_) entry = &p;
  if (!entry) entry = &ops_.profile.emplace_back(OpProfile{op_, 0.0, 0, {}});
  entry->seconds += dt;
  ++entry->calls;
  if (ops_.be_.gemm_calls() != gemm_calls_) {  // this scope ran a GEMM: name its implementation
    const std::string impl = ops_.be_.last_gemm_impl();
    if (!impl.empty() && (", " + entry->impl + ", ").find(", " + impl + ", ") == std::string::npos)
      entry->impl += (entry->impl.empty() ? "" : ", ") + impl;
  }
}

// The linear backward's GEMMs reorder their b operand (W for dx, x for dW) into oneDNN's blocked layout
// (and, computing in bf16, the forward its weights) from this many rows (tokens) up, for layers of at
// least kReorderMinWeights weights (bert-base's and larger; measured there): the copy is paid back from a
// few hundred rows (kernels/gemm.h). Small layers (bert-tiny, bert-mini) keep the plain operands: the
// reorder would add a parallel region per GEMM for little gain.
constexpr int64_t kReorderMinRows = 256;
constexpr int64_t kReorderMinWeights = int64_t{1} << 19;

void Ops::linear(const char* op, const float* x, const Linear& lin, float* y, int64_t M, Activation act, int64_t ldx) {
  if (!ok()) return;
  Timed timed(*this, op);
  kernels::LinearArgs a;
  a.x = x, a.w = lin.w, a.bias = lin.b, a.y = y, a.M = M, a.N = lin.N, a.K = lin.K;
  a.groups = lin.groups, a.act = act, a.ldx = ldx, a.packed = lin.packed;
  a.reorder_w = M >= kReorderMinRows && (lin.N / lin.groups) * (lin.K / lin.groups) >= kReorderMinWeights;
  check(be_.linear(a).with_context(op));
}

void Ops::batched_matmul(const char* op, const kernels::BatchedMatmulArgs& a) {
  if (!ok()) return;
  Timed timed(*this, op);
  check(be_.batched_matmul(a).with_context(op));
}

void Ops::linear_backward(const char* op, const Linear& lin, const Linear& grad, const float* x, const float* dy,
                          float* dx, int64_t M, bool accumulate_dx, int64_t ldx) {
  if (!ok()) return;
  const int64_t N = lin.N, K = lin.K, G = lin.groups, Ng = N / G, Kg = K / G;
  if (!ldx) ldx = K;
  const bool reorder = M >= kReorderMinRows && Ng * Kg >= kReorderMinWeights;
  {  // first, while dy (just written) is still in cache
    Timed timed(*this, op, ".db");
    check(be_.column_sum({dy, const_cast<float*>(grad.b), M, N, 0}));
  }
  if (dx) {  // dx[M, K] = dy[M, N] W[N, K/G] per group
    Timed timed(*this, op, ".dx");
    kernels::BatchedMatmulArgs a;
    a.a = dy, a.b = lin.w, a.c = dx, a.batch0 = 1, a.batch1 = G, a.M = M, a.N = Kg, a.K = Ng;
    a.accumulate = accumulate_dx;
    a.reorder_b = reorder;
    const int64_t as[4] = {0, Ng, N, 1}, bs[4] = {0, Ng * Kg, Kg, 1}, cs[4] = {0, Kg, ldx, 1};
    std::memcpy(a.a_strides, as, sizeof as), std::memcpy(a.b_strides, bs, sizeof bs), std::memcpy(a.c_strides, cs, sizeof cs);
    check(be_.batched_matmul(a).with_context("linear backward (dx)"));
  }
  {
    Timed timed(*this, op, ".dW");
    kernels::BatchedMatmulArgs b;  // dW[N, K/G] += dy^T x per group
    b.a = dy, b.b = x, b.c = const_cast<float*>(grad.w), b.batch0 = 1, b.batch1 = G, b.M = Ng, b.N = Kg, b.K = M;
    b.accumulate = true;
    b.reorder_b = reorder;
    b.a_as_before = dx != nullptr;  // dy, as the dx product just read it
    const int64_t as[4] = {0, Ng, 1, N}, bs[4] = {0, Kg, ldx, 1}, cs[4] = {0, Ng * Kg, Kg, 1};
    std::memcpy(b.a_strides, as, sizeof as), std::memcpy(b.b_strides, bs, sizeof bs), std::memcpy(b.c_strides, cs, sizeof cs);
    check(be_.batched_matmul(b).with_context("linear backward (dW)"));
  }
}

void Ops::layernorm(const float* x, const float* residual, const LayerNormWeights& ln, float* y, int64_t rows,
                    int64_t cols) {
  if (!ok()) return;
  Timed timed(*this, "layernorm");
  kernels::LayerNormArgs a;
  a.x = x, a.residual = residual, a.gamma = ln.gamma, a.beta = ln.beta, a.y = y, a.rows = rows, a.cols = cols;
  a.eps = c_.layer_norm_eps;
  check(be_.layernorm(a));
}

void Ops::layernorm_backward(const float* s, const LayerNormWeights& ln, const LayerNormWeights& grad, const float* dy,
                             float* ds, int64_t rows, int64_t cols) {
  if (!ok()) return;
  Timed timed(*this, "backward.layernorm");
  check(be_.layernorm_backward({s, ln.gamma, dy, ds, const_cast<float*>(grad.gamma), const_cast<float*>(grad.beta),
                                rows, cols, c_.layer_norm_eps}));
}

void Ops::activation(float* x, int64_t n, Activation a) {
  if (!ok() || a == Activation::kIdentity) return;
  Timed timed(*this, "activation");
  check(be_.activation({x, n, a}));
}

void Ops::linear_activation(const float* x, float* y, int64_t rows, int64_t cols, Activation a) {
  if (!ok()) return;
  if (a == Activation::kIdentity) return x == y ? void() : copy(x, y, rows * cols);
  Timed timed(*this, "activation");
  check(be_.linear_activation(x, y, rows, cols, a));
}

void Ops::activation_backward(const float* pre, float* grad, int64_t n, Activation a) {
  if (!ok() || a == Activation::kIdentity) return;
  Timed timed(*this, "backward.activation");
  check(be_.activation_backward({pre, grad, n, a}));
}

void Ops::copy(const float* src, float* dst, int64_t n) {
  if (!ok()) return;
  Timed timed(*this, "copy");
  check(be_.copy_rows(src, n, dst, n, 1, n));
}

void Ops::add(const float* a, const float* b, float* out, int64_t n) {
  if (!ok()) return;
  Timed timed(*this, "add");
  check(be_.add(a, b, out, n));
}

void Ops::dropout(float* x, int64_t n, uint64_t site, const float* src) {
  if (!ok() || (p_ <= 0 && !src)) return;
  if (p_ <= 0) return copy(src, x, n);
  Timed timed(*this, "dropout");
  check(be_.dropout({x, n, p_, stream_, site << 40, src}));
}

// ---- creation -------------------------------------------------------------------------------------

Network::Network(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Network::~Network() = default;
const std::vector<DeviceOutput>& Network::outputs() const { return impl_->outputs; }
size_t Network::workspace_bytes() const { return impl_->plan.bytes(); }

void Network::set_gradients_ready(std::function<void(int64_t)> f) { impl_->gradients_ready = std::move(f); }
std::vector<OpProfile> Network::profile() const { return impl_->ops->profile; }

Result<std::unique_ptr<Network>> Network::Create(const ModelConfig& c, const BertWeights& w, runtime::Backend& be,
                                                 const NetworkOptions& o) {
  if (o.max_batch <= 0 || o.max_seq <= 0) return invalid_argument("the network's max_batch and max_seq must be positive");
  if (o.fused_attention && !be.has_fused_attention(o.training, c.head_dim()))
    return unsupported(std::string("fused attention") + (o.training ? " for training" : "") +
                       " has no kernel on " + be.name());
  if (o.remove_padding && o.training)
    return unsupported("padding removal is an inference option (training runs every token)");
  if (o.remove_padding && !be.has_fused_attention(false, c.head_dim()))
    return unsupported("padding removal needs a packed attention kernel at head_dim " + std::to_string(c.head_dim()) +
                       "; " + be.name() + " has none registered");
  // Sizes in floats, checked against overflow before anything is allocated.
  const size_t B = o.max_batch, S = o.max_seq, T = B * S;
  const size_t H = c.hidden_size, I = c.intermediate_size, nh = c.num_heads, E = c.embedding_size;
  const double scores = double(B) * nh * S * S, widest = double(T) * std::max<double>(I, 3.0 * H);
  if (scores > 1e12 || widest > 1e12)
    return out_of_range("max_batch " + std::to_string(B) + " x max_seq " + std::to_string(S) +
                        " needs more activation memory than any device has; lower them");

  auto impl = std::make_unique<Impl>();
  Impl& n = *impl;
  n.c = &c, n.w = &w, n.o = o;
  n.ops = std::make_unique<Ops>(be, c, o.profile);
  n.head = make_head(c);
  n.fused_attention = o.fused_attention || o.remove_padding;
  Plan& p = n.plan;
  n.ids = p.add(T), n.positions = p.add(T), n.mask = p.add(T), n.types = p.add(T);
  n.host_positions.resize(T);
  if (o.remove_padding) {
    n.seq_starts = p.add(B + 1), n.row_index = p.add(T);
    n.host_ints.resize(4 * T + B + 1);
    const size_t published = o.keep_hidden_states ? c.num_layers + 1 : 1;
    for (size_t i = 0; i < published; ++i) n.padded_hidden.push_back(p.add(T * H));
  }
  const bool train = o.training;
  if (train || c.embedding_projection) n.emb_out = p.add(T * E);
  if (train) n.emb_sum = p.add(T * E);
  const size_t slots = train || o.keep_hidden_states ? c.num_layers + 1 : 2;
  for (size_t i = 0; i < slots; ++i) n.hidden.push_back(p.add(T * H));
  const size_t act_sets = train && !o.recompute ? c.num_layers : 1;
  n.acts.resize(act_sets);
  for (LayerActs& a : n.acts) {
    a.qkv = p.add(T * 3 * H);
    if (n.fused_attention) {
      if (train) a.lse = p.add(B * nh * S);
    } else {
      a.probs = p.add(B * nh * S * S);
    }
    a.ctx = p.add(T * H), a.a = p.add(T * H), a.f_act = p.add(T * I);
    if (train) a.s1 = p.add(T * H), a.s2 = p.add(T * H), a.f_pre = p.add(T * I);
  }
  n.tmp = p.add(T * H);
  if (c.has_pooler) n.pooled_pre = p.add(B * H), n.pooled = p.add(B * H);
  if (o.pooling != Pooling::kNone) n.sentence = p.add(B * H);
  if (train) {
    if (o.dropout > 0 && !n.fused_attention) n.probs_drop = p.add(B * nh * S * S);
    if (!n.fused_attention) n.d_probs = p.add(B * nh * S * S);
    if (n.fused_attention) n.attention_scratch = p.add(B * nh * S);
    n.d_h = p.add(T * H), n.d_a = p.add(T * H), n.d_tmp = p.add(T * H), n.d_ctx = p.add(T * H);
    n.d_qkv = p.add(T * 3 * H), n.d_ffn = p.add(T * I), n.d_emb = p.add(T * E);
    n.losses = p.add(4 * sizeof(kernels::LossSum) / sizeof(float));
  }
  n.head->plan(p, B, S, train);
  BERT_RETURN_IF_ERROR(p.allocate(be));
  for (int64_t l = 0; l <= c.num_layers; ++l) n.hidden_names.push_back("hidden_states." + std::to_string(l));
  return std::unique_ptr<Network>(new Network(std::move(impl)));
}

void Network::Impl::publish(std::string_view name, std::initializer_list<int64_t> shape, const float* data) {
  if (published == outputs.size()) outputs.push_back({std::string(name), {}, nullptr});
  DeviceOutput& out = outputs[published++];
  if (out.name != name) out.name = name;
  out.shape.assign(shape);
  out.data = data;
}

const int32_t* Network::Impl::upload_ints(Buf dst, const int32_t* src, int64_t count) {
  int32_t* d = plan.as<int32_t>(dst);
  ops->check(ops->backend().upload(d, src, sizeof(int32_t) * count));
  return d;
}

// ---- forward --------------------------------------------------------------------------------------

Status Network::forward(const BatchInput& in, uint64_t dropout_stream) {
  Impl& n = *impl_;
  const ModelConfig& c = *n.c;
  n.published = 0;
  n.ops->reset();
  n.ops->set_dropout(n.o.training ? n.o.dropout : 0.f, dropout_stream);
  n.B = in.batch, n.S = in.seq, n.T = n.B * n.S;
  const int64_t B = n.B, S = n.S, T = n.T, H = c.hidden_size;
  compute_position_ids(c, in.input_ids, B, S, n.host_positions.data());
  n.d_mask = in.attention_mask ? n.upload_ints(n.mask, in.attention_mask, T) : nullptr;
  if (n.o.remove_padding) {
    BERT_RETURN_IF_ERROR(n.pack_inputs(in));  // n.T becomes the number of real tokens
  } else {
    n.d_ids = n.upload_ints(n.ids, in.input_ids, T);
    n.d_positions = n.upload_ints(n.positions, n.host_positions.data(), T);
    n.d_types = in.token_type_ids && c.has_token_types() ? n.upload_ints(n.types, in.token_type_ids, T) : nullptr;
  }
  n.d_key_mask = n.o.remove_padding ? nullptr : n.d_mask;

  n.embeddings();
  for (int64_t l = 0; l < c.num_layers; ++l) n.layer_forward(l);
  if (n.o.remove_padding)
    for (int64_t l = n.o.keep_hidden_states ? 0 : c.num_layers; l <= c.num_layers; ++l) n.unpack_hidden(l);
  if (c.has_pooler) n.pooler_forward();
  n.head->forward(n, B, S);
  if (n.o.pooling != Pooling::kNone && n.ops->ok()) {
    Ops::Timed timed(*n.ops, "pooling");
    kernels::PoolArgs pa;
    pa.hidden = n.last_hidden(), pa.mask = n.d_mask, pa.out = n.at(n.sentence);
    pa.batch = B, pa.seq = S, pa.width = H;
    pa.kind = n.o.pooling == Pooling::kCls    ? kernels::TokenPooling::kCls
              : n.o.pooling == Pooling::kMean ? kernels::TokenPooling::kMean
                                              : kernels::TokenPooling::kMax;
    pa.normalize = n.o.normalize;
    n.ops->check(n.ops->backend().pool(pa));
  }
  BERT_RETURN_IF_ERROR(n.ops->status());

  if (n.o.keep_hidden_states || n.o.training)
    for (int64_t l = 0; l <= c.num_layers; ++l) n.publish(n.hidden_names[l], {B, S, H}, n.padded_hidden_at(l));
  n.publish("last_hidden_state", {B, S, H}, n.last_hidden());
  if (c.has_pooler) n.publish("pooler_output", {B, H}, n.at(n.pooled));
  n.head->publish(n, B, S);
  if (n.o.pooling != Pooling::kNone) n.publish("sentence_embedding", {B, H}, n.at(n.sentence));
  return Status::Ok();
}

Status Network::Impl::pack_inputs(const BatchInput& in) {
  const ModelConfig& cf = *c;
  int32_t* packed_ids = host_ints.data();
  int32_t* packed_positions = packed_ids + B * S;
  int32_t* packed_types = packed_positions + B * S;
  int32_t* index = packed_types + B * S;
  int32_t* starts = index + B * S;
  const bool types = in.token_type_ids && cf.has_token_types();
  int64_t t = 0;
  starts[0] = 0;
  for (int64_t b = 0; b < B; ++b) {
    const int32_t* mask = in.attention_mask ? in.attention_mask + b * S : nullptr;
    int64_t len = S;
    if (mask) {
      len = 0;
      while (len < S && mask[len] != 0) ++len;
      auto where = [&](int64_t s) { return "attention_mask[" + std::to_string(b) + "][" + std::to_string(s) + "]"; };
      if (len == 0)
        return invalid_argument(where(0) + " = 0: padding removal needs every sequence to start with a real token");
      for (int64_t s = len; s < S; ++s)
        if (mask[s] != 0)
          return invalid_argument(where(s) + " = 1 after padding: padding removal needs each sequence's real tokens "
                                  "first");
    }
    for (int64_t s = 0; s < len; ++s, ++t) {
      const int64_t from = b * S + s;
      packed_ids[t] = in.input_ids[from], packed_positions[t] = host_positions[from];
      packed_types[t] = types ? in.token_type_ids[from] : 0;
      index[t] = static_cast<int32_t>(from);
    }
    starts[b + 1] = static_cast<int32_t>(t);
  }
  T = t;
  d_ids = upload_ints(ids, packed_ids, T);
  d_positions = upload_ints(positions, packed_positions, T);
  d_types = types ? upload_ints(this->types, packed_types, T) : nullptr;
  d_row_index = upload_ints(row_index, index, T);
  d_seq_starts = upload_ints(seq_starts, starts, B + 1);
  return ops->status();
}

void Network::Impl::unpack_hidden(int64_t layer) {
  if (!ops->ok()) return;
  Ops::Timed timed(*ops, "unpack");
  const int64_t H = c->hidden_size;
  float* padded = padded_hidden_at(layer);
  ops->check(ops->backend().zero(padded, sizeof(float) * B * S * H));
  ops->check(ops->backend().scatter_rows(hidden_at(layer), H, padded, H, d_row_index, T, H));
}

// Word + position + token type, LayerNorm, dropout -> hidden_states.0 (through the E -> H projection
// when the model factorises its embeddings). Training keeps the sum for the LayerNorm's backward.
void Network::Impl::embeddings() {
  const ModelConfig& cf = *c;
  const int64_t E = cf.embedding_size;
  const bool train = o.training;
  float* out = cf.embedding_projection ? at(emb_out) : hidden_at(0);
  kernels::EmbedArgs e;
  e.input_ids = d_ids, e.positions = d_positions, e.token_types = d_types;
  e.word_table = w->word, e.position_table = w->position, e.type_table = w->token_type;
  e.gamma = train ? nullptr : w->emb_ln.gamma, e.beta = train ? nullptr : w->emb_ln.beta;
  e.out = train ? at(emb_sum) : out, e.tokens = T, e.width = E, e.eps = cf.layer_norm_eps;
  {
    Ops::Timed timed(*ops, "embed");
    if (ops->ok()) ops->check(ops->backend().embed(e));
  }
  if (train) {  // inference fused the LayerNorm into the gather
    ops->layernorm(at(emb_sum), nullptr, w->emb_ln, out, T, E);
    ops->dropout(out, T * E, kEmbedSite);
  }
  if (cf.embedding_projection) ops->linear("gemm.embed_project", out, w->emb_project, hidden_at(0), T);
}

void Network::Impl::qkv_views(float* base, const LayerWeights& lw, float** q, float** k, float** v, int64_t* ld) const {
  const int64_t H = c->hidden_size;
  if (lw.qkv) *q = base, *k = base + H, *v = base + 2 * H, *ld = 3 * H;
  else *q = base, *k = base + T * H, *v = base + 2 * T * H, *ld = H;  // grouped: three [T, H] planes
}

// One encoder layer: x = hidden_states.l -> y = hidden_states.(l+1).
//   a = LN(x + drop(attention(x) W_o + b_o));  y = LN(a + drop(act(a W_in + b_in) W_out + b_out))
// Inference fuses bias + activation into the GEMM and the residual into the LayerNorm; training keeps
// the sums and the pre-activation for the backward.
void Network::Impl::layer_forward(int64_t l) {
  const ModelConfig& cf = *c;
  const LayerWeights& lw = w->layers[cf.layer_weights_index(l)];  // ALBERT runs one set many times
  LayerActs& sv = acts_of(l);
  const int64_t H = cf.hidden_size, I = cf.intermediate_size;
  const float* x = hidden_at(l);
  float* y = hidden_at(l + 1);
  const Activation act = to_activation(cf.hidden_act);
  attention_forward(l, lw, sv);
  float* t = at(tmp);
  ops->linear("gemm.attn_out", at(sv.ctx), lw.out, t, T);
  if (o.training) {
    ops->dropout(t, T * H, layer_site(l, 1));
    ops->add(t, x, at(sv.s1), T * H);
    ops->layernorm(at(sv.s1), nullptr, lw.attn_ln, at(sv.a), T, H);
    ops->linear("gemm.ffn_in", at(sv.a), lw.ffn_in, at(sv.f_pre), T);
    ops->linear_activation(at(sv.f_pre), at(sv.f_act), T, I, act);  // as the fused inference layer computes it
    ops->linear("gemm.ffn_out", at(sv.f_act), lw.ffn_out, t, T);
    ops->dropout(t, T * H, layer_site(l, 2));
    ops->add(t, at(sv.a), at(sv.s2), T * H);
    ops->layernorm(at(sv.s2), nullptr, lw.ffn_ln, y, T, H);
  } else {
    ops->layernorm(t, x, lw.attn_ln, at(sv.a), T, H);
    ops->linear("gemm.ffn_in", at(sv.a), lw.ffn_in, at(sv.f_act), T, act);
    ops->linear("gemm.ffn_out", at(sv.f_act), lw.ffn_out, t, T);
    ops->layernorm(t, at(sv.a), lw.ffn_ln, y, T, H);
  }
}

// Self-attention of layer l into sv.ctx [T, H]: Q, K, V (one fused GEMM into [T, 3H] rows, or three
// grouped ones into [T, H] planes), then softmax(Q K^T / sqrt(dh), masked) V per head, unfused (the
// probabilities [B, nh, S, S] are kept for the backward) or by the backend's fused kernel.
void Network::Impl::attention_forward(int64_t l, const LayerWeights& lw, LayerActs& sv) {
  const ModelConfig& cf = *c;
  const int64_t H = cf.hidden_size, nh = cf.num_heads, dh = cf.head_dim();
  const float* x = hidden_at(l);
  float* qkv_buf = at(sv.qkv);
  float *q, *k, *v;
  int64_t ld;
  qkv_views(qkv_buf, lw, &q, &k, &v, &ld);
  if (lw.qkv) {
    ops->linear("gemm.qkv", x, lw.qkv, qkv_buf, T);
  } else {
    ops->linear("gemm.qkv", x, lw.q, q, T);
    ops->linear("gemm.qkv", x, lw.k, k, T);
    ops->linear("gemm.qkv", x, lw.v, v, T);
  }
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(dh)));
  if (fused_attention) {
    if (!ops->ok()) return;
    Ops::Timed timed(*ops, "attention.fused");
    runtime::AttentionArgs a;
    a.op = attention_args(q, k, v, ld, at(sv.ctx));
    if (o.training) a.lse = at(sv.lse), a.dropout = o.dropout, a.seed = ops->stream(), a.offset = layer_site(l, 0) << 40;
    ops->check(ops->backend().attention(a));
    return;
  }
  // scores[b, h] = Q[b, h] K[b, h]^T -> [B, nh, S, S]
  float* probs = at(sv.probs);
  kernels::BatchedMatmulArgs qk;
  qk.a = q, qk.b = k, qk.c = probs, qk.batch0 = B, qk.batch1 = nh, qk.M = S, qk.N = S, qk.K = dh;
  const int64_t qs[4] = {S * ld, dh, ld, 1}, ks[4] = {S * ld, dh, 1, ld}, ps[4] = {nh * S * S, S * S, S, 1};
  std::memcpy(qk.a_strides, qs, sizeof qs), std::memcpy(qk.b_strides, ks, sizeof ks), std::memcpy(qk.c_strides, ps, sizeof ps);
  ops->batched_matmul("attention.scores", qk);
  if (ops->ok()) {
    Ops::Timed timed(*ops, "softmax");
    ops->check(ops->backend().softmax_masked({probs, d_key_mask, B, nh, S, S, scale}));
  }
  const float* p_used = probs;
  if (ops->dropping()) {  // the backward regenerates the dropped probabilities from the same site
    ops->dropout(at(probs_drop), B * nh * S * S, layer_site(l, 0), probs);
    p_used = at(probs_drop);
  }
  // ctx[b, s, h*dh + d] = sum_j P[b, h, s, j] V[b, j, h*dh + d]
  kernels::BatchedMatmulArgs pv;
  pv.a = p_used, pv.b = v, pv.c = at(sv.ctx), pv.batch0 = B, pv.batch1 = nh, pv.M = S, pv.N = dh, pv.K = S;
  const int64_t vs[4] = {S * ld, dh, ld, 1}, cs[4] = {S * H, dh, H, 1};
  std::memcpy(pv.a_strides, ps, sizeof ps), std::memcpy(pv.b_strides, vs, sizeof vs), std::memcpy(pv.c_strides, cs, sizeof cs);
  ops->batched_matmul("attention.context", pv);
}

kernels::AttentionArgs Network::Impl::attention_args(const float* q, const float* k, const float* v, int64_t ld,
                                                    float* out) const {
  kernels::AttentionArgs a;
  a.q = q, a.k = k, a.v = v, a.ld = ld, a.key_mask = d_key_mask, a.seq_starts = d_seq_starts, a.out = out;
  a.ldo = c->hidden_size, a.batch = B, a.seq = S, a.heads = c->num_heads, a.head_dim = c->head_dim();
  a.scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(c->head_dim())));
  return a;
}

// pooler_output = tanh(W h[CLS] + b): the first token of each sequence (row stride S * H).
void Network::Impl::pooler_forward() {
  const int64_t H = c->hidden_size;
  ops->linear("pooler", last_hidden(), w->pooler, at(pooled_pre), B, Activation::kIdentity, S * H);
  ops->copy(at(pooled_pre), at(pooled), B * H);
  ops->activation(at(pooled), B * H, Activation::kTanh);
}

// ---- backward -------------------------------------------------------------------------------------

Result<double> Network::backward(const BatchInput& in, const TrainLabels& y, float loss_scale, const BertWeights& g) {
  Impl& n = *impl_;
  if (!n.o.training) return internal_error("backward() on a network planned for inference");
  const ModelConfig& c = *n.c;
  const int64_t H = c.hidden_size;
  runtime::Backend& be = n.ops->backend();
  n.loss_terms.clear();
  BERT_RETURN_IF_ERROR(be.zero(n.at(n.d_h), sizeof(float) * n.T * H));
  BERT_RETURN_IF_ERROR(be.zero(n.at(n.losses), 4 * sizeof(kernels::LossSum)));
  auto ready = [&](int64_t stage) {
    if (n.gradients_ready && n.ops->ok()) n.gradients_ready(stage);
  };
  n.head->loss_backward(n, y, n.B, n.S, loss_scale, g);
  ready(c.num_layers);
  for (int64_t l = c.num_layers - 1; l >= 0; --l) n.layer_backward(l, g), ready(l);
  n.embeddings_backward(g);
  ready(-1);
  BERT_RETURN_IF_ERROR(n.ops->status());

  kernels::LossSum sums[4];
  BERT_RETURN_IF_ERROR(be.download(sums, n.at(n.losses), sizeof sums));
  double loss = 0;
  for (const LossTerm& t : n.loss_terms) {
    const kernels::LossSum& s = sums[t.slot];
    if (s.count) loss += t.weight * s.sum / double(s.count);  // torch: a mean over nothing is NaN; we give 0
  }
  return loss;
}

void Network::Impl::pooler_backward(float* d_pooled, const BertWeights& g) {
  const int64_t H = c->hidden_size;
  ops->activation_backward(at(pooled_pre), d_pooled, B * H, Activation::kTanh);
  ops->linear_backward("backward.pooler", w->pooler, g.pooler, last_hidden(), d_pooled, at(d_h), B, true, S * H);
}

// The backward of layer_forward, from d_h = dL/dy into d_h = dL/dx.
void Network::Impl::layer_backward(int64_t l, const BertWeights& g) {
  const ModelConfig& cf = *c;
  if (o.recompute) layer_forward(l);  // the same dropout sites give the same masks
  const int64_t wi = cf.layer_weights_index(l);
  const LayerWeights& lw = w->layers[wi];
  const LayerWeights& gw = g.layers[wi];
  LayerActs& sv = acts_of(l);
  const int64_t H = cf.hidden_size, I = cf.intermediate_size, nh = cf.num_heads, dh = cf.head_dim();
  const Activation act = to_activation(cf.hidden_act);
  const float* x = hidden_at(l);
  float *dh_ = at(d_h), *da = at(d_a), *dt = at(d_tmp), *dffn = at(d_ffn);
  // y = LN2(s2), s2 = drop(ffn_out(f_act)) + a
  ops->layernorm_backward(at(sv.s2), lw.ffn_ln, gw.ffn_ln, dh_, da, T, H);  // da = ds2
  ops->dropout(dt, T * H, layer_site(l, 2), da);
  ops->linear_backward("backward.gemm.ffn_out", lw.ffn_out, gw.ffn_out, at(sv.f_act), dt, dffn, T, false);
  ops->activation_backward(at(sv.f_pre), dffn, T * I, act);
  ops->linear_backward("backward.gemm.ffn_in", lw.ffn_in, gw.ffn_in, at(sv.a), dffn, da, T, true);
  // a = LN1(s1), s1 = drop(attn_out(ctx)) + x
  ops->layernorm_backward(at(sv.s1), lw.attn_ln, gw.attn_ln, da, dh_, T, H);  // d_h = ds1 (= dx so far)
  ops->dropout(dt, T * H, layer_site(l, 1), dh_);
  float* dctx = at(d_ctx);
  ops->linear_backward("backward.gemm.attn_out", lw.out, gw.out, at(sv.ctx), dt, dctx, T, false);
  // Attention: ctx = drop(P) V, P = softmax(scale Q K^T)
  float *q, *k, *v, *dq, *dk, *dv;
  int64_t ld;
  qkv_views(at(sv.qkv), lw, &q, &k, &v, &ld);
  qkv_views(at(d_qkv), lw, &dq, &dk, &dv, &ld);
  const float scale = static_cast<float>(1.0 / std::sqrt(double(dh)));
  if (fused_attention) {
    if (ops->ok()) {
      Ops::Timed timed(*ops, "backward.attention.fused");
      runtime::AttentionGradArgs a;
      a.fwd.op = attention_args(q, k, v, ld, at(sv.ctx));
      a.fwd.lse = at(sv.lse), a.fwd.dropout = o.dropout, a.fwd.seed = ops->stream();
      a.fwd.offset = layer_site(l, 0) << 40;
      a.d_out = dctx, a.dq = dq, a.dk = dk, a.dv = dv, a.scratch = at(attention_scratch);
      ops->check(ops->backend().attention_backward(a));
    }
  } else {
    auto attn_matmul = [&](const float* a, const float* b, float* out, int64_t M, int64_t N, int64_t K,
                           const int64_t* as, const int64_t* bs, const int64_t* cs) {
      kernels::BatchedMatmulArgs m;
      m.a = a, m.b = b, m.c = out, m.batch0 = B, m.batch1 = nh, m.M = M, m.N = N, m.K = K;
      std::memcpy(m.a_strides, as, 4 * sizeof(int64_t)), std::memcpy(m.b_strides, bs, 4 * sizeof(int64_t));
      std::memcpy(m.c_strides, cs, 4 * sizeof(int64_t));
      ops->batched_matmul("backward.attention", m);
    };
    const int64_t qs[4] = {S * ld, dh, ld, 1}, kt[4] = {S * ld, dh, 1, ld};
    const int64_t ps[4] = {nh * S * S, S * S, S, 1}, pt[4] = {nh * S * S, S * S, 1, S}, cs[4] = {S * H, dh, H, 1};
    const float* p_used = at(sv.probs);
    if (ops->dropping()) {  // regenerate the dropped probabilities
      ops->dropout(at(probs_drop), B * nh * S * S, layer_site(l, 0), at(sv.probs));
      p_used = at(probs_drop);
    }
    float* dp = at(d_probs);
    attn_matmul(dctx, v, dp, S, S, dh, cs, kt, ps);    // dP = dctx V^T
    attn_matmul(p_used, dctx, dv, S, dh, S, pt, cs, qs);  // dV = P^T dctx
    if (ops->ok()) {  // (with dropout, dP is wrt the dropped probabilities: the kernel folds the mask in)
      Ops::Timed timed(*ops, "backward.softmax");
      ops->check(ops->backend().softmax_backward(
          {at(sv.probs), dp, B, nh, S, S, scale, ops->dropping() ? p_used : nullptr}));
    }
    attn_matmul(dp, k, dq, S, dh, S, ps, qs, qs);  // dQ = dS K
    attn_matmul(dp, q, dk, S, dh, S, pt, qs, qs);  // dK = dS^T Q
  }
  if (lw.qkv) {
    ops->linear_backward("backward.gemm.qkv", lw.qkv, gw.qkv, x, at(d_qkv), dh_, T, true);
  } else {
    ops->linear_backward("backward.gemm.qkv", lw.q, gw.q, x, dq, dh_, T, true);
    ops->linear_backward("backward.gemm.qkv", lw.k, gw.k, x, dk, dh_, T, true);
    ops->linear_backward("backward.gemm.qkv", lw.v, gw.v, x, dv, dh_, T, true);
  }
}

// The backward of embeddings(): projection, dropout, LayerNorm, then the scatter into the tables
// (the padding rows of nn.Embedding(padding_idx) get nothing from the lookup).
void Network::Impl::embeddings_backward(const BertWeights& g) {
  const ModelConfig& cf = *c;
  const int64_t E = cf.embedding_size;
  float* de = cf.embedding_projection ? at(d_emb) : at(d_h);
  if (cf.embedding_projection)
    ops->linear_backward("backward.gemm.embed_project", w->emb_project, g.emb_project, at(emb_out), at(d_h), de, T, false);
  ops->dropout(de, T * E, kEmbedSite);
  ops->layernorm_backward(at(emb_sum), w->emb_ln, g.emb_ln, de, de, T, E);
  if (!ops->ok()) return;
  Ops::Timed timed(*ops, "backward.embed");
  kernels::EmbedBackwardArgs eb;
  eb.input_ids = d_ids, eb.positions = d_positions, eb.token_types = d_types, eb.d_out = de;
  eb.d_word = const_cast<float*>(g.word), eb.d_position = const_cast<float*>(g.position);
  eb.d_type = const_cast<float*>(g.token_type), eb.tokens = T, eb.width = E;
  runtime::EmbedPadding pad;
  pad.word = static_cast<int32_t>(cf.pad_token_id);
  if (cf.position_ids == PositionIds::kAfterPadding) pad.position = static_cast<int32_t>(cf.pad_token_id);
  ops->check(ops->backend().embed_backward(eb, pad));
}

}  // namespace bert::model
