// The Trainer on device cuda (engine/src/cuda/device_trainer.h): engine/src/trainer.cc's forward,
// losses and backward, op for op, on one stream with cuBLASLt GEMMs (linear layers, their gradients
// and the attention matmuls as strided batched matmuls) and the kernels of
// kernels/cuda/train_kernels.h; the multi-tensor optimizer step clips by the global norm on the
// device. One host synchronization per ForwardBackward (the loss and the "all finite" flag) and one
// per Step (the norm and the overflow flag). Storage is fp32 throughout; the GEMMs compute as
// TrainerOptions.precision says (TF32 / fp16 / bf16 tensor cores on the fp32 operands; fp16 with
// dynamic loss scaling). Attention keeps the [B, heads, S, S] probabilities per layer like the CPU
// trainer, or with fused_attention only a log-sum-exp per query row (kernels/cuda/attention_train.h);
// recompute_activations keeps only the layers' inputs and recomputes each layer in the backward.
// NEVER RUN ON A GPU YET (none was lent).
#include "engine/src/cuda/device_trainer.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <limits>

#include "engine/src/cuda/device_model.h"
#include "engine/src/model_impl.h"
#include "kernels/cuda/attention_train.h"
#include "kernels/cuda/cuda_gemm.h"
#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/train_kernels.h"
#include "kernels/gemm.h"
#include "kernels/train.h"

namespace bert::cuda {

namespace kc = kernels::cuda;
using kernels::Activation;

namespace {

float* mut(const float* p) { return const_cast<float*>(p); }  // gradient views are bound as const

constexpr int64_t kParamAlign = 64;  // floats: every parameter starts on a 256-byte boundary

// Device offsets (into the activation workspace) of one encoder layer's saved activations.
struct LayerSaved {
  size_t qkv = 0, probs = 0, ctx = 0, s1 = 0, a = 0, f_pre = 0, f_act = 0, s2 = 0;
  size_t lse = 0;  // fused attention: [B, heads, S] log-sum-exp instead of probs
};

kc::F32Compute gemm_compute(TrainPrecision p, bool allow_tf32) {
  switch (p) {
    case TrainPrecision::kF32: return allow_tf32 ? kc::F32Compute::kTF32 : kc::F32Compute::kExact;
    case TrainPrecision::kTF32: return kc::F32Compute::kTF32;
    case TrainPrecision::kF16: return kc::F32Compute::kF16;
    case TrainPrecision::kBF16: return kc::F32Compute::kBF16;
  }
  return kc::F32Compute::kExact;
}

// Dropout sites, as trainer.cc numbers them.
enum Site : uint64_t { kEmbed = 1, kClassifierIn = 2, kClassifierHidden = 3, kLayerBase = 16 };
uint64_t layer_site(int64_t l, uint64_t k) { return uint64_t(kLayerBase) + uint64_t(l) * 4 + k; }

}  // namespace

struct DeviceTrainer::Impl {
  const ModelConfig* c = nullptr;
  TrainerOptions o;
  void* stream = nullptr;
  std::unique_ptr<kc::CudaGemm> gemm;

  // Parameters in name order; each has an offset (floats) into the four regions of `state`.
  std::vector<std::string> names;
  std::vector<int64_t> offsets, sizes;
  std::vector<bool> decay;
  int64_t total = 0;  // floats per region
  DeviceWorkspace state;
  size_t p_region = 0, g_region = 0, m_region = 0, v_region = 0;
  BertWeights w, g;  // device views into the parameter and gradient regions
  kc::DeviceTensorListStorage list;
  int64_t step_count = 0;
  // Dynamic loss scaling (fp16): the scale and the clean steps since it last changed, kept on the host.
  bool scaling = false;
  float scale = 1.f;
  int64_t good_steps = 0;

  // Activations and scratch, planned for max_batch x max_seq.
  DeviceWorkspace ws;
  size_t d_ids = 0, d_pos = 0, d_types = 0, d_mask = 0, d_labels = 0, d_labels2 = 0, d_targets = 0;
  size_t emb_sum = 0, emb_ln = 0, d_emb = 0;
  std::vector<size_t> hidden;
  std::vector<LayerSaved> saved;
  size_t delta = 0;  // fused attention's [B, heads, S] scratch
  size_t probs_drop = 0, d_probs = 0, d_qkv = 0, d_ffn = 0, d_h = 0, d_a = 0, d_tmp = 0, tmp = 0;
  size_t pooled_pre = 0, pooled = 0, cls_in = 0, first_pre = 0, first = 0, head_pre = 0, head_act = 0, head_ln = 0;
  size_t logits = 0, d_logits = 0, start_logits = 0, end_logits = 0, d_x = 0, d_y = 0;
  size_t loss_sums = 0, flags = 0, norm_sq = 0, norm = 0, clip = 0, scratch = 0;
  size_t scratch_bytes = 0;
  // Pinned host staging: int32 inputs and labels, float targets, and what comes back per call.
  int32_t* h_int = nullptr;
  size_t h_int_count = 0;
  float* h_float = nullptr;
  size_t h_float_count = 0;
  void* h_back = nullptr;  // LossSum[2] + int flag, or the step's norm outputs
  std::string failure;     // the first failed launch of this call

  ~Impl() {
    kc::host_free_pinned(h_int);
    kc::host_free_pinned(h_float);
    kc::host_free_pinned(h_back);
    gemm.reset();
    kc::stream_destroy(stream);
  }

  float* P(size_t region, size_t i) const { return state.at<float>(region) + offsets[i]; }
  template <typename T = float>
  T* at(size_t offset) const {
    return ws.at<T>(offset);
  }
  kc::Workspace reduce_ws() const { return {ws.at(scratch), scratch_bytes}; }
  bool check(bool ok, const char* what) {
    if (!ok && failure.empty()) failure = std::string(what) + ": " + kc::cuda_last_error();
    return ok;
  }
  Status failed() const { return internal_error("device cuda training: " + failure); }

  // ---- building blocks (trainer.cc's lambdas on device pointers) --------------------------------
  void copy(float* dst, const float* src, int64_t n) {
    const size_t bytes = size_t(n) * 4;
    if (dst != src) check(kc::copy_async(dst, src, bytes, stream), "copy");  // 1-D: no pitch limit
  }
  void zero(float* p, int64_t n) { check(kc::memset_async(p, 0, size_t(n) * 4, stream), "memset"); }

