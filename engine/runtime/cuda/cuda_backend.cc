// The CUDA backend: device memory, one stream per backend, cuBLASLt GEMMs (kernels/cuda/cuda_gemm.h)
// computing as the backend's GemmCompute says, and for every registry op of runtime::Backend the kCuda
// entry of the op registry (kernels/registry.h), resolved once in init() (an op without one is the
// error make_cuda_backend returns) and called through the kept pointers. GEMMs, memory, copies, the
// element-wise helpers and the fused training attention are not registry ops: direct calls into
// kernels/cuda. Nothing here knows the network: engine/model drives these calls. Losses write
// their {sum, count} to device memory and take the mean on the device (no host synchronisation until
// the caller downloads them). Built only in CUDA builds; docs/CUDA.md says what has run.
#include "engine/runtime/cuda/cuda_backend.h"

#include <vector>

#include "kernels/cuda/attention.h"
#include "kernels/cuda/attention_train.h"
#include "kernels/cuda/cuda_gemm.h"
#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/precision.h"
#include "kernels/cuda/train_kernels.h"
#include "kernels/registry.h"

namespace bert::runtime {

namespace kc = kernels::cuda;

namespace {

class CudaBackend final : public Backend {
 public:
  explicit CudaBackend(GemmCompute compute) : gemm_(compute) {}
  ~CudaBackend() override {
    if (flag_) kc::device_free(flag_);
    kc::stream_destroy(stream_);
  }
  Status init() {
    auto resolved = kernels::resolve_cuda_kernels(DType::kF32);
    if (!resolved.ok()) {
      return Status(resolved.status().code(), "device cuda: the op registry: " + resolved.status().message());
    }
    k_ = *resolved;
    stream_ = kc::stream_create();
    flag_ = static_cast<int*>(kc::device_alloc(256));
    if (!stream_ || !flag_) return failed("creating a stream");
    name_ = "cuda: " + kc::device_name();
    return Status::Ok();
  }
  void* stream() const { return stream_; }
  void* queue() const override { return stream_; }

  Device device() const override { return Device::kCuda; }
  std::string name() const override { return name_; }

  void* allocate(size_t bytes) override { return kc::device_alloc(bytes ? bytes : 1); }
  void release(void* p) override { kc::device_free(p); }
  Status upload(void* dst, const void* src, size_t bytes) override {
    return ok(!bytes || kc::copy_to_device_async(dst, src, bytes, stream_), "copying to the device");
  }
  Status download(void* dst, const void* src, size_t bytes) override {
    return ok((!bytes || kc::copy_to_host_async(dst, src, bytes, stream_)) && kc::stream_synchronize(stream_),
              "copying to the host");
  }
  Status zero(void* p, size_t bytes) override { return ok(!bytes || kc::memset_async(p, 0, bytes, stream_), "memset"); }
  Status synchronize() override { return ok(kc::stream_synchronize(stream_), "synchronizing"); }
  Status copy_rows(const float* src, int64_t src_ld, float* dst, int64_t dst_ld, int64_t rows, int64_t cols) override {
    if (rows <= 0 || cols <= 0) return Status::Ok();
    if (src_ld == cols && dst_ld == cols)  // one plain copy: 2-D copies refuse pitches past ~2^31 bytes
      return ok(kc::copy_async(dst, src, sizeof(float) * rows * cols, stream_), "device copy");
    return ok(kc::copy_2d_async(dst, sizeof(float) * dst_ld, src, sizeof(float) * src_ld, sizeof(float) * cols, rows,
                                stream_),
              "strided device copy");
  }
  Status add_rows(const float* src, int64_t src_ld, float* dst, int64_t dst_ld, int64_t rows, int64_t cols) override {
    return ok(kc::add_rows_f32(src, src_ld, dst, dst_ld, rows, cols, stream_), "add_rows");
  }
  Status add(const float* a, const float* b, float* out, int64_t n) override {
    return ok(kc::add_f32(a, b, out, n, stream_), "add");
  }

  Status scatter_rows(const float* src, int64_t src_ld, float* dst, int64_t dst_ld, const int32_t* index,
                      int64_t rows, int64_t cols) override {
    return ok(kc::scatter_rows(src, src_ld, dst, dst_ld, index, rows, cols, DType::kF32, stream_), "scatter rows");
  }

