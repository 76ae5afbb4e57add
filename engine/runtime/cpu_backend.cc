// The CPU backend: host memory, oneDNN GEMMs planned once per shape (kernels/gemm.h), and every other
// op resolved ONCE, at creation, from the kernel registry (kernels/registry.h) for the best ISA this
// CPU runs (BERT_CPU_ISA can lower it): a missing (op, cpu, f32) entry is an error naming it. Each
// call checks its arguments with the op's one check() before running. Every op runs on the calling
// thread's OpenMP team and is deterministic for any thread count.
#include <sys/mman.h>

#include <cstdlib>
#include <cstring>
#include <vector>

#include "engine/runtime/backend.h"
#include "kernels/optimizer.h"
#include "kernels/registry.h"

namespace bert::runtime {

namespace {

template <class Args>
using Fn = typename kernels::OpTraits<Args>::Fn;

Status planning_failed(const char* what, int64_t M, int64_t N, int64_t K) {
  return internal_error(std::string("oneDNN could not plan the ") + what + " " + std::to_string(M) + "x" +
                        std::to_string(N) + "x" + std::to_string(K));
}

// Counted entries (value != ignore) of a target or mask array.
int64_t counted(const int32_t* v, int64_t n, int32_t ignore) {
  int64_t c = 0;
  for (int64_t i = 0; i < n; ++i) c += v[i] != ignore;
  return c;
}

// check(args) then the resolved kernel.
template <class Args>
Status run(Fn<Args> fn, const Args& a) {
  BERT_RETURN_IF_ERROR(kernels::check(a));
  fn(a);
  return Status::Ok();
}

class CpuBackend final : public Backend {
 public:
  // Resolves every op the network runs; the first missing one is the error.
  Status init() {
    isa_ = kernels::detect_cpu_isa();
    BERT_RETURN_IF_ERROR(resolve(layernorm_));
    BERT_RETURN_IF_ERROR(resolve(softmax_));
    BERT_RETURN_IF_ERROR(resolve(activation_));
    BERT_RETURN_IF_ERROR(resolve(embed_));
    BERT_RETURN_IF_ERROR(resolve(pool_));
    BERT_RETURN_IF_ERROR(resolve(layernorm_backward_));
    BERT_RETURN_IF_ERROR(resolve(softmax_backward_));
    BERT_RETURN_IF_ERROR(resolve(activation_backward_));
    BERT_RETURN_IF_ERROR(resolve(embed_backward_));
    BERT_RETURN_IF_ERROR(resolve(column_sum_));
    BERT_RETURN_IF_ERROR(resolve(cross_entropy_));
    BERT_RETURN_IF_ERROR(resolve(bce_));
    BERT_RETURN_IF_ERROR(resolve(mse_));
    BERT_RETURN_IF_ERROR(resolve(dropout_));
    if (!resolve(attention_).ok()) attention_ = nullptr;  // optional: the network falls back to unfused
    attention_f32_ = attention_;
    return Status::Ok();
  }

  Device device() const override { return Device::kCpu; }
  std::string name() const override { return std::string("cpu (") + kernels::cpu_isa_name(isa_) + ")"; }

