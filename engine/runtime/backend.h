// A backend: one device's memory and the implementation of every op the shared model (engine/model)
// calls. The ops take the kernels' argument structs (kernels/*.h) with pointers into this backend's
// memory, so the network is written once and runs wherever a backend implements these calls.
// Backends: CPU (engine/runtime/cpu_backend.cc: oneDNN GEMMs, the ISA-chosen CPU kernels) and CUDA
// (engine/runtime/cuda/cuda_backend.cc: cuBLASLt and kernels/cuda). A backend object belongs to one
// Session or Trainer (one thread at a time): it owns the GEMM plans and, on CUDA, the stream.
// Every op returns a Status; none throws. An op a backend does not implement says so by name.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "bert/dtype.h"
#include "bert/engine.h"
#include "bert/status.h"
#include "kernels/activation.h"
#include "kernels/attention.h"
#include "kernels/embed.h"
#include "kernels/gemm.h"
#include "kernels/layernorm.h"
#include "kernels/pooling.h"
#include "kernels/softmax_masked.h"
#include "kernels/train.h"

namespace bert::runtime {

using kernels::GemmCompute;  // how fp32 GEMMs compute (kernels/gemm.h)

// Fused attention: the kernel op's arguments (kernels/attention.h: Q, K, V rows, key mask or packed
// row offsets, P = masked softmax(scale Q K^T), out = P V) plus what training adds: one log-sum-exp per
// query row (lse [batch, heads, seq], from which the backward recomputes P) and dropout on P
// regenerated from (seed, offset).
struct AttentionArgs {
  kernels::AttentionArgs op;
  float* lse = nullptr;  // training: [batch, heads, seq]
  float dropout = 0.f;   // training: dropout on P
  uint64_t seed = 0, offset = 0;
};
struct AttentionGradArgs {
  AttentionArgs fwd;  // the forward's arguments (q, k, v, out, lse)
  const float* d_out = nullptr;  // [batch * seq, ldo] like out
  float* dq = nullptr;           // [batch * seq, ld] like q, k, v (written)
  float* dk = nullptr;
  float* dv = nullptr;
  float* scratch = nullptr;  // [batch, heads, seq] floats of workspace
};

// nn.Embedding(padding_idx): the gradient of the lookup leaves these rows of the word (and position)
// table untouched (-1: no padding index).
struct EmbedPadding {
  int32_t word = -1;
  int32_t position = -1;
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual Device device() const = 0;
  virtual std::string name() const = 0;  // "cpu (avx512)", "cuda: NVIDIA H100 ..."

  // ---- memory --------------------------------------------------------------------------------
  // 256-byte aligned, uninitialised; nullptr when the device has no room.
  virtual void* allocate(size_t bytes) = 0;
  virtual void release(void* p) = 0;
  virtual Status upload(void* dst, const void* src, size_t bytes) = 0;    // host -> backend
  virtual Status download(void* dst, const void* src, size_t bytes) = 0;  // backend -> host, waits
  virtual Status zero(void* p, size_t bytes) = 0;
  virtual Status synchronize() = 0;
  // The queue the backend's work runs on (a cudaStream_t on CUDA; null where work is synchronous):
  // a GPU communicator orders its collectives after it.
  virtual void* queue() const { return nullptr; }
  // dst[r * dst_ld + c] = src[r * src_ld + c] (add: +=) for r < rows, c < cols (first tokens of each
  // sequence, one column of interleaved logits, plain copies with ld = cols).
  virtual Status copy_rows(const float* src, int64_t src_ld, float* dst, int64_t dst_ld, int64_t rows,
                           int64_t cols) = 0;
  virtual Status add_rows(const float* src, int64_t src_ld, float* dst, int64_t dst_ld, int64_t rows,
                          int64_t cols) = 0;
  // out[i] = a[i] + b[i] (out may alias a or b).
  virtual Status add(const float* a, const float* b, float* out, int64_t n) = 0;
  // dst[index[r] * dst_ld + c] = src[r * src_ld + c] for r < rows, c < cols (index: backend memory,
  // distinct rows): packed token rows back to their padded positions.
  virtual Status scatter_rows(const float* src, int64_t src_ld, float* dst, int64_t dst_ld, const int32_t* index,
                              int64_t rows, int64_t cols) = 0;

