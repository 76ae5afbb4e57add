// GEMMs on the CPU through oneDNN primitives, planned once per shape and cached.
//
// Linear layers keep PyTorch's weight layout [N, K] (out, in). Two paths, both oneDNN:
//  - packed: weights reordered ONCE (pack_linear_weights, at model load) into a layout a oneDNN kernel
//    asks for. Which form is decided at run time by what oneDNN offers on the CPU it runs on:
//     * matmul form, where oneDNN's matmul asks for blocked weights of its own (its brgemm kernel, AVX-512
//       and up): a matmul primitive on the reordered weights.
//     * 1x1-convolution form otherwise, where oneDNN has a 1x1 convolution kernel whose weight layout
//       serves every token count (its jit_1x1 kernel, AVX2): the convolution reads our [tokens, K] rows
//       as "nwc" as they are.
//  - plain: a matmul primitive that reads [N, K] as the transposed [K, N] operand ("ba"), no copy;
//    used when no packed weights are given, for strided rows, or when oneDNN offers no generated kernel
//    for the packed layout at the asked token count.
// Measured (oneDNN 2.6, AMD Zen 4, 1 thread, M = 128 tokens, bert-base's N x K = 2304x768, 768x768,
// 3072x768, 768x3072; GFLOP/s in that order; a shared 2-core machine, so +-5%):
//   AVX-512 (avx512_core, what this CPU exposes):  plain matmul (brg)   99 / 107 /  98 / 101
//                                                   matmul form (brg)  106 / 113 / 105 / 106
//                                                   1x1 conv (brgconv) 107 / 114 / 106 / 108
//     The matmul form wins over plain (+5-7%; +30% at 16 tokens). brgconv_1x1 ties it (within 1-2%) but
//     picks its weight blocking from the token and thread counts (weights packed for 128 tokens send 1, 5,
//     16 or 512 tokens of a 768x768 layer to oneDNN's reference kernel), so it is not used for dense layers.
//   AVX2 (ONEDNN_MAX_CPU_ISA=AVX2, same CPU):       plain matmul (gemm:jit) 98 / 107 / 94 / 96
//                                                   1x1 conv (jit_1x1)     104 / 115 / 104 / 106
//     oneDNN 2.6 has no brgemm matmul for AVX2: "any" weights come back plain (gemm:jit, 88-108), so
//     the 1x1 convolution is the packed form there.
// Both packed forms gave bit-identical results at every thread count tested (1-4, 6); oneDNN's sgemm
// (gemm:jit, the plain path under AVX2) does not at 3+ threads on some shapes (tests/gemm_test.cc).
// Bias and the activation are fused as post-ops on both paths.
// Grouped linear layers (SqueezeBERT's grouped 1x1 Conv1d) take both paths too: packed as a grouped
// 1x1 convolution, plain as one [M, K/G] x [K/G, N/G] matmul run once per group. Grouped weights are
// packed only when oneDNN offers its 1x1 kernel for them with a layout that serves every token and thread
// count: oneDNN 2.6's AVX2 1x1 kernel takes no groups, and the direct jit convolution it falls back to
// measured 1.5-2.6x slower than the plain path on SqueezeBERT's shapes (85-89 GFLOP/s plain vs 33-60 packed,
// 1 thread). Its AVX-512 brgconv_1x1 ran SqueezeBERT's 768x768 and 3072x768 (G=4) at 113-114 vs 103-104
// plain, but its layout changes with the thread count (3 and 6 threads refuse weights packed at 1 or 2), so
// those layers stay plain too.
// A GemmPlanner is owned by one session (one thread at a time); its plans hold the primitive and
// the memory objects, so running a planned shape allocates nothing.
#pragma once

#include <cstdint>
#include <map>
#include <memory>

#include "bert/status.h"
#include "kernels/activation.h"

