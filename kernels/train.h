// Training kernels: the backward of every non-GEMM forward op, the losses, dropout and small
// reductions. Plain argument structs over raw pointers (device-neutral: the CUDA versions will take
// the same structs). Each op has a `_ref` (scalar, double accumulation: the spec) and CPU variants
// (OpenMP; the portable loops compiled for the baseline ISA, AVX2 and AVX-512); all are deterministic
// (same inputs, same bits, whatever the thread count), which bit-identical training resume relies on.
// Gradients into parameters ACCUMULATE (+=).
#pragma once

#include <cstdint>

#include "bert/status.h"

#include "kernels/activation.h"

namespace bert::kernels {

// LayerNorm backward. The forward was y = (s - mean(s)) * rstd * gamma + beta over each row, with
// s = x (+ residual) and rstd = 1 / sqrt(var(s) + eps) (biased variance); the backward recomputes
// mean and rstd from s.
struct LayerNormBackwardArgs {
  const float* s = nullptr;      // [rows, cols] what was normalised (saved by the forward)
  const float* gamma = nullptr;  // [cols]
  const float* dy = nullptr;     // [rows, cols]
  float* ds = nullptr;           // [rows, cols] gradient wrt s (= wrt x and wrt residual); may alias dy
  float* dgamma = nullptr;       // [cols] += (nullptr: skipped)
  float* dbeta = nullptr;        // [cols] += (nullptr: skipped)
  int64_t rows = 0, cols = 0;
  float eps = 1e-12f;
};
// s, gamma, dy, ds non-null when rows*cols > 0; ds equal to dy or disjoint from it, disjoint from s and
// gamma; dgamma / dbeta disjoint from every other array.
Status check(const LayerNormBackwardArgs& a);
void layernorm_backward_f32_ref(const LayerNormBackwardArgs& a);
void layernorm_backward_f32(const LayerNormBackwardArgs& a);
void layernorm_backward_f32_avx2(const LayerNormBackwardArgs& a);
void layernorm_backward_f32_avx512(const LayerNormBackwardArgs& a);

// Backward of softmax_masked (kernels/softmax_masked.h): the forward was P = softmax(scale * S) over
// the last axis with masked keys at probability 0. In place: grad holds dL/dP on entry and dL/dS on
// exit: dS = scale * P * (dP - sum_j dP_j P_j). Masked keys get 0 because their P is 0. (A row
// whose keys are ALL masked has a uniform P, so dS is not 0 there: what autograd gives through
// HF's additive mask, and harmless since nothing depends on those raw scores.)
struct SoftmaxBackwardArgs {
  const float* probs = nullptr;  // [batch, heads, q_len, k_len] the forward's output
  float* grad = nullptr;         // [batch, heads, q_len, k_len] in: dP, out: dS
  int64_t batch = 0, heads = 0, q_len = 0, k_len = 0;
  float scale = 1.f;
  // The probabilities after dropout, D = P * keep / (1 - p) (what the forward multiplied V by), or
  // nullptr when the forward used P itself. With D, grad holds dL/dD on entry and the dropout's backward
  // is folded in: dS = scale * (D * dD - P * sum_j D_j dD_j), what dropout(dD) then the formula above give.
  const float* dropped = nullptr;
};
// probs and grad non-null when there is work, disjoint; dropped (when set) disjoint from grad; sizes >= 0
// and representable.
Status check(const SoftmaxBackwardArgs& a);
void softmax_backward_f32_ref(const SoftmaxBackwardArgs& a);
void softmax_backward_f32(const SoftmaxBackwardArgs& a);
void softmax_backward_f32_avx2(const SoftmaxBackwardArgs& a);
void softmax_backward_f32_avx512(const SoftmaxBackwardArgs& a);

// Backward of an element-wise activation (every kind in kernels/activation.h, identity included):
// grad[i] *= f'(x[i]), with x the PRE-activation input.
struct ActivationBackwardArgs {
  const float* x = nullptr;  // [n] pre-activation
  float* grad = nullptr;     // [n] in: dL/dy, out: dL/dx
  int64_t n = 0;
  Activation kind = Activation::kGeluErf;
};
// x and grad non-null when n > 0; grad equal to x or disjoint from it.
Status check(const ActivationBackwardArgs& a);
void activation_backward_f32_ref(const ActivationBackwardArgs& a);
void activation_backward_f32(const ActivationBackwardArgs& a);
void activation_backward_f32_avx2(const ActivationBackwardArgs& a);
// AVX-512 (kernels/cpu/train_avx512.cc): erf-GELU hand-vectorised through the epilogue GELU's fast erf
// (within 2.5e-7 of the exact derivative), the other kinds the portable loops.
void activation_backward_f32_avx512(const ActivationBackwardArgs& a);

// Backward of the embedding gather (the LayerNorm is done separately): the gradient of each token's
// summed embedding is scatter-added into the rows of the tables it came from. A null table gradient
// (or null ids) skips that table. Deterministic: parallel over columns, tokens in order.
struct EmbedBackwardArgs {
  const int32_t* input_ids = nullptr;    // [tokens]
  const int32_t* positions = nullptr;    // [tokens] or nullptr
  const int32_t* token_types = nullptr;  // [tokens] or nullptr (then row 0 of d_type gets every token)
  const float* d_out = nullptr;          // [tokens, width]
  float* d_word = nullptr;               // [vocab, width] +=
  float* d_position = nullptr;           // [max_pos, width] += or nullptr
  float* d_type = nullptr;               // [type_vocab, width] += or nullptr
  int64_t tokens = 0, width = 0;
};
// input_ids and d_out non-null when tokens*width > 0; the table gradients disjoint from d_out and the ids.
Status check(const EmbedBackwardArgs& a);
void embed_backward_f32_ref(const EmbedBackwardArgs& a);
void embed_backward_f32(const EmbedBackwardArgs& a);
void embed_backward_f32_avx2(const EmbedBackwardArgs& a);
void embed_backward_f32_avx512(const EmbedBackwardArgs& a);

// out[c] += sum_r x[r * ld + c]: the bias gradient of a linear layer (ld = 0 means cols).
struct ColumnSumArgs {
  const float* x = nullptr;
  float* out = nullptr;
  int64_t rows = 0, cols = 0, ld = 0;
};
// x and out non-null when rows*cols > 0; ld == 0 or ld >= cols; out disjoint from x.
Status check(const ColumnSumArgs& a);
void column_sum_f32_ref(const ColumnSumArgs& a);
void column_sum_f32(const ColumnSumArgs& a);
void column_sum_f32_avx2(const ColumnSumArgs& a);
void column_sum_f32_avx512(const ColumnSumArgs& a);

// A loss over some rows: the sum of the per-row losses and how many rows counted.
struct LossSum {
  double sum = 0;
  int64_t count = 0;
};

// Softmax cross-entropy over rows of logits [rows, classes] (row stride ld; 0 = classes) against
// integer targets; rows whose target == ignore_index are skipped (loss 0, gradient 0). A target
// outside [0, classes) that is not ignore_index is a caller error (the caller validates labels).
// If dlogits is set it receives (softmax(row) - onehot(target)) * grad_scale for counted rows and 0
// for ignored ones (same stride as logits). Log-sum-exp with the max subtracted.
struct CrossEntropyArgs {
  const float* logits = nullptr;
  const int32_t* targets = nullptr;  // [rows]
  float* dlogits = nullptr;          // [rows, classes] or nullptr
  int64_t rows = 0, classes = 0, ld = 0;
  int32_t ignore_index = -100;
  float grad_scale = 1.f;            // typically 1 / count, for a mean
};
// logits and targets non-null when rows*classes > 0; ld == 0 or ld >= classes; dlogits equal to logits
// or disjoint from it and from targets.
Status check(const CrossEntropyArgs& a);
LossSum cross_entropy_f32_ref(const CrossEntropyArgs& a);
LossSum cross_entropy_f32(const CrossEntropyArgs& a);
LossSum cross_entropy_f32_avx2(const CrossEntropyArgs& a);
LossSum cross_entropy_f32_avx512(const CrossEntropyArgs& a);

// Binary cross-entropy on logits (torch.nn.BCEWithLogitsLoss, numerically stable form) over the
// entries whose mask is nonzero (mask nullptr: all). dlogits (if set) = (sigmoid(x) - t) * grad_scale
// on counted entries, 0 elsewhere.
struct BceWithLogitsArgs {
  const float* logits = nullptr;   // [n]
  const float* targets = nullptr;  // [n], in [0, 1]
  const int32_t* mask = nullptr;   // [n] or nullptr
  float* dlogits = nullptr;        // [n] or nullptr
  int64_t n = 0;
  float grad_scale = 1.f;
};
// logits and targets non-null when n > 0; dlogits equal to logits or disjoint from the inputs.
Status check(const BceWithLogitsArgs& a);
LossSum bce_with_logits_f32_ref(const BceWithLogitsArgs& a);

// Mean squared error terms (pred - target)^2 over n entries; dpred (if set) = 2 (pred - target) * grad_scale.
struct MseArgs {
  const float* pred = nullptr;
  const float* target = nullptr;
  float* dpred = nullptr;
  int64_t n = 0;
  float grad_scale = 1.f;
};
// pred and target non-null when n > 0; dpred equal to pred or disjoint from the inputs.
Status check(const MseArgs& a);
LossSum mse_f32_ref(const MseArgs& a);

// Inverted dropout, in place: x[i] = keep(i) ? x[i] / (1 - p) : 0, where keep(i) is a counter-based
// hash of (seed, offset + i) compared with p: no mask is stored, the backward applies the same call
// (same seed and offset) to the gradient. p = 0 leaves x unchanged; p must be in [0, 1).
struct DropoutArgs {
  float* x = nullptr;  // x = drop(src), or drop(x) in place
  int64_t n = 0;
  float p = 0.f;
  uint64_t seed = 0;
  uint64_t offset = 0;
  const float* src = nullptr;  // [n], the input when it is not x (nullptr: in place); p = 0 copies it
};
// x non-null when n > 0; n >= 0; 0 <= p < 1; src null, x itself, or disjoint from x.
Status check(const DropoutArgs& a);
void dropout_f32_ref(const DropoutArgs& a);
void dropout_f32(const DropoutArgs& a);
void dropout_f32_avx512(const DropoutArgs& a);  // the same bits, 16 elements at a time (AVX512DQ)
// Whether element `index` survives (the hash both variants use; exposed for tests).
bool dropout_keep(uint64_t seed, uint64_t index, float p);

}  // namespace bert::kernels