  // ---- forward ops ---------------------------------------------------------------------------
  // GEMMs (linear, batched_matmul) run so far and the implementation behind the most recent one
  // ("brg:avx512_core", "gemm:jit", ...): a profile names it for the ops whose scope ran a GEMM.
  // Backends that do not say return 0 and "".
  virtual uint64_t gemm_calls() const { return 0; }
  virtual std::string last_gemm_impl() const { return ""; }
  virtual Status linear(const kernels::LinearArgs& a) = 0;
  // How int8 linear layers scale their activations (measure per call, record ranges, use recorded
  // ranges); backends without int8 layers say so.
  virtual Status set_int8_activation_scales(kernels::Int8ActivationScales mode) {
    return unsupported(name() + " has no int8 linear layers");
  }
  virtual Status batched_matmul(const kernels::BatchedMatmulArgs& a) = 0;
  virtual Status layernorm(const kernels::LayerNormArgs& a) = 0;
  virtual Status softmax_masked(const kernels::SoftmaxMaskedArgs& a) = 0;
  virtual Status activation(const kernels::ActivationArgs& a) = 0;
  // The activation as the backend's linear layers apply it in their epilogue (the CPU's GELU: the fast
  // form of kernels/gemm.h's linear_activation), y = act(x) on [rows, cols] (x == y: in place, else
  // disjoint): what training's forward runs after an unfused linear layer, so that it matches the fused
  // inference layer. By default a copy, then activation().
  virtual Status linear_activation(const float* x, float* y, int64_t rows, int64_t cols, kernels::Activation act) {
    if (x != y) BERT_RETURN_IF_ERROR(copy_rows(x, cols, y, cols, rows, cols));
    return activation({y, rows * cols, act});
  }
  virtual Status embed(const kernels::EmbedArgs& a) = 0;
  virtual Status pool(const kernels::PoolArgs& a) = 0;
  // Fused attention, when the backend has a kernel for it at this head width (training: with lse
  // and dropout).
  virtual bool has_fused_attention(bool training, int64_t head_dim) const = 0;
  // The fused attention's products in bf16 (the CPU's precision bf16, where the CPU has AVX512_BF16);
  // backends without such a kernel refuse anything but fp32.
  virtual Status set_attention_compute(DType compute) {
    if (compute == DType::kF32) return Status::Ok();
    return unsupported("attention computing in " + std::string(dtype_name(compute)) + " on " + name());
  }
  virtual Status attention(const AttentionArgs& a) = 0;
  virtual Status attention_backward(const AttentionGradArgs& a) = 0;

  // ---- training ops --------------------------------------------------------------------------
  virtual Status layernorm_backward(const kernels::LayerNormBackwardArgs& a) = 0;
  virtual Status softmax_backward(const kernels::SoftmaxBackwardArgs& a) = 0;
  virtual Status activation_backward(const kernels::ActivationBackwardArgs& a) = 0;
  virtual Status embed_backward(const kernels::EmbedBackwardArgs& a, EmbedPadding padding) = 0;
  virtual Status column_sum(const kernels::ColumnSumArgs& a) = 0;
  virtual Status dropout(const kernels::DropoutArgs& a) = 0;
  // Losses as means over the counted rows / entries: the gradient is d(term) * a.grad_scale / count
  // (0 when nothing counts) and {sum of terms, count} is written to `result` (backend memory).
  virtual Status cross_entropy(const kernels::CrossEntropyArgs& a, kernels::LossSum* result) = 0;
  virtual Status bce_with_logits(const kernels::BceWithLogitsArgs& a, kernels::LossSum* result) = 0;
  virtual Status mse(const kernels::MseArgs& a, kernels::LossSum* result) = 0;
  // *finite (host) = every x[i] is finite.
  virtual Status all_finite(const float* x, int64_t n, bool* finite) = 0;
};

// The CPU backend: oneDNN GEMMs planned per shape (fp32, or bf16 compute on fp32 operands), every other op
// resolved once from the kernel registry for the CPU's best ISA (an op without an entry is the error).
Result<std::unique_ptr<Backend>> make_cpu_backend(GemmCompute compute = GemmCompute::kExact);
// The CUDA backend (CUDA builds with a GPU), its GEMMs computing as `compute` says.
Result<std::unique_ptr<Backend>> make_cuda_backend(GemmCompute compute);
// Whether this build has a CUDA backend and a GPU to run it; `why` says what is missing when not.
bool cuda_available(std::string* why);

// A backend allocation, released on destruction.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  DeviceBuffer(Backend* backend, void* p) : backend_(backend), p_(p) {}
  DeviceBuffer(DeviceBuffer&& o) noexcept : backend_(o.backend_), p_(o.p_) { o.p_ = nullptr; }
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    if (this != &o) {
      reset();
      backend_ = o.backend_, p_ = o.p_, o.p_ = nullptr;
    }
    return *this;
  }
  ~DeviceBuffer() { reset(); }
  void reset() {
    if (p_) backend_->release(p_);
    p_ = nullptr;
  }
  void* get() const { return p_; }
  explicit operator bool() const { return p_ != nullptr; }

 private:
  Backend* backend_ = nullptr;
  void* p_ = nullptr;
};

}  // namespace bert::runtime
