// Fused multi-head self-attention for TRAINING on the CUDA device (kernels/cuda/attention_train.cu), fp32,
// flash-attention style: the forward saves only the per-row log-sum-exp, the backward recomputes the
// probabilities from it, so no [seq, seq] matrix ever reaches global memory. Attention-probability dropout is
// regenerated from a seed (the hash of kernels/train.h's dropout_keep), never stored.
// Plain C++ (no CUDA types) so the engine's host code can include it.
//
// Semantics: those of the CPU trainer (engine/src/trainer.cc), per sequence b and head h:
//   P      = softmax_masked(scale * Q K^T)          (kernels/softmax_masked.h: a masked key gets probability 0;
//                                                    a query row whose keys are ALL masked is uniform, 1/seq)
//   P_used = dropout(P)                              (kernels/train.h: kept with probability 1 - p, scaled by
//                                                    1 / (1 - p); element (b, h, i, j) of the flat [batch,
//                                                    heads, seq, seq] tensor uses hash index
//                                                    dropout_offset + ((b*heads + h)*seq + i)*seq + j)
//   out    = P_used V
// and the backward, given dout:
//   dV = P_used^T dout,  dP = dropout(dout V^T) (same mask),  dS = scale * P * (dP - rowsum(dP * P)),
//   dQ = dS K,  dK = dS^T Q.
// rowsum(dP * P) for row i equals dout_i . out_i (also with dropout), which is what the backward uses.
#pragma once

#include <cstdint>

namespace bert::kernels::cuda {

// Every pointer is a device pointer. Padded layout: sequence b owns token rows [b*seq, (b+1)*seq) of q, k, v.
struct AttentionTrainArgs {
  const float* q = nullptr;  // rows of width >= heads*head_dim; head h of token row t at q[t*ld_qkv + h*head_dim + d]
  const float* k = nullptr;  // same layout as q
  const float* v = nullptr;  // same layout as q
  int64_t ld_qkv = 0;        // row stride (elements) of q, k, v (e.g. 3*hidden when they live in one QKV buffer)
  const int32_t* key_mask = nullptr;  // [batch, seq], nonzero = attend; nullptr = attend to every key
  int64_t batch = 0, seq = 0, heads = 0, head_dim = 0;
  float scale = 1.f;        // usually 1/sqrt(head_dim)
  float dropout_p = 0.f;    // probability of dropping an attention probability, in [0, 1); 0 = no dropout
  uint64_t dropout_seed = 0;
  uint64_t dropout_offset = 0;  // hash index of element (b, h, i, j): dropout_offset + ((b*heads+h)*seq+i)*seq+j
};

// out[t*ld_out + h*head_dim + d] = the context (must not overlap q, k, v); lse [batch, heads, seq] receives the
// fp32 log-sum-exp of the scaled masked scores of every query row, where a masked key's score is REPLACED by
// -1e30 (so an all-masked row's lse is about -1e30, the log(seq) term being below fp32 resolution; the
// backward recognises such rows from the key mask, not from lse). Columns of out beyond heads*head_dim are
// never written.
// Returns false (cuda_last_error() says why) on bad arguments, checked before any CUDA call: a null q / k / v /
// out / lse, head_dim outside 1..128, heads outside 1..65535, batch outside 0..65535, seq outside
// 0..2^31-1, ld_qkv or ld_out < heads*head_dim, dropout_p outside [0, 1); or when a launch fails.
// batch == 0 or seq == 0 is a no-op.
bool attention_train_forward(const AttentionTrainArgs& a, float* out, int64_t ld_out, float* lse,
                             void* stream = nullptr);

struct AttentionGradArgs {
  const float* out = nullptr;    // the forward's output, row stride ld_out
  int64_t ld_out = 0;
  const float* d_out = nullptr;  // dL/d(out), row stride ld_dout
  int64_t ld_dout = 0;
  float* dq = nullptr;           // dL/dq, dL/dk, dL/dv in the layout of q, k, v but with row stride ld_dqkv;
  float* dk = nullptr;           // WRITTEN (=), not accumulated; may share one buffer (e.g. a fused dQKV,
  float* dv = nullptr;           // ld_dqkv = 3*hidden) but must not overlap any input
  int64_t ld_dqkv = 0;
  const float* lse = nullptr;    // [batch, heads, seq] from attention_train_forward on the same args
  float* delta_workspace = nullptr;  // [batch, heads, seq] floats of scratch (receives rowsum(dout * out))
};

// The backward of attention_train_forward (same AttentionTrainArgs: same inputs, mask, scale and dropout seed /
// offset). Deterministic: no atomics, the same inputs give the same bits. Returns false (cuda_last_error() says
// why) on the forward's bad arguments, a null pointer in g, ld_out / ld_dout / ld_dqkv < heads*head_dim; or
// when a launch fails. batch == 0 or seq == 0 is a no-op.
bool attention_train_backward(const AttentionTrainArgs& a, const AttentionGradArgs& g, void* stream = nullptr);

}  // namespace bert::kernels::cuda
