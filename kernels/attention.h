// Fused multi-head self-attention for inference, out = softmax(scale * Q K^T, key mask) V, without
// materialising the [seq, seq] scores: argument struct, check(), the reference and the CPU variants.
#pragma once

#include <cstdint>

#include "bert/status.h"

namespace bert::kernels {

// Q, K and V are row-major token rows [batch*seq, *] with row stride ld; head h reads its head_dim
// columns at h*head_dim. The engine's fused QKV buffer [tokens, 3H] is q = buf, k = buf + H,
// v = buf + 2H, ld = 3H; three separate [tokens, H] planes are ld = H.
//   P[b, h, i, :] = softmax_j(scale * q_i . k_j) over keys j with key_mask[b, j] != 0; masked keys get
//                   probability exactly 0; a sequence whose keys are ALL masked gives every query the
//                   uniform distribution 1/seq over all keys (what HF's additive finfo.min mask gives)
//   out[b*seq + i, h*head_dim + d] = sum_j P[b, h, i, j] * v[b*seq + j, h*head_dim + d]
// The same meaning as the engine's unfused path (two batched matmuls around softmax_masked).
struct AttentionArgs {
  const float* q = nullptr;         // [batch*seq, ld], head h at columns [h*head_dim, (h+1)*head_dim)
  const float* k = nullptr;         // same layout
  const float* v = nullptr;         // same layout
  const int32_t* key_mask = nullptr;  // [batch, seq]: nonzero = attend; nullptr = attend to all
  // Packed layout (padding removed): [batch + 1] prefix offsets; sequence b owns token rows
  // [seq_starts[b], seq_starts[b + 1]) and attends to exactly those rows (no key_mask); `seq` is then
  // the longest sequence. nullptr = padded layout: sequence b owns rows [b*seq, (b+1)*seq).
  const int32_t* seq_starts = nullptr;
  float* out = nullptr;             // [batch*seq, ldo], columns [0, heads*head_dim) written
  int64_t batch = 0, seq = 0, heads = 0, head_dim = 0;
  int64_t ld = 0;   // row stride of q, k, v in elements (0 means heads*head_dim)
  int64_t ldo = 0;  // row stride of out (0 means heads*head_dim)
  float scale = 1.f;  // typically 1/sqrt(head_dim)
};

// q, k, v, out non-null when there is work; sizes >= 0 and every addressed element representable in
// bytes; ld, ldo 0 or >= heads*head_dim; scale finite; out's rows disjoint from q, k, v and key_mask;
// not both key_mask and seq_starts. (Packed offsets are the caller's: non-decreasing, each length
// <= seq, the last row inside the buffers; check() does not read them, they may be device memory.)
Status check(const AttentionArgs& a);

// Scalar reference, double accumulation: the specification.
void attention_f32_ref(const AttentionArgs& a);
// Flash-style CPU kernels (kernels/cpu/attention_simd.h): per (batch, head, block of query rows), an
// online softmax over blocks of keys; no [seq, seq] buffer; OpenMP over (batch, head, query block),
// bit-identical for any thread count. head_dim <= kAttentionMaxHeadDim (the registry's supports()).
constexpr int64_t kAttentionMaxHeadDim = 256;
void attention_f32_avx2_flash(const AttentionArgs& a);
void attention_f32_avx512_flash(const AttentionArgs& a);
// The same schedule with both products on bf16 (kernels/cpu/attention_avx512bf16.cc): Q (scaled), K, V
// and the probabilities rounded to bf16, fp32 accumulation, softmax and output; what precision bf16 runs
// on the CPU. Needs AVX512_BF16: attention_bf16_supported() (also false under BERT_CPU_ISA below avx512).
bool attention_bf16_supported();
void attention_bf16_avx512bf16(const AttentionArgs& a);

}  // namespace bert::kernels
