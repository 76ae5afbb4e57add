// The CUDA forward pass of every encoder family and head the CPU session runs (engine/src/session.cc),
// on one stream: embeddings + LayerNorm, cuBLASLt linear layers (fp32 / fp16 / int8), fused attention,
// residual LayerNorms, heads; optionally on the real tokens only (padding removal: the batch's real
// tokens are packed on the host, the encoder runs on them, attention works per sequence through
// prefix offsets, and per-token outputs are spread back to [batch, seq] with zeros at the padding).
// The device workspace, pinned host buffers and output vectors are planned once for max_batch x
// max_seq; a Run allocates nothing. NEVER RUN ON A GPU YET (none was lent).
#include <chrono>
#include <cmath>
#include <cstring>
#include <map>
#include <tuple>

#include "engine/src/cuda/device_model.h"
#include "engine/src/model_impl.h"
#include "kernels/convert.h"
#include "kernels/cpu/dispatch.h"
#include "kernels/cuda/attention.h"
#include "kernels/cuda/cuda_gemm.h"
#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/precision.h"
#include "kernels/pooling.h"

namespace bert::cuda {

namespace kc = kernels::cuda;
using kernels::Activation;

namespace {

// The encoder's quantized linear layers per layer, in the order of their activation-scale slots.
enum QuantSlot { kSlotQkv, kSlotOut, kSlotFfnIn, kSlotFfnOut, kSlotsPerLayer };

// One output's host side: the fp32 vector Output() points into, sized for the largest batch.
struct HostOutput {
  std::vector<float> data;
};

}  // namespace

struct DeviceRunner::Impl {
  const ModelConfig* config = nullptr;
  std::shared_ptr<const DeviceModel> model;
  SessionOptions options;
  Elem dtype = Elem::kF32;
  int64_t esize = 4;
  void* stream = nullptr;
  void* ev_start = nullptr;
  void* ev_end = nullptr;
  std::unique_ptr<kc::CudaGemm> gemm;
  DeviceWorkspace ws;
  // Device buffers (offsets into ws).
  size_t d_ids = 0, d_positions = 0, d_types = 0, d_mask = 0, d_starts = 0, d_first = 0;
  size_t emb = 0, hidden = 0, attn = 0, tmp = 0, qkv = 0, ctx = 0, ffn = 0, first_in = 0, pooled = 0, head1 = 0;
  size_t logits = 0, logits2 = 0, mlm_t = 0, xq = 0, scales = 0, absmax = 0;
  int hidden_slots = 2;
  int num_slots = 0;
  bool calibrated = false;
  // Pinned host staging: the int32 inputs (ids, positions, types, mask, starts, first rows) and the
  // largest output in the model's element type.
  int32_t* h_inputs = nullptr;
  size_t h_inputs_count = 0;
  void* h_out = nullptr;
  size_t h_out_bytes = 0;
  std::vector<int32_t> packed_rows;  // packed token i -> padded row b*S + s
  std::map<std::string, HostOutput> outputs;
  std::vector<std::string> hidden_names;
  std::vector<OpProfile> profile;
  double last_seconds = 0;
  std::string failure;  // the first failed launch of this run

  ~Impl() {
    for (auto& [key, g] : graphs) kc::graph_destroy(g.exec);
    kc::host_free_pinned(h_inputs);
    kc::host_free_pinned(h_out);
    kc::event_destroy(ev_start);
    kc::event_destroy(ev_end);
    gemm.reset();
    kc::stream_destroy(stream);
  }

  size_t tokens_max() const { return size_t(options.max_batch) * options.max_seq; }
  char* hidden_slot(int layer) const {
    const int slot = options.keep_hidden_states ? layer : layer % 2;
    return ws.at<char>(hidden) + size_t(slot) * tokens_max() * config->hidden_size * esize;
  }
  bool fail(const char* op) {
    if (failure.empty()) failure = std::string(op) + ": " + kc::cuda_last_error();
    return false;
  }

