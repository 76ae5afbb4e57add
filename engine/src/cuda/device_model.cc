// Uploads a loaded model's weights to the GPU once: every tensor converted on the host to the model's
// element type (int8 encoder weights quantized per output channel), laid out in one device arena and
// copied through a pinned staging buffer. Tensors the host shares (a tied MLM decoder) are uploaded
// once. NEVER RUN ON A GPU YET (none was lent).
#include <algorithm>
#include <cstring>
#include <map>

#include "engine/src/cuda/device_model.h"
#include "engine/src/model_impl.h"
#include "kernels/convert.h"
#include "kernels/cuda/cuda_kernels.h"
#include "kernels/quantize.h"

namespace bert::cuda {

namespace kc = kernels::cuda;

DeviceModel::~DeviceModel() { kc::device_free(arena); }

DeviceWorkspace::~DeviceWorkspace() { kc::device_free(base_); }
bool DeviceWorkspace::allocate() {
  base_ = static_cast<char*>(kc::device_alloc(size_ ? size_ : 256));
  return base_ != nullptr;
}

namespace {

constexpr size_t kAlign = 256;
constexpr size_t kStagingBytes = size_t(64) << 20;

// How a host fp32 tensor is stored on the device.
enum class Stored { kModel, kF32, kI8Weights, kI8Scales };

struct Entry {
  const float* src;
  int64_t count;  // host floats (for int8 weights: N * K)
  int64_t rows;   // int8 weights: N
  Stored kind;
  size_t offset = 0, bytes = 0;
};

// Lays tensors out in the arena (first pass), then produces their bytes in order (second pass).
class ArenaPlan {
 public:
  explicit ArenaPlan(Elem dtype) : dtype_(dtype) {}

  // Returns the slot whose device address patch() later resolves (null source: null pointer).
  size_t add(const float* src, int64_t count, Stored kind, int64_t rows = 0) {
    if (!src) return kNull;
    auto key = std::make_pair(src, static_cast<int>(kind));
    if (auto it = seen_.find(key); it != seen_.end()) return it->second;
    Entry e{src, count, rows, kind};
    e.bytes = kind == Stored::kModel ? count * kc::elem_size(dtype_)
              : kind == Stored::kI8Weights ? size_t(count)
              : kind == Stored::kI8Scales  ? size_t(rows) * sizeof(float)
                                           : count * sizeof(float);
    e.offset = total_;
    total_ += (e.bytes + kAlign - 1) / kAlign * kAlign;
    entries_.push_back(e);
    seen_.emplace(key, entries_.size() - 1);
    return entries_.size() - 1;
  }
  const void* address(void* arena, size_t slot) const {
    return slot == kNull ? nullptr : static_cast<char*>(arena) + entries_[slot].offset;
  }
  size_t total() const { return total_; }

  // Converts every entry into `out` (the arena image, written in order through `sink`).
  Status upload(void* arena) const {
    void* staging = kc::host_alloc_pinned(kStagingBytes);
    if (!staging) return internal_error("cannot allocate pinned staging memory: " + kc::cuda_last_error());
    std::vector<char> image;
    size_t used = 0, chunk_start = 0;
    Status st;
    auto flush = [&]() {
      if (used && !kc::copy_to_device(static_cast<char*>(arena) + chunk_start, staging, used) && st.ok())
        st = internal_error("uploading the weights failed: " + kc::cuda_last_error());
      chunk_start += used;
      used = 0;
    };
    for (const Entry& e : entries_) {
      image.assign(e.bytes, 0);
      convert(e, image.data());
      // Pad to the entry's aligned size so the arena image stays contiguous.
      const size_t padded = (e.bytes + kAlign - 1) / kAlign * kAlign;
      image.resize(padded, 0);
      for (size_t done = 0; done < padded;) {
        if (used == kStagingBytes) flush();
        const size_t n = std::min(padded - done, kStagingBytes - used);
        std::memcpy(static_cast<char*>(staging) + used, image.data() + done, n);
        used += n, done += n;
      }
    }
    flush();
    kc::host_free_pinned(staging);
    return st;
  }

  static constexpr size_t kNull = ~size_t(0);

 private:
  void convert(const Entry& e, char* out) const {
    switch (e.kind) {
      case Stored::kModel:
        if (dtype_ == Elem::kF32) std::memcpy(out, e.src, e.bytes);
        else kernels::convert_f32_to_f16_ref(e.src, reinterpret_cast<uint16_t*>(out), e.count);
        break;
      case Stored::kF32: std::memcpy(out, e.src, e.bytes); break;
      case Stored::kI8Weights:
      case Stored::kI8Scales: {
        const int64_t N = e.rows, K = e.count / e.rows;
        std::vector<int8_t> q(N * K);
        std::vector<float> scales(N);
        kernels::quantize_weights_per_channel_i8(e.src, N, K, q.data(), scales.data());
        if (e.kind == Stored::kI8Weights) std::memcpy(out, q.data(), q.size());
        else std::memcpy(out, scales.data(), scales.size() * sizeof(float));
        break;
      }
    }
  }

