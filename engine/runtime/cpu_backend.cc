// The CPU backend: host memory, oneDNN GEMMs planned once per shape (kernels/gemm.h), and the
// hand-written kernels of the best ISA this CPU has (kernels/cpu/dispatch.h). Every op runs on the
// calling thread's OpenMP team and is deterministic for any thread count.
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "engine/runtime/backend.h"
#include "kernels/attention.h"
#include "kernels/cpu/dispatch.h"
#include "kernels/registry.h"

namespace bert::runtime {

namespace {

Status planning_failed(const char* what, int64_t M, int64_t N, int64_t K) {
  return internal_error(std::string("oneDNN could not plan the ") + what + " " + std::to_string(M) + "x" +
                        std::to_string(N) + "x" + std::to_string(K));
}

// Counted rows of a cross-entropy (targets != ignore_index).
int64_t counted(const int32_t* targets, int64_t rows, int32_t ignore) {
  int64_t n = 0;
  for (int64_t i = 0; i < rows; ++i) n += targets[i] != ignore;
  return n;
}

class CpuBackend final : public Backend {
 public:
  CpuBackend() : k_(kernels::cpu_kernels()) {
    // Resolved once: the best registered CPU attention kernel this CPU runs (null: none registered).
    auto fn = kernels::resolve<kernels::AttentionArgs>(kernels::Device::kCpu, DType::kF32, k_.isa);
    if (fn.ok()) attention_ = *fn;
  }

  Device device() const override { return Device::kCpu; }
  std::string name() const override { return std::string("cpu (") + kernels::cpu_isa_name(k_.isa) + ")"; }

  void* allocate(size_t bytes) override {
    return std::aligned_alloc(256, (bytes + 255) / 256 * 256 + 256);  // (never 0 bytes)
  }
  void release(void* p) override { std::free(p); }
  Status upload(void* dst, const void* src, size_t bytes) override {
    if (bytes) std::memcpy(dst, src, bytes);
    return Status::Ok();
  }
  Status download(void* dst, const void* src, size_t bytes) override { return upload(dst, src, bytes); }
  Status zero(void* p, size_t bytes) override {
    if (bytes) std::memset(p, 0, bytes);
    return Status::Ok();
  }
  Status synchronize() override { return Status::Ok(); }
  Status copy_rows(const float* src, int64_t src_ld, float* dst, int64_t dst_ld, int64_t rows, int64_t cols) override {
    for (int64_t r = 0; r < rows; ++r) std::memcpy(dst + r * dst_ld, src + r * src_ld, sizeof(float) * cols);
    return Status::Ok();
  }
  Status add_rows(const float* src, int64_t src_ld, float* dst, int64_t dst_ld, int64_t rows, int64_t cols) override {
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c) dst[r * dst_ld + c] += src[r * src_ld + c];
    return Status::Ok();
  }
  Status add(const float* a, const float* b, float* out, int64_t n) override {
#pragma omp parallel for schedule(static) if (n > (1 << 15))
    for (int64_t i = 0; i < n; ++i) out[i] = a[i] + b[i];
    return Status::Ok();
  }

  Status linear(const kernels::LinearArgs& a) override {
    return gemm_.linear(a) ? Status::Ok() : planning_failed("linear layer", a.M, a.N, a.K);
  }
  Status batched_matmul(const kernels::BatchedMatmulArgs& a) override {
    return gemm_.batched_matmul(a) ? Status::Ok() : planning_failed("batched matmul", a.M, a.N, a.K);
  }
  Status layernorm(const kernels::LayerNormArgs& a) override {
    k_.layernorm(a);
    return Status::Ok();
  }
  Status softmax_masked(const kernels::SoftmaxMaskedArgs& a) override {
    k_.softmax_masked(a);
    return Status::Ok();
  }
  Status activation(const kernels::ActivationArgs& a) override {
    if (a.kind != kernels::Activation::kIdentity) k_.activation(a);
    return Status::Ok();
  }
  Status embed(const kernels::EmbedArgs& a) override {
    k_.embed(a);
    return Status::Ok();
  }
  Status pool(const kernels::PoolArgs& a) override {
    kernels::pool_tokens_f32_ref(a);
    return Status::Ok();
  }
  // Inference only: the CPU has no fused kernel that keeps the log-sum-exp for a backward.
  bool has_fused_attention(bool training, int64_t head_dim) const override {
    return !training && attention_ && head_dim <= kernels::kAttentionMaxHeadDim;
  }
  Status attention(const AttentionArgs& a) override {
    if (!has_fused_attention(a.lse != nullptr, a.head_dim))
      return unsupported(std::string("fused attention") + (a.lse ? " for training" : "") + " has no CPU kernel registered");
    kernels::AttentionArgs k;
    k.q = a.q, k.k = a.k, k.v = a.v, k.key_mask = a.key_mask, k.out = a.out;
    k.batch = a.batch, k.seq = a.seq, k.heads = a.heads, k.head_dim = a.head_dim, k.ld = a.ld, k.ldo = a.ldo;
    k.scale = a.scale;
    BERT_RETURN_IF_ERROR(kernels::check(k));
    attention_(k);
    return Status::Ok();
  }
  Status attention_backward(const AttentionGradArgs&) override {
    return unsupported("fused attention backward has no CPU kernel registered");
  }