  // Times an op when profiling (synchronizing the stream around it).
  struct Timed {
    Impl* r;
    const char* op;
    std::chrono::steady_clock::time_point start;
    Timed(Impl* r, const char* op) : r(r), op(op) {
      if (!r->options.profile) return;
      kc::stream_synchronize(r->stream);
      start = std::chrono::steady_clock::now();
    }
    ~Timed() {
      if (!r->options.profile) return;
      kc::stream_synchronize(r->stream);
      const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      for (auto& p : r->profile)
        if (p.op == op) {
          p.seconds += dt, ++p.calls;
          return;
        }
      r->profile.push_back({op, dt, 1});
    }
  };

  // y = act(x W^T + b) over M rows (strides in elements, 0 = dense). `slot` >= 0 names the layer's
  // activation-scale slot: quantized in int8 sessions once calibrated, observed while calibrating.
  bool linear(const char* op, const void* x, int64_t ldx, const DeviceLinear& l, void* y, int64_t ldy, int64_t M,
              Activation act = Activation::kIdentity, int slot = -1, bool calibrating = false) {
    Timed timed(this, op);
    if (ldx == 0) ldx = l.K;
    if (ldy == 0) ldy = l.N;
    if (slot >= 0 && calibrating &&
        !kc::absmax_update(x, M, l.K, ldx, dtype, ws.at<float>(absmax) + slot, stream))
      return fail(op);
    if (slot >= 0 && !calibrating && model->precision == Precision::kInt8 && l.w_i8) {
      const float* scale = ws.at<float>(scales) + slot;
      int8_t* q = ws.at<int8_t>(xq);
      if (!kc::quantize_i8(x, M, l.K, ldx, dtype, scale, q, stream)) return fail(op);
      kc::Int8LinearArgs a;
      a.x = q, a.w = l.w_i8, a.x_scale = scale, a.w_scales = l.w_scales, a.bias = l.b_f32, a.y = y;
      a.M = M, a.N = l.N, a.K = l.K, a.ldy = ldy, a.act = act, a.y_dtype = dtype;
      return gemm->linear_i8(a, stream) || fail(op);
    }
    const int64_t G = l.groups, n = l.N / G, k = l.K / G;
    for (int64_t g = 0; g < G; ++g) {  // grouped layers (SqueezeBERT): one GEMM per group on strided views
      kc::DevLinearArgs a;
      a.x = static_cast<const char*>(x) + g * k * esize;
      a.w = static_cast<const char*>(l.w) + g * n * k * esize;
      a.bias = l.b ? static_cast<const char*>(l.b) + g * n * esize : nullptr;
      a.y = static_cast<char*>(y) + g * n * esize;
      a.M = M, a.N = n, a.K = k, a.ldx = ldx, a.ldy = ldy, a.act = act, a.dtype = dtype;
      if (!gemm->linear(a, stream)) return fail(op);
    }
    return true;
  }

  bool layernorm(const void* x, const void* residual, const DeviceLayerNorm& ln, void* y, int64_t rows,
                 int64_t cols) {
    Timed timed(this, "layernorm");
    kc::LayerNormDev a;
    a.x = x, a.residual = residual, a.gamma = ln.gamma, a.beta = ln.beta, a.y = y, a.rows = rows, a.cols = cols;
    a.eps = config->layer_norm_eps, a.dtype = dtype;
    return kc::layernorm(a, stream) || fail("layernorm");
  }