  Status linear(const kernels::LinearArgs& a) override {
    if (a.groups == 1) return ok(gemm_.linear(a, stream_), "linear layer");
    // Grouped (SqueezeBERT): one strided batched matmul over the groups, then bias + activation.
    const int64_t G = a.groups, Ng = a.N / G, Kg = a.K / G;
    const int64_t ldx = a.ldx ? a.ldx : a.K, ldy = a.ldy ? a.ldy : a.N;
    kernels::BatchedMatmulArgs m;
    m.a = a.x, m.b = a.w, m.c = a.y, m.batch0 = 1, m.batch1 = G, m.M = a.M, m.N = Ng, m.K = Kg;
    const int64_t as[4] = {0, Kg, ldx, 1}, bs[4] = {0, Ng * Kg, 1, Kg}, cs[4] = {0, Ng, ldy, 1};
    std::copy(as, as + 4, m.a_strides), std::copy(bs, bs + 4, m.b_strides), std::copy(cs, cs + 4, m.c_strides);
    if (!gemm_.batched_matmul(m, stream_)) return failed("grouped linear layer");
    if (!a.bias && a.act == kernels::Activation::kIdentity) return Status::Ok();
    return ok(kc::bias_activation(a.y, a.bias, a.M, a.N, ldy, a.act, DType::kF32, stream_), "bias + activation");
  }
  Status batched_matmul(const kernels::BatchedMatmulArgs& a) override {
    return ok(gemm_.batched_matmul(a, stream_), "batched matmul");
  }
  Status layernorm(const kernels::LayerNormArgs& a) override { return ok(k_.layernorm(a, stream_), "layernorm"); }
  Status softmax_masked(const kernels::SoftmaxMaskedArgs& a) override {
    return ok(k_.softmax_masked(a, stream_), "softmax");
  }
  Status activation(const kernels::ActivationArgs& a) override {
    return ok(k_.activation(a, stream_), "activation");
  }
  Status embed(const kernels::EmbedArgs& a) override { return ok(k_.embed(a, stream_), "embedding"); }
  // No pooling kernel on the device: the token states come to the host, pool there, and go back.
  Status pool(const kernels::PoolArgs& a) override {
    const size_t states = size_t(a.batch) * a.seq * a.width, tokens = size_t(a.batch) * a.seq;
    host_states_.resize(states), host_mask_.resize(tokens), host_out_.resize(size_t(a.batch) * a.width);
    BERT_RETURN_IF_ERROR(download(host_states_.data(), a.hidden, sizeof(float) * states));
    if (a.mask) BERT_RETURN_IF_ERROR(download(host_mask_.data(), a.mask, sizeof(int32_t) * tokens));
    kernels::PoolArgs h = a;
    h.hidden = host_states_.data(), h.mask = a.mask ? host_mask_.data() : nullptr, h.out = host_out_.data();
    kernels::pool_tokens_f32_ref(h);
    return upload(a.out, host_out_.data(), sizeof(float) * host_out_.size());
  }
  bool has_fused_attention(bool training, int64_t head_dim) const override { return head_dim >= 1 && head_dim <= 128; }
  Status attention(const AttentionArgs& a) override {
    if (a.lse) {
      return ok(kc::attention_train_forward(train_args(a), a.op.out, ld_out(a.op), a.lse, stream_),
                "fused training attention");
    }
    return ok(k_.attention(a.op, stream_), "fused attention");
  }
  Status attention_backward(const AttentionGradArgs& a) override {
    kc::AttentionGradArgs g;
    g.out = a.fwd.op.out, g.ld_out = ld_out(a.fwd.op), g.d_out = a.d_out, g.ld_dout = ld_out(a.fwd.op);
    g.dq = a.dq, g.dk = a.dk, g.dv = a.dv, g.ld_dqkv = ld_qkv(a.fwd.op), g.lse = a.fwd.lse;
    g.delta_workspace = a.scratch;
    return ok(kc::attention_train_backward(train_args(a.fwd), g, stream_), "fused attention backward");
  }