  Status layernorm_backward(const kernels::LayerNormBackwardArgs& a) override {
    kernels::layernorm_backward_f32(a);
    return Status::Ok();
  }
  Status softmax_backward(const kernels::SoftmaxBackwardArgs& a) override {
    kernels::softmax_backward_f32(a);
    return Status::Ok();
  }
  Status activation_backward(const kernels::ActivationBackwardArgs& a) override {
    if (a.kind != kernels::Activation::kIdentity) kernels::activation_backward_f32(a);
    return Status::Ok();
  }
  Status embed_backward(const kernels::EmbedBackwardArgs& a, EmbedPadding padding) override {
    // The kernel scatters every token; the padding rows are put back as they were afterwards.
    const int64_t E = a.width;
    pad_rows_.resize(2 * E);
    float* word_pad = padding.word >= 0 && a.d_word ? a.d_word + padding.word * E : nullptr;
    float* pos_pad = padding.position >= 0 && a.d_position ? a.d_position + padding.position * E : nullptr;
    if (word_pad) std::memcpy(pad_rows_.data(), word_pad, sizeof(float) * E);
    if (pos_pad) std::memcpy(pad_rows_.data() + E, pos_pad, sizeof(float) * E);
    kernels::embed_backward_f32(a);
    if (word_pad) std::memcpy(word_pad, pad_rows_.data(), sizeof(float) * E);
    if (pos_pad) std::memcpy(pos_pad, pad_rows_.data() + E, sizeof(float) * E);
    return Status::Ok();
  }
  Status column_sum(const kernels::ColumnSumArgs& a) override {
    kernels::column_sum_f32(a);
    return Status::Ok();
  }
  Status dropout(const kernels::DropoutArgs& a) override {
    if (a.p > 0) kernels::dropout_f32(a);
    return Status::Ok();
  }
  Status cross_entropy(const kernels::CrossEntropyArgs& a, kernels::LossSum* result) override {
    kernels::CrossEntropyArgs m = a;
    const int64_t n = counted(a.targets, a.rows, a.ignore_index);
    m.grad_scale = n ? a.grad_scale / float(n) : 0.f;
    *result = kernels::cross_entropy_f32(m);
    return Status::Ok();
  }
  Status bce_with_logits(const kernels::BceWithLogitsArgs& a, kernels::LossSum* result) override {
    kernels::BceWithLogitsArgs m = a;
    int64_t n = a.n;
    if (a.mask) n = counted(a.mask, a.n, 0);
    m.grad_scale = n ? a.grad_scale / float(n) : 0.f;
    *result = kernels::bce_with_logits_f32_ref(m);
    return Status::Ok();
  }
  Status mse(const kernels::MseArgs& a, kernels::LossSum* result) override {
    kernels::MseArgs m = a;
    m.grad_scale = a.n ? a.grad_scale / float(a.n) : 0.f;
    *result = kernels::mse_f32_ref(m);
    return Status::Ok();
  }
  Status all_finite(const float* x, int64_t n, bool* finite) override {
    bool ok = true;
#pragma omp parallel for schedule(static) reduction(&& : ok) if (n > (1 << 15))
    for (int64_t i = 0; i < n; ++i) ok = ok && std::isfinite(x[i]);
    *finite = ok;
    return Status::Ok();
  }

 private:
  const kernels::CpuKernels& k_;
  kernels::GemmPlanner gemm_;
  kernels::OpTraits<kernels::AttentionArgs>::Fn attention_ = nullptr;
  std::vector<float> pad_rows_;  // embed_backward's saved padding rows (sized on first use)
};

}  // namespace

std::unique_ptr<Backend> make_cpu_backend() { return std::make_unique<CpuBackend>(); }


}  // namespace bert::runtime