  // Device rows -> host fp32 [B, S, width] (spread from packed rows, zeros at padding) or [rows, width].
  bool download(const void* src, int64_t rows, int64_t width, bool per_token, int64_t B, int64_t S, float* dst,
                int64_t dst_width = 0, int64_t column = 0) {
    Timed timed(this, "copy_out");
    const size_t bytes = size_t(rows) * width * esize;
    if (!kc::copy_to_host_async(h_out, src, bytes, stream) || !kc::stream_synchronize(stream))
      return fail("copy_out");
    // Host side: convert (fp16) and place rows. dst_width/column pick one column of [rows, width]
    // into a [.., dst_width = 1] output (QA's start / end logits).
    const kernels::CpuKernels& k = kernels::cpu_kernels();
    auto row_to = [&](int64_t r, float* out) {
      if (column >= 0 && dst_width == 1) {
        const char* p = static_cast<const char*>(h_out) + (size_t(r) * width + column) * esize;
        if (dtype == Elem::kF32) std::memcpy(out, p, 4);
        else k.convert_f16_to_f32(reinterpret_cast<const uint16_t*>(p), out, 1);
        return;
      }
      const char* p = static_cast<const char*>(h_out) + size_t(r) * width * esize;
      if (dtype == Elem::kF32) std::memcpy(out, p, width * 4);
      else k.convert_f16_to_f32(reinterpret_cast<const uint16_t*>(p), out, width);
    };
    const int64_t w = dst_width ? dst_width : width;
    if (per_token && options.remove_padding) {
      std::memset(dst, 0, sizeof(float) * B * S * w);
      for (int64_t i = 0; i < rows; ++i) row_to(i, dst + size_t(packed_rows[i]) * w);
    } else {
      for (int64_t i = 0; i < rows; ++i) row_to(i, dst + size_t(i) * w);
    }
    return true;
  }

  Status forward(const BatchInput& in, const int32_t* positions, const PublishFn* publish, bool calibrating);
  void enqueue(const BatchInput& in, int64_t B, int64_t S, int64_t T, bool calibrating);
  void run_enqueued(const BatchInput& in, int64_t B, int64_t S, int64_t T, bool calibrating);

