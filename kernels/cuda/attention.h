// Fused multi-head self-attention on the CUDA device (kernels/cuda/attention.cu), flash-attention style: the
// [seq, seq] scores never reach global memory. Plain C++ (no CUDA types) so the engine's host code can include it.
#pragma once

#include <cstdint>

#include "kernels/cuda/device_types.h"

namespace bert::kernels::cuda {

struct AttentionArgs {
  const void* q = nullptr;  // rows of width >= heads*head_dim; head h of token row t at q[t*ld_qkv + h*head_dim + d]
  const void* k = nullptr;  // same layout as q
  const void* v = nullptr;  // same layout as q
  void* out = nullptr;      // out[t*ld_out + h*head_dim + d]; must not overlap q, k or v
  int64_t ld_qkv = 0;       // row stride (elements) of q, k, v (e.g. 3*hidden when they live in one fused QKV buffer)
  int64_t ld_out = 0;       // row stride of out
  // Packed layout (padding removed): device [batch + 1] prefix offsets; sequence b owns token rows
  // [seq_starts[b], seq_starts[b+1]) and attends to exactly those rows (no mask). nullptr = padded layout:
  // sequence b owns rows [b*seq, (b+1)*seq).
  const int32_t* seq_starts = nullptr;
  const int32_t* key_mask = nullptr;  // padded layout only: device [batch, seq], nonzero = attend; nullptr = all
  int64_t batch = 0, seq = 0;         // seq: the padded length, or in the packed layout the LONGEST sequence (grid size)
  int64_t heads = 0, head_dim = 0;
  float scale = 1.f;                  // usually 1/sqrt(head_dim)
  DType dtype = DType::kF32;            // element type of q, k, v and out
};

// out = softmax_masked(scale * Q K^T) V per (sequence, head), with the semantics of the CPU engine
// (kernels/softmax_masked.h): masked keys get probability exactly 0, and a query row whose keys are ALL masked
// gets the uniform distribution over all `seq` keys. Query rows at padded positions are computed like any other.
// In the packed layout sequences of length 0 are allowed (nothing is written for them). Out-of-range elements of
// out (row padding beyond heads*head_dim, rows of no sequence) are never written.
// fp16: Q K^T and P V on tensor cores with fp32 accumulation, P rounded to fp16, fp32 softmax statistics.
// fp32: CUDA-core FMAs in fp32 throughout (no TF32).
// Returns false (cuda_last_error() says why) on bad arguments, checked before any CUDA call: a null q / k / v /
// out, head_dim outside 1..128, heads outside 1..65535, batch outside 0..65535, seq < 0, ld_qkv or ld_out
// < heads*head_dim, key_mask together with seq_starts; or when the launch fails. batch == 0 or seq == 0 is a no-op.
bool attention(const AttentionArgs& a, void* stream = nullptr);

}  // namespace bert::kernels::cuda