  // y = x W^T + b (rows of x with stride ldx), grouped layers as one GEMM per group.
  void linear(const char* what, const float* x, const Linear& lin, float* out, int64_t M, int64_t ldx = 0) {
    const int64_t G = lin.groups, n = lin.N / G, k = lin.K / G;
    if (!ldx) ldx = lin.K;
    for (int64_t gi = 0; gi < G; ++gi) {
      kc::DevLinearArgs a;
      a.x = x + gi * k, a.w = lin.w + gi * n * k, a.bias = lin.b ? lin.b + gi * n : nullptr, a.y = out + gi * n;
      a.M = M, a.N = n, a.K = k, a.ldx = ldx, a.ldy = lin.N, a.dtype = kc::Elem::kF32;
      check(gemm->linear(a, stream), what);
    }
  }
  void matmul(const char* what, const float* a, const float* b, float* out, int64_t batch0, int64_t batch1,
              int64_t M, int64_t N, int64_t K, std::array<int64_t, 4> as, std::array<int64_t, 4> bs,
              std::array<int64_t, 4> cs, bool accumulate) {
    kernels::BatchedMatmulArgs m;
    m.a = a, m.b = b, m.c = out, m.batch0 = batch0, m.batch1 = batch1, m.M = M, m.N = N, m.K = K;
    m.accumulate = accumulate;
    std::copy(as.begin(), as.end(), m.a_strides), std::copy(bs.begin(), bs.end(), m.b_strides);
    std::copy(cs.begin(), cs.end(), m.c_strides);
    check(gemm->batched_matmul(m, stream), what);
  }
  // dx (= or +=) dy W; dW += dy^T x; db += colsum(dy). Rows of x and dx have stride ldx (0 = K).
  void linear_backward(const char* what, const Linear& lin, const Linear& glin, const float* x, const float* dy,
                       float* dx, int64_t M, bool accumulate_dx, int64_t ldx = 0) {
    const int64_t N = lin.N, K = lin.K, G = lin.groups, Ng = N / G, Kg = K / G;
    if (!ldx) ldx = K;
    if (dx) matmul(what, dy, lin.w, dx, 1, G, M, Kg, Ng, {0, Ng, N, 1}, {0, Ng * Kg, Kg, 1}, {0, Kg, ldx, 1},
                   accumulate_dx);
    matmul(what, dy, x, mut(glin.w), 1, G, Ng, Kg, M, {0, Ng, 1, N}, {0, Kg, ldx, 1}, {0, Ng * Kg, Kg, 1}, true);
    check(kc::column_sum_f32({dy, mut(glin.b), M, N, 0}, stream, reduce_ws()), what);
  }
  // sum = x + residual (kept for the backward), out = LN(sum).
  void layernorm(const float* x, const float* residual, const LayerNormWeights& ln, float* out, float* sum,
                 int64_t rows, int64_t cols) {
    if (residual) check(kc::add_f32(x, residual, sum, rows * cols, stream), "residual add");
    else copy(sum, x, rows * cols);
    kernels::LayerNormArgs a;
    a.x = sum, a.residual = nullptr, a.gamma = ln.gamma, a.beta = ln.beta, a.y = out, a.rows = rows, a.cols = cols;
    a.eps = c->layer_norm_eps;
    check(kc::layernorm_f32(a, stream), "layernorm");
  }
  void layernorm_backward(const float* sum, const LayerNormWeights& ln, const LayerNormWeights& gln, const float* dy,
                          float* ds, int64_t rows, int64_t cols) {
    check(kc::layernorm_backward_f32({sum, ln.gamma, dy, ds, mut(gln.gamma), mut(gln.beta), rows, cols,
                                      c->layer_norm_eps},
                                     stream, reduce_ws()),
          "layernorm backward");
  }
  void activation(float* x, int64_t n, Activation a) {
    if (a != Activation::kIdentity) check(kc::activation_f32({x, n, a}, stream), "activation");
  }
  void activation_backward(const float* pre, float* grad, int64_t n, Activation a) {
    check(kc::activation_backward_f32({pre, grad, n, a}, stream), "activation backward");
  }