  // Captured forwards per batch shape (batch, seq, real tokens, masked?).
  using GraphKey = std::tuple<int64_t, int64_t, int64_t, bool>;
  struct CapturedGraph {
    void* exec = nullptr;
    bool failed = false;
  };
  static constexpr size_t kMaxGraphs = 32;  // shapes beyond it run eagerly (packed batches vary a lot)
  std::map<GraphKey, CapturedGraph> graphs;
};

DeviceRunner::DeviceRunner(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
DeviceRunner::~DeviceRunner() = default;
double DeviceRunner::last_run_seconds() const { return impl_->last_seconds; }
size_t DeviceRunner::workspace_bytes() const { return impl_->ws.bytes(); }
std::vector<OpProfile> DeviceRunner::profile() const { return impl_->profile; }

Result<std::unique_ptr<DeviceRunner>> DeviceRunner::Create(const ModelConfig& c, std::shared_ptr<const DeviceModel> model,
                                                           const SessionOptions& o) {
  auto impl = std::make_unique<Impl>();
  Impl& r = *impl;
  r.config = &c;
  r.model = model;
  r.options = o;
  r.dtype = model->dtype;
  r.esize = kc::elem_size(r.dtype);
  if (c.head_dim() > 128)
    return unsupported("device cuda: attention head size " + std::to_string(c.head_dim()) + " is above 128");
  if (model->precision == Precision::kInt8 && (c.hidden_size % 4 || c.intermediate_size % 4))
    return unsupported("int8 needs hidden_size and intermediate_size divisible by 4");
  r.stream = kc::stream_create();
  r.ev_start = kc::event_create();
  r.ev_end = kc::event_create();
  if (!r.stream || !r.ev_start || !r.ev_end) return internal_error("device cuda: " + kc::cuda_last_error());
  r.gemm = std::make_unique<kc::CudaGemm>(model->allow_tf32);

  const size_t B = o.max_batch, S = o.max_seq, T = B * S, es = r.esize;
  const size_t H = c.hidden_size, I = c.intermediate_size, V = c.vocab_size, E = c.embedding_size;
  const size_t L = c.num_labels;
  DeviceWorkspace& ws = r.ws;
  r.d_ids = ws.add(T * 4), r.d_positions = ws.add(T * 4), r.d_types = ws.add(T * 4), r.d_mask = ws.add(T * 4);
  r.d_starts = ws.add((B + 1) * 4), r.d_first = ws.add(B * 4);
  r.h_inputs_count = 4 * T + 2 * B + 1;
  r.hidden_slots = o.keep_hidden_states ? static_cast<int>(c.num_layers) + 1 : 2;
  if (c.embedding_projection) r.emb = ws.add(T * E * es);
  r.hidden = ws.add(r.hidden_slots * T * H * es);
  r.attn = ws.add(T * H * es), r.tmp = ws.add(T * std::max(H, E) * es), r.qkv = ws.add(T * 3 * H * es);
  r.ctx = ws.add(T * H * es), r.ffn = ws.add(T * I * es);
  r.first_in = ws.add(B * H * es), r.pooled = ws.add(B * H * es), r.head1 = ws.add(B * H * es);
  size_t out_elems = T * H;  // the largest output copied to the host
  switch (c.head) {
    case HeadKind::kNone: break;
    case HeadKind::kSequenceClassification: r.logits = ws.add(B * L * es); break;
    case HeadKind::kTokenClassification: r.logits = ws.add(T * L * es); break;
    case HeadKind::kQuestionAnswering: r.logits = ws.add(T * 2 * es); break;
    case HeadKind::kDiscriminator: r.logits = ws.add(T * es); break;
    case HeadKind::kMaskedLM:
    case HeadKind::kPreTraining:
      r.mlm_t = ws.add(T * E * es);
      r.logits = ws.add(T * V * es);
      r.logits2 = ws.add(B * 2 * es);
      out_elems = std::max(out_elems, T * V);
      break;
  }
  if (model->precision == Precision::kInt8) {
    r.num_slots = static_cast<int>(c.num_layers) * kSlotsPerLayer;
    r.xq = ws.add(T * std::max(H, I));
    r.scales = ws.add(r.num_slots * 4);
    r.absmax = ws.add(r.num_slots * 4);
  }
  size_t free_bytes = 0, total_bytes = 0;
  if (kc::device_memory(&free_bytes, &total_bytes) && ws.bytes() > free_bytes)
    return out_of_range("device cuda: a " + std::to_string(ws.bytes() >> 20) + " MiB workspace for max_batch " +
                        std::to_string(B) + " x max_seq " + std::to_string(S) + " does not fit in the GPU's " +
                        std::to_string(free_bytes >> 20) + " MiB free; lower them");
  if (!ws.allocate()) return out_of_range("device cuda: cannot allocate the workspace: " + kc::cuda_last_error());
  if (model->precision == Precision::kInt8 && !kc::memset_async(ws.at(r.absmax), 0, r.num_slots * 4, r.stream))
    return internal_error("device cuda: " + kc::cuda_last_error());
  r.h_inputs = static_cast<int32_t*>(kc::host_alloc_pinned(r.h_inputs_count * 4));
  r.h_out_bytes = out_elems * es;
  r.h_out = kc::host_alloc_pinned(r.h_out_bytes);
  if (!r.h_inputs || !r.h_out) return out_of_range("device cuda: cannot allocate pinned host buffers");
  r.packed_rows.resize(T);

  // Host outputs, sized for the largest batch.
  auto host = [&](const std::string& name, size_t n) { r.outputs[name].data.resize(n); };
  if (o.keep_hidden_states)
    for (int64_t l = 0; l <= c.num_layers; ++l) host("hidden_states." + std::to_string(l), T * H);
  for (int64_t l = 0; l <= c.num_layers; ++l) r.hidden_names.push_back("hidden_states." + std::to_string(l));
  host("last_hidden_state", T * H);
  if (c.has_pooler) host("pooler_output", B * H);
  switch (c.head) {
    case HeadKind::kNone: break;
    case HeadKind::kSequenceClassification: host("logits", B * L); break;
    case HeadKind::kTokenClassification: host("logits", T * L); break;
    case HeadKind::kQuestionAnswering: host("start_logits", T), host("end_logits", T); break;
    case HeadKind::kDiscriminator: host("logits", T); break;
    case HeadKind::kMaskedLM: host("logits", T * V); break;
    case HeadKind::kPreTraining:
      host("prediction_logits", T * V);
      host(c.sentence_head_output(), B * 2);
      break;
  }
  if (o.pooling != Pooling::kNone) host("sentence_embedding", B * H);
  return std::unique_ptr<DeviceRunner>(new DeviceRunner(std::move(impl)));
}

Status DeviceRunner::Run(const BatchInput& in, const int32_t* positions, const PublishFn& publish) {
  if (impl_->model->precision == Precision::kInt8 && !impl_->calibrated)
    return invalid_argument("an int8 session needs Calibrate() on a few representative batches before Run");
  return impl_->forward(in, positions, &publish, false);
}

Status DeviceRunner::Calibrate(const BatchInput& in, const int32_t* positions) {
  Impl& r = *impl_;
  if (r.model->precision != Precision::kInt8)
    return invalid_argument("Calibrate is for int8 sessions; this one runs " +
                            std::string(precision_name(r.model->precision)));
  BERT_RETURN_IF_ERROR(r.forward(in, positions, nullptr, true));
  // scale = absmax / 127 per slot (1 where a layer's input was all zero).
  std::vector<float> amax(r.num_slots);
  if (!kc::copy_to_host_async(amax.data(), r.ws.at(r.absmax), amax.size() * 4, r.stream) ||
      !kc::stream_synchronize(r.stream))
    return internal_error("device cuda: reading the calibration ranges: " + kc::cuda_last_error());
  for (float& a : amax) a = a > 0 && std::isfinite(a) ? a / 127.f : 1.f;
  if (!kc::copy_to_device_async(r.ws.at(r.scales), amax.data(), amax.size() * 4, r.stream) ||
      !kc::stream_synchronize(r.stream))
    return internal_error("device cuda: writing the int8 scales: " + kc::cuda_last_error());
  r.calibrated = true;
  return Status();
}

Status DeviceRunner::Impl::forward(const BatchInput& in, const int32_t* host_positions, const PublishFn* publish,
                                   bool calibrating) {
  const ModelConfig& c = *config;
  const int64_t B = in.batch, S = in.seq, H = c.hidden_size;
  const bool packed = options.remove_padding;
  failure.clear();

  // Inputs, on the host: the real tokens only when packing (every sequence must start with one, as
  // the pooler and first-token heads read it), else all B x S.
  int32_t* h_ids = h_inputs;
  int32_t* h_pos = h_ids + tokens_max();
  int32_t* h_types = h_pos + tokens_max();
  int32_t* h_mask = h_types + tokens_max();
  int32_t* h_starts = h_mask + tokens_max();
  int32_t* h_first = h_starts + options.max_batch + 1;
  int64_t T = 0;
  const bool types = c.has_token_types() && in.token_type_ids;
  for (int64_t b = 0; b < B; ++b) {
    if (packed && in.attention_mask && in.attention_mask[b * S] == 0)
      return invalid_argument("remove_padding needs every sequence to start with a real token; attention_mask[" +
                              std::to_string(b) + "][0] is 0");
    h_starts[b] = static_cast<int32_t>(T);
    h_first[b] = static_cast<int32_t>(packed ? T : b * S);
    for (int64_t s = 0; s < S; ++s) {
      const int64_t i = b * S + s;
      const bool real = !in.attention_mask || in.attention_mask[i] != 0;
      if (packed && !real) continue;
      h_ids[T] = in.input_ids[i];
      h_pos[T] = host_positions[i];
      h_types[T] = types ? in.token_type_ids[i] : 0;
      packed_rows[T] = static_cast<int32_t>(i);
      ++T;
    }
  }
  h_starts[B] = static_cast<int32_t>(T);
  for (int64_t i = 0; i < B * S; ++i) h_mask[i] = in.attention_mask ? in.attention_mask[i] : 1;

  if (!kc::event_record(ev_start, stream)) return internal_error("device cuda: " + kc::cuda_last_error());
  run_enqueued(in, B, S, T, calibrating);
  if (calibrating) {
    if (!kc::stream_synchronize(stream)) fail("calibration");
    if (!failure.empty()) return internal_error("device cuda: " + failure);
    return Status();
  }
  if (!failure.empty()) return internal_error("device cuda: " + failure);
  const int64_t L = c.num_labels, V = c.vocab_size;
  const void* last = hidden_slot(static_cast<int>(c.num_layers));

  if (options.copy_outputs) {
    auto out = [&](const std::string& name) { return outputs.at(name).data.data(); };
    auto put = [&](const std::string& name, const void* src, int64_t rows, int64_t width, bool per_token,
                   std::initializer_list<int64_t> shape, int64_t column = -1) {
      if (!failure.empty()) return;
      if (!download(src, rows, width, per_token, B, S, out(name), column >= 0 ? 1 : 0, column)) return;
      (*publish)(name, shape, out(name));
    };
    if (options.keep_hidden_states)
      for (int64_t l = 0; l <= c.num_layers; ++l)
        put(hidden_names[l], hidden_slot(static_cast<int>(l)), T, H, true, {B, S, H});
    put("last_hidden_state", last, T, H, true, {B, S, H});
    if (c.has_pooler) put("pooler_output", ws.at(pooled), B, H, false, {B, H});
    switch (c.head) {
      case HeadKind::kNone: break;
      case HeadKind::kSequenceClassification: put("logits", ws.at(logits), B, L, false, {B, L}); break;
      case HeadKind::kTokenClassification: put("logits", ws.at(logits), T, L, true, {B, S, L}); break;
      case HeadKind::kQuestionAnswering:
        put("start_logits", ws.at(logits), T, 2, true, {B, S}, 0);
        put("end_logits", ws.at(logits), T, 2, true, {B, S}, 1);
        break;
      case HeadKind::kDiscriminator: put("logits", ws.at(logits), T, 1, true, {B, S}); break;
      case HeadKind::kMaskedLM: put("logits", ws.at(logits), T, V, true, {B, S, V}); break;
      case HeadKind::kPreTraining:
        put("prediction_logits", ws.at(logits), T, V, true, {B, S, V});
        put(c.sentence_head_output(), ws.at(logits2), B, 2, false, {B, 2});
        break;
    }
    if (options.pooling != Pooling::kNone && failure.empty()) {
      Timed timed(this, "pooling");
      kernels::PoolArgs p;
      p.hidden = out("last_hidden_state"), p.mask = in.attention_mask, p.out = out("sentence_embedding");
      p.batch = B, p.seq = S, p.width = H;
      p.kind = options.pooling == Pooling::kCls    ? kernels::TokenPooling::kCls
               : options.pooling == Pooling::kMean ? kernels::TokenPooling::kMean
                                                   : kernels::TokenPooling::kMax;
      p.normalize = options.normalize;
      kernels::pool_tokens_f32_ref(p);
      (*publish)("sentence_embedding", {B, H}, out("sentence_embedding"));
    }
  }
  float ms = 0;
  if (!kc::event_record(ev_end, stream) || !kc::event_elapsed_ms(ev_start, ev_end, &ms)) fail("synchronize");
  if (!failure.empty()) return internal_error("device cuda: " + failure);
  last_seconds = ms * 1e-3;
  return Status();
}

// Everything a run puts on the stream between its start event and the output copies: the input
// uploads (from the pinned staging, already filled), embeddings, encoder, heads. Failures go to
// `failure`. Nothing here synchronizes or allocates, so it can be captured as a CUDA graph.
void DeviceRunner::Impl::enqueue(const BatchInput& in, int64_t B, int64_t S, int64_t T, bool calibrating) {
  const ModelConfig& c = *config;
  const DeviceWeights& w = model->w;
  const int64_t H = c.hidden_size, E = c.embedding_size;
  const bool packed = options.remove_padding;
  int32_t* h_ids = h_inputs;
  int32_t* h_pos = h_ids + tokens_max();
  int32_t* h_types = h_pos + tokens_max();
  int32_t* h_mask = h_types + tokens_max();
  int32_t* h_starts = h_mask + tokens_max();
  int32_t* h_first = h_starts + options.max_batch + 1;
  {
    Timed timed(this, "copy_in");
    bool ok = kc::copy_to_device_async(ws.at(d_ids), h_ids, T * 4, stream) &&
              kc::copy_to_device_async(ws.at(d_positions), h_pos, T * 4, stream) &&
              kc::copy_to_device_async(ws.at(d_types), h_types, T * 4, stream) &&
              kc::copy_to_device_async(ws.at(d_mask), h_mask, B * S * 4, stream) &&
              kc::copy_to_device_async(ws.at(d_starts), h_starts, (B + 1) * 4, stream) &&
              kc::copy_to_device_async(ws.at(d_first), h_first, B * 4, stream);
    if (!ok) fail("uploading the batch");
  }

  // Embeddings -> hidden_states.0 (through the E -> H projection when the model factorises them).
  void* embedded = c.embedding_projection ? ws.at(emb) : hidden_slot(0);
  {
    Timed timed(this, "embed");
    kc::EmbedDev e;
    e.input_ids = ws.at<int32_t>(d_ids), e.positions = w.position ? ws.at<int32_t>(d_positions) : nullptr;
    e.token_types = w.token_type ? ws.at<int32_t>(d_types) : nullptr;
    e.word_table = w.word, e.position_table = w.position, e.type_table = w.token_type;
    e.gamma = w.emb_ln.gamma, e.beta = w.emb_ln.beta, e.out = embedded, e.tokens = T, e.width = E;
    e.eps = c.layer_norm_eps, e.dtype = dtype;
    if (!kc::embed(e, stream)) fail("embed");
  }
  if (c.embedding_projection) linear("gemm.embed_project", embedded, 0, w.emb_project, hidden_slot(0), 0, T);

  const Activation act = to_activation(c.hidden_act);
  const int64_t nh = c.num_heads, dh = c.head_dim();
  char* qkv_buf = ws.at<char>(qkv);
  for (int64_t l = 0; l < c.num_layers && failure.empty(); ++l) {
    const DeviceLayer& lw = w.layers[c.layer_weights_index(l)];
    const int slot = static_cast<int>(l) * kSlotsPerLayer;
    const void* x = hidden_slot(static_cast<int>(l));
    void* y = hidden_slot(static_cast<int>(l) + 1);
    // Q | K | V side by side in [T, 3H] rows: one fused GEMM, or (grouped models) three into column blocks.
    if (lw.qkv) {
      linear("gemm.qkv", x, 0, lw.qkv, qkv_buf, 0, T, Activation::kIdentity, slot + kSlotQkv, calibrating);
    } else {
      linear("gemm.qkv", x, 0, lw.q, qkv_buf, 3 * H, T);
      linear("gemm.qkv", x, 0, lw.k, qkv_buf + H * esize, 3 * H, T);
      linear("gemm.qkv", x, 0, lw.v, qkv_buf + 2 * H * esize, 3 * H, T);
    }
    {
      Timed timed(this, "attention");
      kc::AttentionArgs a;
      a.q = qkv_buf, a.k = qkv_buf + H * esize, a.v = qkv_buf + 2 * H * esize, a.out = ws.at(ctx);
      a.ld_qkv = 3 * H, a.ld_out = H;
      a.seq_starts = packed ? ws.at<int32_t>(d_starts) : nullptr;
      a.key_mask = packed || !in.attention_mask ? nullptr : ws.at<int32_t>(d_mask);
      a.batch = B, a.seq = S, a.heads = nh, a.head_dim = dh;
      a.scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(dh)));
      a.dtype = dtype;
      if (!kc::attention(a, stream)) fail("attention");
    }
    linear("gemm.attn_out", ws.at(ctx), 0, lw.out, ws.at(tmp), 0, T, Activation::kIdentity, slot + kSlotOut,
           calibrating);
    layernorm(ws.at(tmp), x, lw.attn_ln, ws.at(attn), T, H);
    linear("gemm.ffn_in", ws.at(attn), 0, lw.ffn_in, ws.at(ffn), 0, T, act, slot + kSlotFfnIn, calibrating);
    linear("gemm.ffn_out", ws.at(ffn), 0, lw.ffn_out, ws.at(tmp), 0, T, Activation::kIdentity, slot + kSlotFfnOut,
           calibrating);
    layernorm(ws.at(tmp), ws.at(attn), lw.ffn_ln, y, T, H);
  }
  const void* last = hidden_slot(static_cast<int>(c.num_layers));
  if (calibrating) return;