namespace bert::kernels {

// How GEMMs on fp32 operands compute: exactly, or with the operands rounded to TF32 / fp16 / bf16 and fp32
// accumulation (CUDA tensor cores; on the CPU kBF16 too, where oneDNN has a bf16 matmul: mixed-precision
// training). Storage stays fp32.
enum class GemmCompute { kExact, kTF32, kF16, kBF16 };
const char* gemm_compute_name(GemmCompute c);  // "fp32", "tf32", "fp16", "bf16"

// Weights of one linear layer in the layout a oneDNN kernel prefers (opaque; immutable once made).
struct PackedWeights;
struct PackedWeightsDeleter {
  void operator()(PackedWeights* p) const;
};
using PackedWeightsPtr = std::unique_ptr<PackedWeights, PackedWeightsDeleter>;
// Reorders w [N, K/groups] once (K is the full input width, see LinearArgs), into the matmul form or the
// 1x1-convolution form (top of this file); nullptr (use plain) when groups does not divide N and K, when
// oneDNN offers neither form for the shape, or, for groups > 1, when its kernel is not the 1x1 one (slower
// than plain) or its layout does not serve every token count (`any_jit_kernel` packs for any generated
// convolution kernel at 128 tokens anyway, for tests; other token counts then run plain).
PackedWeightsPtr pack_linear_weights(const float* w, int64_t N, int64_t K, int64_t groups = 1,
                                     bool any_jit_kernel = false);
size_t packed_weights_bytes(const PackedWeights& p);
const char* packed_weights_form(const PackedWeights& p);  // "matmul" or "conv1x1"

// ---- low-precision linear layers (kernels/cpu/gemm_lowp_onednn.cc) ------------------------------
// The element type of packed weights: fp32 (above), bf16 (x converted to bf16 per call, fp32
// accumulation), or int8 (symmetric per-output-channel scales; x quantised per call to int8 with one
// scale, dynamic or calibrated; int32 accumulation; dequantisation, bias and activation fused as oneDNN
// post-ops, the output fp32). LinearArgs.w stays the fp32 original (references, training).
enum class WeightType { kF32, kBF16, kInt8 };
const char* weight_type_name(WeightType t);  // "fp32", "bf16", "int8"
WeightType packed_weights_type(const PackedWeights& p);
// w [N, K] converted / quantised and reordered once into the layout oneDNN's matmul asks for. Errors name
// what is missing: a CPU without a bf16 matmul in oneDNN (it needs AVX-512), grouped layers.
Result<PackedWeightsPtr> pack_linear_weights_lowp(const float* w, int64_t N, int64_t K, WeightType type);
// Whether oneDNN has a generated bf16 matmul on this CPU; `why` names the missing feature when not.
bool bf16_gemm_supported(std::string* why);
// Whether oneDNN's int8 matmul here uses VNNI (vpdpbusd: no intermediate saturation). Without it the u8 x s8
// pair products (vpmaddubsw) saturate int16, so int8 weights are quantised to 7 bits (|q| <= 63) instead.
bool int8_gemm_has_vnni();
// How int8 linear layers scale their activations: measured per call (dynamic), measured and recorded per
// layer (calibration), or the recorded range (static; layers without one measure).
enum class Int8ActivationScales { kDynamic, kRecord, kStatic };

// y[m, n] = act(sum_k x[m, k] * w[n, k] + bias[n])
//
// Grouped (groups = G > 1, PyTorch's Conv1d(K, N, 1, groups=G) with its weight [N, K/G, 1] minus the
// trailing 1): K and N stay the FULL widths and G must divide both. Output column n belongs to group
// g = n / (N/G) and reads only input columns [g*K/G, (g+1)*K/G):
//   y[m, n] = act(bias[n] + sum_{k < K/G} x[m, g*K/G + k] * w[n, k])
// groups == 1 is the dense layer above.
struct LinearArgs {
  const float* x = nullptr;     // [M, K], row stride ldx
  const float* w = nullptr;     // [N, K/groups], contiguous
  const float* bias = nullptr;  // [N] or nullptr
  float* y = nullptr;           // [M, N], row stride ldy
  int64_t M = 0, N = 0, K = 0;  // K and N are the full widths, whatever groups is
  int64_t ldx = 0, ldy = 0;     // 0 means dense (K and N)
  Activation act = Activation::kIdentity;
  const PackedWeights* packed = nullptr;  // the same weights packed: the fast path when rows are dense
  int64_t groups = 1;           // >= 1, divides N and K
  // Unpacked weights computed in bf16 (GemmPlanner::set_compute): convert w, then reorder it, each call,
  // into the blocked layout oneDNN's bf16 matmul asks for (as BatchedMatmulArgs::reorder_b; training's
  // forward at a few hundred tokens and more). Ignored elsewhere.
  bool reorder_w = false;
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
  bool accumulate = false;  // c += a * b instead of c = a * b (gradient accumulation)
  // Reorder b, each call, into the blocked layout oneDNN's matmul asks for, then multiply: for products
  // whose b is read by many rows of a (the linear layers' backward: dx = dy W and dW = dy^T x at a few
  // hundred tokens and more), where oneDNN 2.6's brgemm runs a plain [K, N] b at 64-94 GFLOP/s on the
  // Zen 4 here and its own layout at 95-105 (1 thread; tests/gemm_test.cc checks the results). In bf16
  // compute b is converted first, then reordered (plain bf16 170-196 GFLOP/s on bert-base's backward
  // shapes at 1024 rows, blocked 177-209). Only for a single product (batch0 == batch1 == 1); ignored
  // otherwise.
  bool reorder_b = false;
  // The caller's promise that a is the previous call's a (the same pointer and span) and unchanged since:
  // bf16 compute then reuses that call's conversion (the linear backward's dW reads the dy its dx just
  // read). Checked against the pointer and span the planner converted last; ignored in fp32.
  bool a_as_before = false;
};

// The activation on y [M, N] (row stride ldy) exactly as a linear layer's epilogue applies it where
// oneDNN does not fuse it: GELU (erf) through the fast form (kernels/activation.h), the others through
// the CPU activation kernel. Training's forward runs it on the saved pre-activations, so that it
// computes what the fused inference layer does.
void linear_activation(float* y, int64_t M, int64_t N, int64_t ldy, Activation act);
// The same from x [M, N] (row stride ldx) into y (x == y: in place): each row copied, then activated
// while it is in cache (training keeps the pre-activations x and the activations y).
void linear_activation(const float* x, int64_t ldx, float* y, int64_t M, int64_t N, int64_t ldy, Activation act);

// Plain references (double accumulation), the spec for the two calls below.
void linear_f32_ref(const LinearArgs& args);
void batched_matmul_f32_ref(const BatchedMatmulArgs& args);

class GemmPlanner {
 public:
  GemmPlanner();
  ~GemmPlanner();
  GemmPlanner(const GemmPlanner&) = delete;
  GemmPlanner& operator=(const GemmPlanner&) = delete;

