// GEMMs on the CPU through oneDNN matmul primitives, planned once per shape and cached.
//
// Linear layers keep PyTorch's weight layout [N, K] (out, in). Two paths, both oneDNN:
//  - packed: weights reordered ONCE (pack_linear_weights, at model load) into the blocked layout of
//    oneDNN's 1x1-convolution kernel, which reads our [tokens, K] activations as "nwc" as they are.
//    On this AVX2 machine it runs ~10% faster than matmul (bench/results/README.md has the numbers).
//  - plain: a matmul primitive that reads [N, K] as the transposed [K, N] operand ("ba"), no copy;
//    used when no packed weights are given, for strided rows, or if oneDNN offers no jit kernel.
// Bias and the activation are fused as post-ops on both paths.
// A GemmPlanner is owned by one session (one thread at a time); its plans hold the primitive and
// the memory objects, so running a planned shape allocates nothing.
#pragma once

#include <cstdint>
#include <memory>

#include "kernels/activation.h"

namespace bert::kernels {

// Weights of one linear layer in oneDNN's preferred blocked layout (opaque; immutable once made).
struct PackedWeights;
struct PackedWeightsDeleter {
  void operator()(PackedWeights* p) const;
};
using PackedWeightsPtr = std::unique_ptr<PackedWeights, PackedWeightsDeleter>;
// Reorders w [N, K] once; nullptr when oneDNN has no blocked jit kernel for the shape (use plain).
PackedWeightsPtr pack_linear_weights(const float* w, int64_t N, int64_t K);
size_t packed_weights_bytes(const PackedWeights& p);

// y[m, n] = act(sum_k x[m, k] * w[n, k] + bias[n])
struct LinearArgs {
  const float* x = nullptr;     // [M, K], row stride ldx
  const float* w = nullptr;     // [N, K], contiguous
  const float* bias = nullptr;  // [N] or nullptr
  float* y = nullptr;           // [M, N], row stride ldy
  int64_t M = 0, N = 0, K = 0;
  int64_t ldx = 0, ldy = 0;     // 0 means dense (K and N)
  Activation act = Activation::kIdentity;
  const PackedWeights* packed = nullptr;  // the same weights packed: the fast path when rows are dense
};

// c[i, j] = a[i, j] * b[i, j] for every (i, j) in [batch0, batch1]: a is [M, K], b is [K, N], c is [M, N],
// each addressed through four strides (batch0, batch1, row, column) in elements.
struct BatchedMatmulArgs {
  const float* a = nullptr;
  const float* b = nullptr;
  float* c = nullptr;
  int64_t batch0 = 1, batch1 = 1, M = 0, N = 0, K = 0;
  int64_t a_strides[4] = {0, 0, 0, 0};
  int64_t b_strides[4] = {0, 0, 0, 0};
  int64_t c_strides[4] = {0, 0, 0, 0};
};

// Plain references (double accumulation), the spec for the two calls below.
void linear_f32_ref(const LinearArgs& args);
void batched_matmul_f32_ref(const BatchedMatmulArgs& args);

class GemmPlanner {
 public:
  GemmPlanner();
  ~GemmPlanner();
  GemmPlanner(const GemmPlanner&) = delete;
  GemmPlanner& operator=(const GemmPlanner&) = delete;

  // Both return false (and do nothing) if oneDNN cannot plan the shape; callers treat that as an
  // internal error. Plans are made on first use of a shape and reused afterwards.
  bool linear(const LinearArgs& args);
  bool batched_matmul(const BatchedMatmulArgs& args);

  size_t plan_count() const;
  // Name of the oneDNN implementation behind the most recent plan ("gemm:jit", ...).
  const char* last_impl() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace bert::kernels