  // Heads. First-token rows (pooler, first-token classifiers) are gathered into [B, H] first.
  void* first_rows = ws.at(first_in);
  if (c.has_pooler || (c.head == HeadKind::kSequenceClassification && !c.classifier_on_pooler)) {
    Timed timed(this, "head");
    if (!kc::gather_rows(last, H, first_rows, H, ws.at<int32_t>(d_first), B, H, dtype, stream)) fail("gather");
  }
  if (c.has_pooler) linear("pooler", first_rows, 0, w.pooler, ws.at(pooled), 0, B, Activation::kTanh);
  switch (c.head) {
    case HeadKind::kNone: break;
    case HeadKind::kSequenceClassification:
      if (c.classifier_on_pooler) {
        linear("head", ws.at(pooled), 0, w.classifier, ws.at(logits), 0, B);
      } else {
        linear("head", first_rows, 0, w.pre_classifier, ws.at(head1), 0, B, to_activation(c.classifier_act));
        linear("head", ws.at(head1), 0, w.classifier, ws.at(logits), 0, B);
      }
      break;
    case HeadKind::kTokenClassification: linear("head", last, 0, w.classifier, ws.at(logits), 0, T); break;
    case HeadKind::kQuestionAnswering: linear("head", last, 0, w.qa, ws.at(logits), 0, T); break;
    case HeadKind::kDiscriminator:
      linear("head", last, 0, w.disc_dense, ws.at(tmp), 0, T, act);
      linear("head", ws.at(tmp), 0, w.disc_out, ws.at(logits), 0, T);
      break;
    case HeadKind::kMaskedLM:
    case HeadKind::kPreTraining:
      linear("head", last, 0, w.mlm_transform, ws.at(mlm_t), 0, T, to_activation(c.mlm_act));
      layernorm(ws.at(mlm_t), nullptr, w.mlm_ln, ws.at(mlm_t), T, E);
      linear("head.mlm_decoder", ws.at(mlm_t), 0, w.mlm_decoder, ws.at(logits), 0, T);
      if (c.head == HeadKind::kPreTraining) linear("head", ws.at(pooled), 0, w.nsp, ws.at(logits2), 0, B);
      break;
  }
}