  // Both return false (and do nothing) if oneDNN cannot plan the shape, or for a linear layer whose
  // groups is < 1 or does not divide N and K, or whose packed weights were made for another shape;
  // callers treat that as an internal error. Plans are made on first use of a shape and reused afterwards.
  bool linear(const LinearArgs& args);
  bool batched_matmul(const BatchedMatmulArgs& args);

  size_t plan_count() const;
  // Name of the oneDNN implementation behind the most recent plan ("gemm:jit", ...).
  const char* last_impl() const;
  // Whether the most recent call ran on packed weights (false after a plain fallback or a batched matmul).
  bool last_packed() const;
  // GEMMs run so far (linear and batched_matmul calls that succeeded): a profiler that sees it change
  // across a scope names last_impl() for that scope.
  uint64_t calls() const;

  // kExact (default) or kBF16: fp32 operands rounded to bf16 per call (fp32 weights and activations stay
  // as they are; accumulation and outputs fp32). Packed bf16 / int8 weights run as they are either way.
  void set_compute(GemmCompute compute);
  // int8 activation scales (see Int8ActivationScales) and the ranges recorded per layer's weights.
  void set_int8_scales(Int8ActivationScales mode);
  std::map<const PackedWeights*, float>& int8_ranges();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace bert::kernels