  Elem dtype_;
  size_t total_ = 0;
  std::vector<Entry> entries_;
  std::map<std::pair<const float*, int>, size_t> seen_;
};

// The slots of one linear layer until the arena exists.
struct LinearSlots {
  size_t w = ArenaPlan::kNull, b = ArenaPlan::kNull, w_i8 = ArenaPlan::kNull, scales = ArenaPlan::kNull,
         b_f32 = ArenaPlan::kNull;
  const Linear* host = nullptr;
};

}  // namespace

Result<std::shared_ptr<const DeviceModel>> upload_model(const ModelConfig& c, const BertWeights& w,
                                                        const LoadOptions& options) {
  if (kc::device_count() == 0)
    return unsupported("device cuda: no CUDA GPU is visible (cudaGetDeviceCount found none); use device cpu");
  auto model = std::make_shared<DeviceModel>();
  model->precision = options.precision;
  model->dtype = options.precision == Precision::kF32 ? Elem::kF32 : Elem::kF16;
  model->allow_tf32 = options.allow_tf32;
  model->device_name = kc::device_name();
  ArenaPlan plan(model->dtype);

  std::vector<LinearSlots> linears;  // in the order the DeviceLinear targets are listed below
  std::vector<DeviceLinear*> targets;
  auto linear = [&](const Linear& l, DeviceLinear& d, bool quantize) {
    d.N = l.N, d.K = l.K, d.groups = l.groups;
    LinearSlots s;
    s.host = &l;
    if (l) {
      s.w = plan.add(l.w, l.N * (l.K / l.groups), Stored::kModel);
      s.b = plan.add(l.b, l.N, Stored::kModel);
      if (quantize && options.precision == Precision::kInt8 && l.groups == 1) {
        s.w_i8 = plan.add(l.w, l.N * l.K, Stored::kI8Weights, l.N);
        s.scales = plan.add(l.w, l.N * l.K, Stored::kI8Scales, l.N);
        s.b_f32 = plan.add(l.b, l.N, Stored::kF32);
      }
    }
    linears.push_back(s);
    targets.push_back(&d);
  };
  struct LnSlots {
    size_t gamma, beta;
    DeviceLayerNorm* target;
  };
  std::vector<LnSlots> norms;
  auto layernorm = [&](const LayerNormWeights& l, DeviceLayerNorm& d, int64_t width) {
    norms.push_back({plan.add(l.gamma, width, Stored::kModel), plan.add(l.beta, width, Stored::kModel), &d});
  };

  const int64_t E = c.embedding_size, H = c.hidden_size;
  DeviceWeights& dw = model->w;
  const size_t word = plan.add(w.word, c.vocab_size * E, Stored::kModel);
  const size_t position = plan.add(w.position, c.max_position_embeddings * E, Stored::kModel);
  const size_t token_type = plan.add(w.token_type, c.type_vocab_size * E, Stored::kModel);
  layernorm(w.emb_ln, dw.emb_ln, E);
  linear(w.emb_project, dw.emb_project, false);
  dw.layers.resize(w.layers.size());
  for (size_t i = 0; i < w.layers.size(); ++i) {
    const LayerWeights& l = w.layers[i];
    DeviceLayer& d = dw.layers[i];
    for (auto [h, t] : {std::pair{&l.qkv, &d.qkv}, {&l.q, &d.q}, {&l.k, &d.k}, {&l.v, &d.v}, {&l.out, &d.out},
                        {&l.ffn_in, &d.ffn_in}, {&l.ffn_out, &d.ffn_out}})
      linear(*h, *t, true);
    layernorm(l.attn_ln, d.attn_ln, H);
    layernorm(l.ffn_ln, d.ffn_ln, H);
  }
  for (auto [h, t] : {std::pair{&w.pooler, &dw.pooler}, {&w.pre_classifier, &dw.pre_classifier},
                      {&w.classifier, &dw.classifier}, {&w.qa, &dw.qa}, {&w.mlm_transform, &dw.mlm_transform},
                      {&w.mlm_decoder, &dw.mlm_decoder}, {&w.nsp, &dw.nsp}, {&w.disc_dense, &dw.disc_dense},
                      {&w.disc_out, &dw.disc_out}})
    linear(*h, *t, false);
  layernorm(w.mlm_ln, dw.mlm_ln, E);

  size_t free_bytes = 0, total_bytes = 0;
  if (kc::device_memory(&free_bytes, &total_bytes) && plan.total() > free_bytes)
    return out_of_range("the model's " + std::to_string(plan.total() >> 20) + " MiB of " +
                        precision_name(options.precision) + " weights do not fit in the GPU's " +
                        std::to_string(free_bytes >> 20) + " MiB of free memory");
  model->arena = kc::device_alloc(plan.total());
  if (!model->arena) return out_of_range("cannot allocate the GPU weight arena: " + kc::cuda_last_error());
  model->arena_bytes = plan.total();
  BERT_RETURN_IF_ERROR(plan.upload(model->arena));

  void* arena = model->arena;
  dw.word = plan.address(arena, word);
  dw.position = plan.address(arena, position);
  dw.token_type = plan.address(arena, token_type);
  for (size_t i = 0; i < linears.size(); ++i) {
    DeviceLinear& d = *targets[i];
    const LinearSlots& s = linears[i];
    d.w = plan.address(arena, s.w);
    d.b = plan.address(arena, s.b);
    d.w_i8 = static_cast<const int8_t*>(plan.address(arena, s.w_i8));
    d.w_scales = static_cast<const float*>(plan.address(arena, s.scales));
    d.b_f32 = static_cast<const float*>(plan.address(arena, s.b_f32));
  }
  for (const LnSlots& n : norms) {
    n.target->gamma = plan.address(arena, n.gamma);
    n.target->beta = plan.address(arena, n.beta);
  }
  return std::shared_ptr<const DeviceModel>(std::move(model));
}

}  // namespace bert::cuda