// enqueue() eagerly, or as a CUDA graph: a batch shape's first run is eager (it makes the GEMM plans
// and sets kernel attributes, which capture does not allow), its second is captured and replayed,
// later ones replay. A capture that fails marks the shape eager for good. Graphs are off while
// profiling, calibrating or with BERT_CUDA_SYNC=1 (which synchronizes after every launch).
void DeviceRunner::Impl::run_enqueued(const BatchInput& in, int64_t B, int64_t S, int64_t T, bool calibrating) {
  if (!options.cuda_graphs || options.profile || calibrating || kc::launches_synchronize()) {
    enqueue(in, B, S, T, calibrating);
    return;
  }
  const GraphKey key{B, S, T, in.attention_mask != nullptr};
  auto it = graphs.find(key);
  if (it == graphs.end()) {
    if (graphs.size() < kMaxGraphs) graphs.emplace(key, CapturedGraph{});
    enqueue(in, B, S, T, false);
    return;
  }
  CapturedGraph& g = it->second;
  if (!g.exec && !g.failed) {
    if (kc::graph_capture_begin(stream)) {
      enqueue(in, B, S, T, false);
      g.exec = kc::graph_capture_end(stream);
      if (!failure.empty()) {  // a launch failed while capturing: do not trust the graph
        kc::graph_destroy(g.exec);
        g.exec = nullptr;
      }
    }
    if (!g.exec) {  // capture unsupported or failed: this shape runs eagerly from now on
      g.failed = true;
      failure.clear();
      enqueue(in, B, S, T, false);
      return;
    }
  }
  if (g.failed) {
    enqueue(in, B, S, T, false);
  } else if (!kc::graph_launch(g.exec, stream)) {
    fail("graph launch");
  }
}

}  // namespace bert::cuda