  Result<double> run(const BatchInput& in, const TrainLabels& y, float loss_scale, const int32_t* positions,
                     uint64_t dropout_stream);
  Status upload(const BatchInput& in, const TrainLabels& y, const int32_t* positions);
  Status first_nonfinite_gradient() const;
};

DeviceTrainer::DeviceTrainer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
DeviceTrainer::~DeviceTrainer() = default;
int64_t DeviceTrainer::steps() const { return impl_->step_count; }
float DeviceTrainer::loss_scale() const { return impl_->scale; }
size_t DeviceTrainer::state_bytes() const { return impl_->state.bytes(); }
size_t DeviceTrainer::workspace_bytes() const { return impl_->ws.bytes(); }

Result<std::unique_ptr<DeviceTrainer>> DeviceTrainer::Create(const ModelConfig& c, const HostParams& params,
                                                             const TrainerOptions& o, bool allow_tf32) {
  if (kc::device_count() == 0) return unsupported("device cuda: no CUDA GPU is visible to train on");
  auto impl = std::make_unique<Impl>();
  Impl& s = *impl;
  s.c = &c;
  s.o = o;
  s.stream = kc::stream_create();
  if (!s.stream) return internal_error("device cuda: " + kc::cuda_last_error());
  s.gemm = std::make_unique<kc::CudaGemm>(gemm_compute(o.precision, allow_tf32));
  s.scaling = o.precision == TrainPrecision::kF16 && o.loss_scaling.enabled;
  s.scale = s.scaling ? o.loss_scaling.init_scale : 1.f;
  if (o.fused_attention && c.head_dim() > 128)
    return unsupported("fused_attention supports head sizes up to 128; this model's is " + std::to_string(c.head_dim()));

  // Parameters, gradients and moments: four regions of one allocation, the same offsets in each.
  for (const auto& [name, value] : params) {
    s.names.push_back(name);
    s.offsets.push_back(s.total);
    s.sizes.push_back(static_cast<int64_t>(value.size()));
    // No weight decay on biases and LayerNorm weights (as trainer.cc registers them).
    s.decay.push_back(!(name.ends_with(".bias") || name.ends_with(".gamma") || name.ends_with(".beta")));
    s.total += (static_cast<int64_t>(value.size()) + kParamAlign - 1) / kParamAlign * kParamAlign;
  }
  const size_t region = size_t(s.total) * 4;
  s.p_region = s.state.add(region), s.g_region = s.state.add(region);
  s.m_region = s.state.add(region), s.v_region = s.state.add(region);
  if (!s.state.allocate())
    return out_of_range("device cuda: cannot allocate " + std::to_string(s.state.bytes() >> 20) +
                        " MiB for the parameters, gradients and moments: " + kc::cuda_last_error());
  if (!kc::memset_async(s.state.at(0), 0, s.state.bytes(), s.stream))
    return internal_error("device cuda: " + kc::cuda_last_error());
  for (size_t i = 0; i < s.names.size(); ++i)
    if (!kc::copy_to_device_async(s.P(s.p_region, i), params.at(s.names[i]).data(), size_t(s.sizes[i]) * 4, s.stream))
      return internal_error("device cuda: uploading '" + s.names[i] + "': " + kc::cuda_last_error());
  auto lookup = [&s](size_t region) {
    return [&s, region](const std::string& name) -> const float* {
      auto it = std::lower_bound(s.names.begin(), s.names.end(), name);
      return it == s.names.end() || *it != name ? nullptr : s.P(region, size_t(it - s.names.begin()));
    };
  };
  BERT_RETURN_IF_ERROR(bind_weights(c, lookup(s.p_region), s.w));
  BERT_RETURN_IF_ERROR(bind_weights(c, lookup(s.g_region), s.g));
  std::vector<kc::DeviceTensorEntry> entries;
  for (size_t i = 0; i < s.names.size(); ++i)
    entries.push_back({s.P(s.p_region, i), s.P(s.g_region, i), s.P(s.m_region, i), s.P(s.v_region, i), s.sizes[i],
                       s.decay[i], nullptr});
  if (!kc::stream_synchronize(s.stream) || !s.list.build(entries))
    return internal_error("device cuda: building the parameter list: " + kc::cuda_last_error());

  // Activations, mirroring trainer.cc's buffers.
  const size_t B = o.max_batch, S = o.max_seq, T = B * S;
  const size_t H = c.hidden_size, I = c.intermediate_size, E = c.embedding_size, nh = c.num_heads;
  const size_t V = c.vocab_size, L = c.num_labels;
  DeviceWorkspace& ws = s.ws;
  auto f = [&ws](size_t n) { return ws.add(n * 4); };
  s.d_ids = f(T), s.d_pos = f(T), s.d_types = f(T), s.d_mask = f(T), s.d_labels = f(T), s.d_labels2 = f(2 * B);
  s.d_targets = f(std::max(T, B));
  s.emb_sum = f(T * E), s.emb_ln = f(T * E), s.d_emb = f(T * E);
  for (int64_t l = 0; l <= c.num_layers; ++l) s.hidden.push_back(f(T * H));
  s.saved.resize(o.recompute_activations ? 1 : c.num_layers);  // recomputing: one layer's worth, reused
  for (LayerSaved& l : s.saved) {
    l.qkv = f(T * 3 * H), l.ctx = f(T * H), l.s1 = f(T * H);
    l.a = f(T * H), l.f_pre = f(T * I), l.f_act = f(T * I), l.s2 = f(T * H);
    if (o.fused_attention) l.lse = f(B * nh * S);
    else l.probs = f(B * nh * S * S);
  }
  if (o.fused_attention) s.delta = f(B * nh * S);
  else s.probs_drop = f(B * nh * S * S), s.d_probs = f(B * nh * S * S);
  s.d_qkv = f(T * 3 * H), s.d_ffn = f(T * I);
  s.d_h = f(T * H), s.d_a = f(T * H), s.d_tmp = f(T * H), s.tmp = f(T * H);
  s.pooled_pre = f(B * H), s.pooled = f(B * H), s.first_pre = f(B * H), s.first = f(B * H);
  s.cls_in = f(T * H), s.d_x = f(T * H), s.d_y = f(T * H);
  size_t logit_width = std::max<size_t>(L, 2);
  if (c.has_mlm()) logit_width = V;
  s.logits = f(T * logit_width), s.d_logits = f(T * logit_width);
  s.head_pre = f(T * std::max(E, H)), s.head_act = f(T * std::max(E, H)), s.head_ln = f(T * E);
  s.start_logits = f(std::max(T, 2 * B)), s.end_logits = f(std::max(T, 2 * B));
  s.loss_sums = ws.add(2 * sizeof(kernels::LossSum)), s.flags = ws.add(16);
  s.norm_sq = ws.add(8), s.norm = ws.add(4), s.clip = ws.add(4);
  const int64_t widest = static_cast<int64_t>(std::max({V, I, 3 * H, E, L, size_t(2)}));
  s.scratch_bytes = std::max({kc::layernorm_backward_workspace_bytes(T, std::max(H, E)),
                              kc::embed_backward_workspace_bytes(T, E), kc::column_sum_workspace_bytes(T, widest),
                              kc::loss_workspace_bytes(T), kc::multi_tensor_workspace_bytes(s.list.list())});
  s.scratch = ws.add(s.scratch_bytes);
  size_t free_bytes = 0, total_bytes = 0;
  if (kc::device_memory(&free_bytes, &total_bytes) && ws.bytes() > free_bytes)
    return out_of_range("device cuda: training max_batch " + std::to_string(B) + " x max_seq " + std::to_string(S) +
                        " needs " + std::to_string(ws.bytes() >> 20) + " MiB of activations; the GPU has " +
                        std::to_string(free_bytes >> 20) + " MiB free; lower them");
  if (!ws.allocate()) return out_of_range("device cuda: cannot allocate the training workspace: " + kc::cuda_last_error());
  s.h_int_count = 6 * T + 2 * B;
  s.h_float_count = std::max(T, B);
  s.h_int = static_cast<int32_t*>(kc::host_alloc_pinned(s.h_int_count * 4));
  s.h_float = static_cast<float*>(kc::host_alloc_pinned(s.h_float_count * 4));
  s.h_back = kc::host_alloc_pinned(64);
  if (!s.h_int || !s.h_float || !s.h_back) return out_of_range("device cuda: cannot allocate pinned host buffers");
  return std::unique_ptr<DeviceTrainer>(new DeviceTrainer(std::move(impl)));
}

// Inputs and the labels the head reads, staged in pinned memory and uploaded on the stream.
Status DeviceTrainer::Impl::upload(const BatchInput& in, const TrainLabels& y, const int32_t* positions) {
  const int64_t B = in.batch, S = in.seq, T = B * S;
  int32_t* ids = h_int;
  int32_t* pos = ids + T;
  int32_t* types = pos + T;
  int32_t* mask = types + T;
  int32_t* labels = mask + T;
  int32_t* labels2 = labels + T;
  std::memcpy(ids, in.input_ids, T * 4);
  std::memcpy(pos, positions, T * 4);
  for (int64_t i = 0; i < T; ++i) {
    types[i] = c->has_token_types() && in.token_type_ids ? in.token_type_ids[i] : 0;
    mask[i] = in.attention_mask ? in.attention_mask[i] : 1;
  }
  int64_t n_labels = 0, n_labels2 = 0, n_targets = 0;
  switch (c->head) {
    case HeadKind::kNone: break;
    case HeadKind::kSequenceClassification:
      if (c->num_labels == 1) {
        std::memcpy(h_float, y.regression, B * 4), n_targets = B;
      } else {
        std::memcpy(labels, y.labels, B * 4), n_labels = B;
      }
      break;
    case HeadKind::kTokenClassification:
    case HeadKind::kMaskedLM: std::memcpy(labels, y.labels, T * 4), n_labels = T; break;
    case HeadKind::kDiscriminator:
      for (int64_t t = 0; t < T; ++t) h_float[t] = static_cast<float>(y.labels[t]);
      n_targets = T;
      break;
    case HeadKind::kPreTraining:
      std::memcpy(labels, y.labels, T * 4), n_labels = T;
      std::memcpy(labels2, y.sentence_labels, B * 4), n_labels2 = B;
      break;
    case HeadKind::kQuestionAnswering:  // clamped to [0, S]; S is ignored (transformers)
      for (int64_t b = 0; b < B; ++b) {
        labels[b] = std::clamp<int32_t>(y.start_positions[b], 0, static_cast<int32_t>(S));
        labels2[b] = std::clamp<int32_t>(y.end_positions[b], 0, static_cast<int32_t>(S));
      }
      n_labels = n_labels2 = B;
      break;
  }
  const bool ok = kc::copy_to_device_async(at(d_ids), ids, T * 4, stream) &&
                  kc::copy_to_device_async(at(d_pos), pos, T * 4, stream) &&
                  kc::copy_to_device_async(at(d_types), types, T * 4, stream) &&
                  kc::copy_to_device_async(at(d_mask), mask, T * 4, stream) &&
                  kc::copy_to_device_async(at(d_labels), labels, n_labels * 4, stream) &&
                  kc::copy_to_device_async(at(d_labels2), labels2, n_labels2 * 4, stream) &&
                  kc::copy_to_device_async(at(d_targets), h_float, n_targets * 4, stream);
  return ok ? Status() : internal_error("device cuda: uploading the batch: " + kc::cuda_last_error());
}

Result<double> DeviceTrainer::ForwardBackward(const BatchInput& in, const TrainLabels& y, float loss_scale,
                                              const int32_t* positions, uint64_t dropout_stream) {
  impl_->failure.clear();
  return impl_->run(in, y, loss_scale, positions, dropout_stream);
}

Result<double> DeviceTrainer::Impl::run(const BatchInput& in, const TrainLabels& y, float loss_scale,
                                        const int32_t* positions, uint64_t dropout_stream) {
  const int64_t B = in.batch, S = in.seq, T = B * S;
  const int64_t H = c->hidden_size, I = c->intermediate_size, E = c->embedding_size, nh = c->num_heads;
  const int64_t dh = c->head_dim(), V = c->vocab_size, NL = c->num_labels;
  const Activation act = to_activation(c->hidden_act);
  const float p_drop = o.dropout;
  loss_scale *= scale;  // the dynamic loss scale (1 unless fp16 scales)
  BERT_RETURN_IF_ERROR(upload(in, y, positions));
  const int32_t* mask = in.attention_mask ? at<int32_t>(d_mask) : nullptr;

  auto dropout = [&](float* x, int64_t count, uint64_t site) {
    if (p_drop > 0) check(kc::dropout_f32({x, count, p_drop, dropout_stream, site << 40}, stream), "dropout");
  };

  // ---- forward ---------------------------------------------------------------------------------
  {
    kernels::EmbedArgs e;  // the sum only (no LayerNorm): the backward needs it
    e.input_ids = at<int32_t>(d_ids), e.positions = at<int32_t>(d_pos);
    e.token_types = c->has_token_types() ? at<int32_t>(d_types) : nullptr;
    e.word_table = w.word, e.position_table = w.position, e.type_table = w.token_type;
    e.gamma = nullptr, e.beta = nullptr, e.out = at(emb_sum), e.tokens = T, e.width = E;
    check(kc::embed_f32(e, stream), "embedding");
  }
  float* emb_out = c->embedding_projection ? at(emb_ln) : at(hidden[0]);
  layernorm(at(emb_sum), nullptr, w.emb_ln, emb_out, at(emb_sum), T, E);
  dropout(emb_out, T * E, kEmbed);
  if (c->embedding_projection) linear("embedding projection", emb_out, w.emb_project, at(hidden[0]), T);

  const float scale = static_cast<float>(1.0 / std::sqrt(double(dh)));
  auto qkv_views = [&](float* base, const LayerWeights& lw, float** q, float** k, float** v, int64_t* ld) {
    if (lw.qkv) *q = base, *k = base + H, *v = base + 2 * H, *ld = 3 * H;
    else *q = base, *k = base + T * H, *v = base + 2 * T * H, *ld = H;
  };
  auto attn_matmul = [&](const float* a, const float* b, float* out, int64_t M, int64_t N, int64_t K,
                         std::array<int64_t, 4> as, std::array<int64_t, 4> bs, std::array<int64_t, 4> cs) {
    matmul("an attention matmul", a, b, out, B, nh, M, N, K, as, bs, cs, false);
  };
  const std::array<int64_t, 4> probs_st = {nh * S * S, S * S, S, 1}, probs_t = {nh * S * S, S * S, 1, S};
  const std::array<int64_t, 4> ctx_st = {S * H, dh, H, 1};
  // The fused kernels' view of layer l's attention (the same dropout stream and site as the CPU's).
  auto fused_args = [&](const float* q, const float* k, const float* v, int64_t ld, int64_t l) {
    kc::AttentionTrainArgs a;
    a.q = q, a.k = k, a.v = v, a.ld_qkv = ld, a.key_mask = mask, a.batch = B, a.seq = S, a.heads = nh;
    a.head_dim = dh, a.scale = scale, a.dropout_p = p_drop, a.dropout_seed = dropout_stream;
    a.dropout_offset = layer_site(l, 0) << 40;
    return a;
  };

  // Layer l from hidden[l] into hidden[l + 1], keeping what its backward needs in sv. With
  // recompute_activations the backward calls it again just before it needs sv (one set of buffers
  // for all layers): the same inputs, GEMM plans and dropout sites give the same values.
  auto forward_layer = [&](int64_t l, const LayerSaved& sv) {
    const LayerWeights& lw = w.layers[c->layer_weights_index(l)];
    const float* x = at(hidden[l]);
    float *q, *k, *v;
    int64_t ld;
    qkv_views(at(sv.qkv), lw, &q, &k, &v, &ld);
    if (lw.qkv) {
      linear("qkv", x, lw.qkv, at(sv.qkv), T);
    } else {
      linear("q", x, lw.q, q, T), linear("k", x, lw.k, k, T), linear("v", x, lw.v, v, T);
    }
    if (o.fused_attention) {
      check(kc::attention_train_forward(fused_args(q, k, v, ld, l), at(sv.ctx), H, at(sv.lse), stream),
            "fused attention");
    } else {
      const std::array<int64_t, 4> qs = {S * ld, dh, ld, 1}, kt = {S * ld, dh, 1, ld};
      attn_matmul(q, k, at(sv.probs), S, S, dh, qs, kt, probs_st);
      check(kc::softmax_masked_f32({at(sv.probs), mask, B, nh, S, S, scale}, stream), "masked softmax");
      const float* p_used = at(sv.probs);
      if (p_drop > 0) {
        copy(at(probs_drop), at(sv.probs), B * nh * S * S);
        dropout(at(probs_drop), B * nh * S * S, layer_site(l, 0));
        p_used = at(probs_drop);
      }
      attn_matmul(p_used, v, at(sv.ctx), S, dh, S, probs_st, qs, ctx_st);
    }
    linear("attention output", at(sv.ctx), lw.out, at(tmp), T);
    dropout(at(tmp), T * H, layer_site(l, 1));
    layernorm(at(tmp), x, lw.attn_ln, at(sv.a), at(sv.s1), T, H);
    linear("intermediate", at(sv.a), lw.ffn_in, at(sv.f_pre), T);
    copy(at(sv.f_act), at(sv.f_pre), T * I);
    activation(at(sv.f_act), T * I, act);
    linear("output", at(sv.f_act), lw.ffn_out, at(tmp), T);
    dropout(at(tmp), T * H, layer_site(l, 2));
    layernorm(at(tmp), at(sv.a), lw.ffn_ln, at(hidden[l + 1]), at(sv.s2), T, H);
  };
  auto saved_of = [&](int64_t l) -> const LayerSaved& { return saved[o.recompute_activations ? 0 : l]; };
  for (int64_t l = 0; l < c->num_layers; ++l) forward_layer(l, saved_of(l));
  const float* last = at(hidden[c->num_layers]);

  // ---- heads: forward, loss, and the gradient of the loss wrt `last` into d_h -------------------
  zero(at(d_h), T * H);
  kernels::LossSum* sums = at<kernels::LossSum>(loss_sums);
  zero(reinterpret_cast<float*>(sums), 2 * sizeof(kernels::LossSum) / 4);
  // What the loss is made of once the sums are back: weight * sum / count per term (or / fixed).
  struct Term {
    double weight = 0;
    int64_t fixed_count = 0;  // > 0: divide by this instead of the counted rows (MSE)
  };
  std::array<Term, 2> terms{};
  auto first_tokens = [&](const float* src, float* dst) {  // rows 0, S, 2S, ... of [T, H]
    check(kc::copy_2d_async(dst, H * 4, src, S * H * 4, H * 4, B, stream), "first tokens");
  };
  auto add_first_tokens = [&](const float* src, float* dst) {
    check(kc::add_rows_f32(src, H, dst, S * H, B, H, stream), "first tokens backward");
  };
  auto cross_entropy = [&](int term, const float* logits_p, const int32_t* targets, float* dlogits_p, int64_t rows,
                           int64_t classes, float weight, int32_t ignore = -100) {
    kernels::CrossEntropyArgs a;
    a.logits = logits_p, a.targets = targets, a.dlogits = dlogits_p, a.rows = rows, a.classes = classes;
    a.ignore_index = ignore, a.grad_scale = weight * loss_scale;
    kc::LossOptions lo;
    lo.result = sums + term, lo.mean = true;
    check(kc::cross_entropy_f32(a, lo, stream, reduce_ws()), "cross-entropy");
    terms[term].weight = weight;
  };
  auto pooler_forward = [&] {
    linear("pooler", last, w.pooler, at(pooled_pre), B, S * H);
    copy(at(pooled), at(pooled_pre), B * H);
    activation(at(pooled), B * H, Activation::kTanh);
  };
  auto pooler_backward = [&](float* d_pooled) {
    activation_backward(at(pooled_pre), d_pooled, B * H, Activation::kTanh);
    linear_backward("pooler", w.pooler, g.pooler, last, d_pooled, at(d_h), B, true, S * H);
  };

  if (c->has_pooler) pooler_forward();
  switch (c->head) {
    case HeadKind::kNone: break;
    case HeadKind::kSequenceClassification: {
      float* cin = at(cls_in);
      if (c->classifier_on_pooler) {
        copy(cin, at(pooled), B * H);
        dropout(cin, B * H, kClassifierIn);
      } else {  // first token -> dropout -> dense -> act -> dropout
        first_tokens(last, at(first));
        dropout(at(first), B * H, kClassifierIn);
        linear("classifier dense", at(first), w.pre_classifier, at(first_pre), B);
        copy(cin, at(first_pre), B * H);
        activation(cin, B * H, to_activation(c->classifier_act));
        dropout(cin, B * H, kClassifierHidden);
      }
      linear("classifier", cin, w.classifier, at(logits), B);
      if (NL == 1) {
        kernels::MseArgs a;
        a.pred = at(logits), a.target = at(d_targets), a.dpred = at(d_logits), a.n = B, a.grad_scale = loss_scale / float(B);
        kc::LossOptions lo;
        lo.result = sums;
        check(kc::mse_f32(a, lo, stream, reduce_ws()), "mse");
        terms[0] = {1.0, B};
      } else {
        cross_entropy(0, at(logits), at<int32_t>(d_labels), at(d_logits), B, NL, 1.f);
      }
      float* d_cin = at(d_x);
      linear_backward("classifier", w.classifier, g.classifier, cin, at(d_logits), d_cin, B, false);
      if (c->classifier_on_pooler) {
        dropout(d_cin, B * H, kClassifierIn);
        pooler_backward(d_cin);
      } else {
        dropout(d_cin, B * H, kClassifierHidden);
        activation_backward(at(first_pre), d_cin, B * H, to_activation(c->classifier_act));
        float* d_first = at(d_y);
        linear_backward("classifier dense", w.pre_classifier, g.pre_classifier, at(first), d_cin, d_first, B, false);
        dropout(d_first, B * H, kClassifierIn);
        add_first_tokens(d_first, at(d_h));
      }
      break;
    }
    case HeadKind::kTokenClassification: {
      copy(at(cls_in), last, T * H);
      dropout(at(cls_in), T * H, kClassifierIn);
      linear("classifier", at(cls_in), w.classifier, at(logits), T);
      cross_entropy(0, at(logits), at<int32_t>(d_labels), at(d_logits), T, NL, 1.f);
      linear_backward("classifier", w.classifier, g.classifier, at(cls_in), at(d_logits), at(d_x), T, false);
      dropout(at(d_x), T * H, kClassifierIn);
      check(kc::add_f32(at(d_h), at(d_x), at(d_h), T * H, stream), "token classifier backward");
      break;
    }
    case HeadKind::kQuestionAnswering: {
      linear("qa_outputs", last, w.qa, at(logits), T);  // [T, 2]: start, end interleaved
      check(kc::copy_2d_async(at(start_logits), 4, at(logits), 8, 4, T, stream), "qa logits");
      check(kc::copy_2d_async(at(end_logits), 4, at(logits) + 1, 8, 4, T, stream), "qa logits");
      float* d_start = at(d_x);
      float* d_end = at(d_y);
      cross_entropy(0, at(start_logits), at<int32_t>(d_labels), d_start, B, S, 0.5f, static_cast<int32_t>(S));
      cross_entropy(1, at(end_logits), at<int32_t>(d_labels2), d_end, B, S, 0.5f, static_cast<int32_t>(S));
      check(kc::copy_2d_async(at(d_logits), 8, d_start, 4, 4, T, stream), "qa gradients");
      check(kc::copy_2d_async(at(d_logits) + 1, 8, d_end, 4, 4, T, stream), "qa gradients");
      linear_backward("qa_outputs", w.qa, g.qa, last, at(d_logits), at(d_h), T, true);
      break;
    }
    case HeadKind::kDiscriminator: {
      linear("discriminator dense", last, w.disc_dense, at(head_pre), T);
      copy(at(head_act), at(head_pre), T * H);
      activation(at(head_act), T * H, act);
      linear("discriminator prediction", at(head_act), w.disc_out, at(logits), T);
      kernels::BceWithLogitsArgs a;  // mean over the attended tokens
      a.logits = at(logits), a.targets = at(d_targets), a.mask = mask, a.dlogits = at(d_logits), a.n = T;
      a.grad_scale = loss_scale;
      kc::LossOptions lo;
      lo.result = sums, lo.mean = true;
      check(kc::bce_with_logits_f32(a, lo, stream, reduce_ws()), "bce");
      terms[0].weight = 1.0;
      linear_backward("discriminator prediction", w.disc_out, g.disc_out, at(head_act), at(d_logits), at(d_x), T,
                      false);
      activation_backward(at(head_pre), at(d_x), T * H, act);
      linear_backward("discriminator dense", w.disc_dense, g.disc_dense, last, at(d_x), at(d_h), T, true);
      break;
    }
    case HeadKind::kMaskedLM:
    case HeadKind::kPreTraining: {
      linear("mlm transform", last, w.mlm_transform, at(head_pre), T);
      copy(at(head_act), at(head_pre), T * E);
      activation(at(head_act), T * E, to_activation(c->mlm_act));
      layernorm(at(head_act), nullptr, w.mlm_ln, at(head_ln), at(head_act), T, E);
      linear("mlm decoder", at(head_ln), w.mlm_decoder, at(logits), T);
      cross_entropy(0, at(logits), at<int32_t>(d_labels), at(d_logits), T, V, 1.f);
      float* d_ln = at(d_emb);  // [T, E] scratch (the embedding backward runs later)
      linear_backward("mlm decoder", w.mlm_decoder, g.mlm_decoder, at(head_ln), at(d_logits), d_ln, T, false);
      layernorm_backward(at(head_act), w.mlm_ln, g.mlm_ln, d_ln, d_ln, T, E);
      activation_backward(at(head_pre), d_ln, T * E, to_activation(c->mlm_act));
      linear_backward("mlm transform", w.mlm_transform, g.mlm_transform, last, d_ln, at(d_h), T, true);
      if (c->head == HeadKind::kPreTraining) {
        float* sent = at(start_logits);  // [B, 2]
        linear("sentence head", at(pooled), w.nsp, sent, B);
        float* d_sent = at(end_logits);
        cross_entropy(1, sent, at<int32_t>(d_labels2), d_sent, B, 2, 1.f);
        float* d_pooled = at(d_x);
        linear_backward("sentence head", w.nsp, g.nsp, at(pooled), d_sent, d_pooled, B, false);
        pooler_backward(d_pooled);
      }
      break;
    }
  }
  if (!failure.empty()) return failed();

  // ---- backward through the encoder ------------------------------------------------------------
  for (int64_t l = c->num_layers - 1; l >= 0; --l) {
    const int64_t wi = c->layer_weights_index(l);
    const LayerWeights& lw = w.layers[wi];
    const LayerWeights& gw = g.layers[wi];
    const LayerSaved& sv = saved_of(l);
    if (o.recompute_activations) forward_layer(l, sv);
    const float* x = at(hidden[l]);
    layernorm_backward(at(sv.s2), lw.ffn_ln, gw.ffn_ln, at(d_h), at(d_a), T, H);  // d_a = ds2
    copy(at(d_tmp), at(d_a), T * H);
    dropout(at(d_tmp), T * H, layer_site(l, 2));
    linear_backward("output", lw.ffn_out, gw.ffn_out, at(sv.f_act), at(d_tmp), at(d_ffn), T, false);
    activation_backward(at(sv.f_pre), at(d_ffn), T * I, act);
    linear_backward("intermediate", lw.ffn_in, gw.ffn_in, at(sv.a), at(d_ffn), at(d_a), T, true);
    layernorm_backward(at(sv.s1), lw.attn_ln, gw.attn_ln, at(d_a), at(d_h), T, H);  // d_h = ds1
    copy(at(d_tmp), at(d_h), T * H);
    dropout(at(d_tmp), T * H, layer_site(l, 1));
    float* d_ctx = at(d_a);
    linear_backward("attention output", lw.out, gw.out, at(sv.ctx), at(d_tmp), d_ctx, T, false);
    float *q, *k, *v, *dq, *dk, *dv;
    int64_t ld;
    qkv_views(at(sv.qkv), lw, &q, &k, &v, &ld);
    qkv_views(at(d_qkv), lw, &dq, &dk, &dv, &ld);
    if (o.fused_attention) {
      kc::AttentionGradArgs ga;
      ga.out = at(sv.ctx), ga.ld_out = H, ga.d_out = d_ctx, ga.ld_dout = H, ga.dq = dq, ga.dk = dk, ga.dv = dv;
      ga.ld_dqkv = ld, ga.lse = at(sv.lse), ga.delta_workspace = at(delta);
      check(kc::attention_train_backward(fused_args(q, k, v, ld, l), ga, stream), "fused attention backward");
    } else {
      const std::array<int64_t, 4> qs = {S * ld, dh, ld, 1}, kt = {S * ld, dh, 1, ld};
      const float* p_used = at(sv.probs);
      if (p_drop > 0) {  // regenerate the dropped probabilities
        copy(at(probs_drop), at(sv.probs), B * nh * S * S);
        dropout(at(probs_drop), B * nh * S * S, layer_site(l, 0));
        p_used = at(probs_drop);
      }
      attn_matmul(d_ctx, v, at(d_probs), S, S, dh, ctx_st, kt, probs_st);  // dP = dctx V^T
      attn_matmul(p_used, d_ctx, dv, S, dh, S, probs_t, ctx_st, qs);       // dV = P^T dctx
      dropout(at(d_probs), B * nh * S * S, layer_site(l, 0));
      check(kc::softmax_backward_f32({at(sv.probs), at(d_probs), B, nh, S, S, scale}, stream), "softmax backward");
      attn_matmul(at(d_probs), k, dq, S, dh, S, probs_st, qs, qs);  // dQ = dS K
      attn_matmul(at(d_probs), q, dk, S, dh, S, probs_t, qs, qs);   // dK = dS^T Q
    }
    if (lw.qkv) {
      linear_backward("qkv", lw.qkv, gw.qkv, x, at(d_qkv), at(d_h), T, true);
    } else {
      linear_backward("q", lw.q, gw.q, x, dq, at(d_h), T, true);
      linear_backward("k", lw.k, gw.k, x, dk, at(d_h), T, true);
      linear_backward("v", lw.v, gw.v, x, dv, at(d_h), T, true);
    }
    if (!failure.empty()) return failed();
  }

  // ---- embeddings ------------------------------------------------------------------------------
  float* d_e = c->embedding_projection ? at(d_emb) : at(d_h);
  if (c->embedding_projection)
    linear_backward("embedding projection", w.emb_project, g.emb_project, at(emb_ln), at(d_h), d_e, T, false);
  dropout(d_e, T * E, kEmbed);
  layernorm_backward(at(emb_sum), w.emb_ln, g.emb_ln, d_e, d_e, T, E);
  kernels::EmbedBackwardArgs eb;
  eb.input_ids = at<int32_t>(d_ids), eb.positions = at<int32_t>(d_pos);
  eb.token_types = c->has_token_types() ? at<int32_t>(d_types) : nullptr;
  eb.d_out = d_e, eb.d_word = mut(g.word), eb.d_position = mut(g.position), eb.d_type = mut(g.token_type);
  eb.tokens = T, eb.width = E;
  // nn.Embedding(padding_idx=pad_token_id): the lookup adds nothing to the pad row (RoBERTa's
  // position table has the same padding_idx); a tied MLM decoder's contribution stays.
  kc::EmbedPadding pad;
  pad.word = static_cast<int32_t>(c->pad_token_id);
  pad.position = c->position_ids == PositionIds::kAfterPadding ? static_cast<int32_t>(c->pad_token_id) : -1;
  check(kc::embed_backward_f32(eb, stream, reduce_ws(), pad), "embedding backward");

  // One synchronization: the loss sums and whether every gradient is finite.
  int* found = at<int>(flags);
  check(kc::memset_async(found, 0, 4, stream), "memset");
  check(kc::all_finite_f32(state.at<float>(g_region), total, found, stream), "finiteness check");
  auto* back_sums = static_cast<kernels::LossSum*>(h_back);
  int* back_found = reinterpret_cast<int*>(back_sums + 2);
  check(kc::copy_to_host_async(back_sums, sums, 2 * sizeof(kernels::LossSum), stream) &&
            kc::copy_to_host_async(back_found, found, 4, stream) && kc::stream_synchronize(stream),
        "reading the loss");
  if (!failure.empty()) return failed();
  double loss = 0;
  for (int t = 0; t < 2; ++t) {
    const int64_t count = terms[t].fixed_count ? terms[t].fixed_count : back_sums[t].count;
    if (terms[t].weight != 0 && count > 0) loss += terms[t].weight * back_sums[t].sum / double(count);
  }
  if (!std::isfinite(loss)) return invalid_argument("the loss is " + std::to_string(loss) + " (not finite)");
  // With loss scaling an overflow is expected now and then: Step skips that update.
  if (*back_found && !scaling) return first_nonfinite_gradient().with_context("loss " + std::to_string(loss));
  return loss;
}

// Names the first parameter (in name order, as the CPU trainer reports) whose gradient is not finite.
Status DeviceTrainer::Impl::first_nonfinite_gradient() const {
  std::vector<float> host;
  for (size_t i = 0; i < names.size(); ++i) {
    host.resize(sizes[i]);
    if (!kc::copy_to_host_async(host.data(), P(g_region, i), host.size() * 4, stream) ||
        !kc::stream_synchronize(stream))
      return internal_error("device cuda: reading gradients: " + kc::cuda_last_error());
    for (float v : host)
      if (!std::isfinite(v)) return invalid_argument("the gradient of '" + names[i] + "' is not finite");
  }
  return invalid_argument("a gradient is not finite");
}

Status DeviceTrainer::ZeroGrad() {
  Impl& s = *impl_;
  if (!kc::memset_async(s.state.at(s.g_region), 0, size_t(s.total) * 4, s.stream))
    return internal_error("device cuda: " + kc::cuda_last_error());
  return Status();
}

Result<double> DeviceTrainer::Step(float lr) {
  Impl& s = *impl_;
  const OptimizerOptions& opt = s.o.optimizer;  // checked with lr by the caller (Optimizer::check_step_arguments)
  s.failure.clear();
  const kc::DeviceTensorList& list = s.list.list();
  // (a) + (b): the global norm, the overflow flag and the clip factor, read back once.
  kc::GradNormOutputs out;
  out.sum_squares = s.at<double>(s.norm_sq), out.norm = s.at<float>(s.norm), out.found_inf = s.at<int>(s.flags);
  out.clip_factor = s.at<float>(s.clip), out.max_norm = opt.max_grad_norm;
  s.check(kc::memset_async(out.found_inf, 0, 4, s.stream), "memset");
  if (s.scaling)  // unscale first (a power-of-two scale: exact), so the norm and the clipping see the true gradients
    s.check(kc::unscale_and_check_multi(list, 1.f / s.scale, nullptr, out.found_inf, s.stream), "unscale");
  s.check(kc::global_grad_norm_multi(list, out, s.stream, s.reduce_ws()), "gradient norm");
  auto* back_sq = static_cast<double*>(s.h_back);
  int* back_found = reinterpret_cast<int*>(back_sq + 1);
  s.check(kc::copy_to_host_async(back_sq, out.sum_squares, 8, s.stream) &&
              kc::copy_to_host_async(back_found, out.found_inf, 4, s.stream) && kc::stream_synchronize(s.stream),
          "reading the gradient norm");
  if (!s.failure.empty()) return s.failed();
  if (*back_found && s.scaling) {  // overflow: skip the update, back off (torch.amp.GradScaler)
    s.scale *= s.o.loss_scaling.backoff;
    s.good_steps = 0;
    BERT_RETURN_IF_ERROR(ZeroGrad());
    return std::numeric_limits<double>::infinity();
  }
  if (*back_found) return s.first_nonfinite_gradient();
  const double norm = std::sqrt(*back_sq);
  // (c): the update with the clip factor applied as the gradients are read; (d) the step count.
  kc::MultiTensorStep st;
  st.lr = lr, st.beta1 = opt.beta1, st.beta2 = opt.beta2, st.eps = opt.eps, st.weight_decay = opt.weight_decay;
  st.step = s.step_count + 1;
  st.grad_factor = opt.max_grad_norm > 0 ? out.clip_factor : nullptr;
  const bool ok = opt.kind == OptimizerKind::kAdamW ? kc::adamw_step_multi(list, st, s.stream)
                                                    : kc::lamb_step_multi(list, st, s.stream, s.reduce_ws());
  s.check(ok, "optimizer step");
  BERT_RETURN_IF_ERROR(ZeroGrad());
  s.check(kc::stream_synchronize(s.stream), "optimizer step");
  if (!s.failure.empty()) return s.failed();
  ++s.step_count;
  if (s.scaling && ++s.good_steps >= s.o.loss_scaling.growth_interval) {
    const float grown = s.scale * s.o.loss_scaling.growth;
    if (std::isfinite(grown)) s.scale = grown;
    s.good_steps = 0;
  }
  return norm;
}

Status DeviceTrainer::Download(HostParams* params, HostParams* grads) const {
  const Impl& s = *impl_;
  for (size_t i = 0; i < s.names.size(); ++i) {
    for (auto [host, region] : {std::pair{params, s.p_region}, std::pair{grads, s.g_region}}) {
      if (!host) continue;
      std::vector<float>& dst = (*host)[s.names[i]];
      dst.resize(s.sizes[i]);
      if (!kc::copy_to_host_async(dst.data(), s.P(region, i), dst.size() * 4, s.stream))
        return internal_error("device cuda: downloading '" + s.names[i] + "': " + kc::cuda_last_error());
    }
  }
  if (!kc::stream_synchronize(s.stream)) return internal_error("device cuda: " + kc::cuda_last_error());
  return Status();
}

Result<std::vector<std::pair<std::string, Tensor>>> DeviceTrainer::OptimizerState() const {
  const Impl& s = *impl_;
  std::vector<std::pair<std::string, Tensor>> out;
  Tensor step = make_owned_tensor(DType::kI64, {1});
  *static_cast<int64_t*>(mutable_data(step)) = s.step_count;
  out.emplace_back("opt.step", step);
  Tensor scaling = make_owned_tensor(DType::kF32, {2});  // the loss scale and its clean-step count
  static_cast<float*>(mutable_data(scaling))[0] = s.scale;
  static_cast<float*>(mutable_data(scaling))[1] = static_cast<float>(s.good_steps);
  out.emplace_back("opt.loss_scaling", scaling);
  for (size_t i = 0; i < s.names.size(); ++i)
    for (auto [prefix, region] : {std::pair{"opt.m.", s.m_region}, std::pair{"opt.v.", s.v_region}}) {
      Tensor t = make_owned_tensor(DType::kF32, {s.sizes[i]});
      if (!kc::copy_to_host_async(mutable_data(t), s.P(region, i), size_t(s.sizes[i]) * 4, s.stream))
        return internal_error("device cuda: downloading the optimizer state: " + kc::cuda_last_error());
      out.emplace_back(prefix + s.names[i], t);
    }
  if (!kc::stream_synchronize(s.stream)) return internal_error("device cuda: " + kc::cuda_last_error());
  return out;
}

Status DeviceTrainer::Restore(const HostParams& params, const TensorMap& state) {
  Impl& s = *impl_;
  // Everything is checked before anything changes (Optimizer::load_state's contract).
  auto step = state.find("opt.step");
  if (step == state.end() || step->second.dtype != DType::kI64 || step->second.numel() != 1)
    return format_error("checkpoint has no optimizer step count 'opt.step' (I64 [1])");
  for (size_t i = 0; i < s.names.size(); ++i) {
    auto p = params.find(s.names[i]);
    if (p == params.end() || static_cast<int64_t>(p->second.size()) != s.sizes[i])
      return format_error("checkpoint parameter '" + s.names[i] + "' is missing or of another size");
    for (const char* prefix : {"opt.m.", "opt.v."}) {
      auto t = state.find(prefix + s.names[i]);
      if (t == state.end() || t->second.dtype != DType::kF32 || t->second.numel() != s.sizes[i])
        return format_error("checkpoint has no optimizer state '" + std::string(prefix) + s.names[i] + "' (F32 [" +
                            std::to_string(s.sizes[i]) + "])");
    }
  }
  for (size_t i = 0; i < s.names.size(); ++i) {
    bool ok = kc::copy_to_device_async(s.P(s.p_region, i), params.at(s.names[i]).data(), size_t(s.sizes[i]) * 4,
                                       s.stream);
    ok = ok && kc::copy_to_device_async(s.P(s.m_region, i), state.at("opt.m." + s.names[i]).data,
                                        size_t(s.sizes[i]) * 4, s.stream);
    ok = ok && kc::copy_to_device_async(s.P(s.v_region, i), state.at("opt.v." + s.names[i]).data,
                                        size_t(s.sizes[i]) * 4, s.stream);
    if (!ok) return internal_error("device cuda: restoring '" + s.names[i] + "': " + kc::cuda_last_error());
  }
  if (!kc::stream_synchronize(s.stream)) return internal_error("device cuda: " + kc::cuda_last_error());
  s.step_count = step->second.as<int64_t>()[0];
  if (auto ls = state.find("opt.loss_scaling"); ls != state.end() && ls->second.dtype == DType::kF32 &&
                                                ls->second.numel() == 2 && s.scaling) {
    s.scale = ls->second.as<float>()[0];
    s.good_steps = static_cast<int64_t>(ls->second.as<float>()[1]);
  }
  return ZeroGrad();
}

}  // namespace bert::cuda