  Status layernorm_backward(const kernels::LayerNormBackwardArgs& a) override {
    return ok(k_.layernorm_backward(a, stream_), "layernorm backward");
  }
  Status softmax_backward(const kernels::SoftmaxBackwardArgs& a) override {
    return ok(k_.softmax_backward(a, stream_), "softmax backward");
  }
  Status activation_backward(const kernels::ActivationBackwardArgs& a) override {
    return ok(k_.activation_backward(a, stream_), "activation backward");
  }
  Status embed_backward(const kernels::EmbedBackwardArgs& a, EmbedPadding padding) override {
    kc::EmbedPadding p;
    p.word = padding.word, p.position = padding.position;
    return ok(k_.embed_backward(a, stream_, p), "embedding backward");
  }
  Status column_sum(const kernels::ColumnSumArgs& a) override {
    return ok(k_.column_sum(a, stream_), "bias gradient");
  }
  Status dropout(const kernels::DropoutArgs& a) override { return ok(k_.dropout(a, stream_), "dropout"); }
  Status cross_entropy(const kernels::CrossEntropyArgs& a, kernels::LossSum* result) override {
    return ok(k_.cross_entropy(a, stream_, mean_into(result)), "cross-entropy");
  }
  Status bce_with_logits(const kernels::BceWithLogitsArgs& a, kernels::LossSum* result) override {
    return ok(k_.bce_with_logits(a, stream_, mean_into(result)), "binary cross-entropy");
  }
  Status mse(const kernels::MseArgs& a, kernels::LossSum* result) override {
    return ok(k_.mse(a, stream_, mean_into(result)), "mean squared error");
  }
  Status all_finite(const float* x, int64_t n, bool* finite) override {
    int found = 0;
    BERT_RETURN_IF_ERROR(zero(flag_, sizeof(int)));
    if (!kc::all_finite_f32(x, n, flag_, stream_)) return failed("finiteness check");
    BERT_RETURN_IF_ERROR(download(&found, flag_, sizeof(int)));
    *finite = found == 0;
    return Status::Ok();
  }

 private:
  static kc::LossOptions mean_into(kernels::LossSum* result) {
    kc::LossOptions o;
    o.result = result;
    o.mean = true;  // the gradient is divided by the count on the device
    return o;
  }
  // Row strides of kernels/attention.h (0 = heads * head_dim), as the training kernels take them.
  static int64_t ld_qkv(const kernels::AttentionArgs& a) { return a.ld ? a.ld : a.heads * a.head_dim; }
  static int64_t ld_out(const kernels::AttentionArgs& a) { return a.ldo ? a.ldo : a.heads * a.head_dim; }
  static kc::AttentionTrainArgs train_args(const AttentionArgs& a) {
    const kernels::AttentionArgs& o = a.op;
    kc::AttentionTrainArgs t;
    t.q = o.q, t.k = o.k, t.v = o.v, t.ld_qkv = ld_qkv(o), t.key_mask = o.key_mask;
    t.batch = o.batch, t.seq = o.seq, t.heads = o.heads, t.head_dim = o.head_dim, t.scale = o.scale;
    t.dropout_p = a.dropout, t.dropout_seed = a.seed, t.dropout_offset = a.offset;
    return t;
  }
  Status failed(const char* what) const {
    return internal_error(std::string("device cuda: ") + what + ": " + kc::cuda_last_error());
  }
  Status ok(bool success, const char* what) const { return success ? Status::Ok() : failed(what); }

  kc::CudaGemm gemm_;
  kernels::CudaKernels k_;  // the registry's kCuda f32 entries, resolved once in init()
  void* stream_ = nullptr;
  int* flag_ = nullptr;  // all_finite's device flag
  std::string name_;
  std::vector<float> host_states_, host_out_;  // pool() staging, grown once to the largest batch
  std::vector<int32_t> host_mask_;
};

}  // namespace

void* cuda_stream(Backend& backend) { return static_cast<CudaBackend&>(backend).stream(); }

}  // namespace bert::runtime

namespace bert::cuda_plugin {

using runtime::Backend;
using runtime::CudaBackend;

Result<std::unique_ptr<Backend>> make_cuda_backend(runtime::GemmCompute compute) {
  std::string why;
  if (!cuda_available(&why)) return unsupported("device cuda: " + why + "; use device cpu");
  auto backend = std::make_unique<CudaBackend>(compute);
  BERT_RETURN_IF_ERROR(backend->init());
  return std::unique_ptr<Backend>(std::move(backend));
}

bool cuda_available(std::string* why) {
  if (kernels::cuda::device_count() > 0) return true;
  if (why) *why = "no CUDA GPU is visible (cudaGetDeviceCount found none)";
  return false;
}

}  // namespace bert::cuda_plugin