  void* allocate(size_t bytes) override {
    // Large regions (activation workspace, parameters, gradients, moments) on transparent huge pages
    // where the kernel offers them on request (THP "madvise"): the GEMMs stream row blocks that are
    // pages apart (a [1024, 3072] activation's rows are 12 KiB apart), and with 4 KiB pages their
    // TLB misses cost the training step several percent.
    constexpr size_t kHuge = size_t{2} << 20;
    if (bytes >= 4 * kHuge) {
      const size_t rounded = (bytes + kHuge - 1) / kHuge * kHuge;
      void* p = std::aligned_alloc(kHuge, rounded);
#ifdef MADV_HUGEPAGE
      if (p) (void)madvise(p, rounded, MADV_HUGEPAGE);
#endif
      return p;
    }
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

  Status scatter_rows(const float* src, int64_t src_ld, float* dst, int64_t dst_ld, const int32_t* index,
                      int64_t rows, int64_t cols) override {
    for (int64_t r = 0; r < rows; ++r) std::memcpy(dst + index[r] * dst_ld, src + r * src_ld, sizeof(float) * cols);
    return Status::Ok();
  }

  void set_compute(GemmCompute compute) { gemm_.set_compute(compute); }
  Status set_int8_activation_scales(kernels::Int8ActivationScales mode) override {
    gemm_.set_int8_scales(mode);
    return Status::Ok();
  }
  uint64_t gemm_calls() const override { return gemm_.calls(); }
  std::string last_gemm_impl() const override { return gemm_.last_impl(); }
  Status linear(const kernels::LinearArgs& a) override {
    return gemm_.linear(a) ? Status::Ok() : planning_failed("linear layer", a.M, a.N, a.K);
  }
  Status batched_matmul(const kernels::BatchedMatmulArgs& a) override {
    return gemm_.batched_matmul(a) ? Status::Ok() : planning_failed("batched matmul", a.M, a.N, a.K);
  }
  Status layernorm(const kernels::LayerNormArgs& a) override { return run(layernorm_, a); }
  Status softmax_masked(const kernels::SoftmaxMaskedArgs& a) override { return run(softmax_, a); }
  Status activation(const kernels::ActivationArgs& a) override {
    return a.kind == kernels::Activation::kIdentity ? Status::Ok() : run(activation_, a);
  }
  Status linear_activation(const float* x, float* y, int64_t rows, int64_t cols, kernels::Activation act) override {
    BERT_RETURN_IF_ERROR(kernels::check(kernels::ActivationArgs{y, rows * cols, act}));
    if (x != y) {
      BERT_RETURN_IF_ERROR(kernels::check(kernels::ActivationArgs{const_cast<float*>(x), rows * cols, act}));
      if (x < y + rows * cols && y < x + rows * cols)
        return invalid_argument("linear_activation: x partially overlaps y (must be the same array or disjoint)");
    }
    kernels::linear_activation(x, cols, y, rows, cols, cols, act);
    return Status::Ok();
  }
  Status embed(const kernels::EmbedArgs& a) override { return run(embed_, a); }
  Status pool(const kernels::PoolArgs& a) override { return run(pool_, a); }
  // Inference only: no CPU kernel keeps the log-sum-exp a fused backward needs.
  bool has_fused_attention(bool training, int64_t head_dim) const override {
    return !training && attention_ && head_dim <= kernels::kAttentionMaxHeadDim;
  }
  Status set_attention_compute(DType compute) override {
    if (compute == DType::kF32) {
      attention_ = attention_f32_;
    } else if (compute == DType::kBF16 && kernels::attention_bf16_supported()) {
      attention_ = kernels::attention_bf16_avx512bf16;
    } else {
      return Backend::set_attention_compute(compute);
    }
    return Status::Ok();
  }
  Status attention(const AttentionArgs& a) override {
    if (!has_fused_attention(a.lse != nullptr, a.op.head_dim))
      return unsupported(std::string("fused attention") + (a.lse ? " for training" : "") + " at head_dim " +
                         std::to_string(a.op.head_dim) + " has no CPU kernel registered");
    return run(attention_, a.op);
  }
  Status attention_backward(const AttentionGradArgs&) override {
    return unsupported("fused attention backward has no CPU kernel registered");
  }

  Status layernorm_backward(const kernels::LayerNormBackwardArgs& a) override { return run(layernorm_backward_, a); }
  Status softmax_backward(const kernels::SoftmaxBackwardArgs& a) override { return run(softmax_backward_, a); }
  Status activation_backward(const kernels::ActivationBackwardArgs& a) override {
    return a.kind == kernels::Activation::kIdentity ? Status::Ok() : run(activation_backward_, a);
  }
  Status embed_backward(const kernels::EmbedBackwardArgs& a, EmbedPadding padding) override {
    // The kernel scatters every token; the padding rows are put back as they were afterwards.
    const int64_t E = a.width;
    pad_rows_.resize(2 * E);
    float* word_pad = padding.word >= 0 && a.d_word ? a.d_word + padding.word * E : nullptr;
    float* pos_pad = padding.position >= 0 && a.d_position ? a.d_position + padding.position * E : nullptr;
    if (word_pad) std::memcpy(pad_rows_.data(), word_pad, sizeof(float) * E);
    if (pos_pad) std::memcpy(pad_rows_.data() + E, pos_pad, sizeof(float) * E);
    BERT_RETURN_IF_ERROR(run(embed_backward_, a));
    if (word_pad) std::memcpy(word_pad, pad_rows_.data(), sizeof(float) * E);
    if (pos_pad) std::memcpy(pos_pad, pad_rows_.data() + E, sizeof(float) * E);
    return Status::Ok();
  }
  Status column_sum(const kernels::ColumnSumArgs& a) override { return run(column_sum_, a); }
  Status dropout(const kernels::DropoutArgs& a) override {
    return a.p > 0 || a.src ? run(dropout_, a) : Status::Ok();
  }
  Status cross_entropy(const kernels::CrossEntropyArgs& a, kernels::LossSum* result) override {
    BERT_RETURN_IF_ERROR(kernels::check(a));
    kernels::CrossEntropyArgs m = a;
    const int64_t n = counted(a.targets, a.rows, a.ignore_index);
    m.grad_scale = n ? a.grad_scale / float(n) : 0.f;
    *result = cross_entropy_(m);
    return Status::Ok();
  }
  Status bce_with_logits(const kernels::BceWithLogitsArgs& a, kernels::LossSum* result) override {
    BERT_RETURN_IF_ERROR(kernels::check(a));
    kernels::BceWithLogitsArgs m = a;
    const int64_t n = a.mask ? counted(a.mask, a.n, 0) : a.n;
    m.grad_scale = n ? a.grad_scale / float(n) : 0.f;
    *result = bce_(m);
    return Status::Ok();
  }
  Status mse(const kernels::MseArgs& a, kernels::LossSum* result) override {
    BERT_RETURN_IF_ERROR(kernels::check(a));
    kernels::MseArgs m = a;
    m.grad_scale = a.n ? a.grad_scale / float(a.n) : 0.f;
    *result = mse_(m);
    return Status::Ok();
  }
  Status all_finite(const float* x, int64_t n, bool* finite) override {
    *finite = kernels::all_finite_f32(x, n);  // the optimizer kernels' vectorised check
    return Status::Ok();
  }

 private:
  template <class R, class Args>
  Status resolve(R (*&fn)(const Args&)) {
    auto r = kernels::resolve<Args>(kernels::Device::kCpu, DType::kF32, isa_);
    if (!r.ok()) return r.status().with_context("CPU backend");
    fn = *r;
    return Status::Ok();
  }

  kernels::CpuIsa isa_ = kernels::CpuIsa::kScalar;
  kernels::GemmPlanner gemm_;
  Fn<kernels::LayerNormArgs> layernorm_ = nullptr;
  Fn<kernels::SoftmaxMaskedArgs> softmax_ = nullptr;
  Fn<kernels::ActivationArgs> activation_ = nullptr;
  Fn<kernels::EmbedArgs> embed_ = nullptr;
  Fn<kernels::PoolArgs> pool_ = nullptr;
  Fn<kernels::AttentionArgs> attention_ = nullptr;      // the fused attention the network runs
  Fn<kernels::AttentionArgs> attention_f32_ = nullptr;  // the registry's fp32 one
  Fn<kernels::LayerNormBackwardArgs> layernorm_backward_ = nullptr;
  Fn<kernels::SoftmaxBackwardArgs> softmax_backward_ = nullptr;
  Fn<kernels::ActivationBackwardArgs> activation_backward_ = nullptr;
  Fn<kernels::EmbedBackwardArgs> embed_backward_ = nullptr;
  Fn<kernels::ColumnSumArgs> column_sum_ = nullptr;
  Fn<kernels::CrossEntropyArgs> cross_entropy_ = nullptr;
  Fn<kernels::BceWithLogitsArgs> bce_ = nullptr;
  Fn<kernels::MseArgs> mse_ = nullptr;
  Fn<kernels::DropoutArgs> dropout_ = nullptr;
  std::vector<float> pad_rows_;  // embed_backward's saved padding rows (sized on first use)
};

}  // namespace

Result<std::unique_ptr<Backend>> make_cpu_backend(GemmCompute compute) {
  if (compute != GemmCompute::kExact && compute != GemmCompute::kBF16)
    return unsupported(std::string("the CPU backend computes GEMMs in fp32 or bf16, not ") + kernels::gemm_compute_name(compute));
  auto backend = std::make_unique<CpuBackend>();
  BERT_RETURN_IF_ERROR(backend->init());
  backend->set_compute(compute);
  return std::unique_ptr<Backend>(std::move(backend));
}

}  // namespace bert::runtime
