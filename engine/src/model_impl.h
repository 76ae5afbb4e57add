// Internal view of a loaded model: its description and F32 weight pointers laid out per layer.
#pragma once

#include <memory>
#include <vector>

#include "bert/engine.h"
#include "kernels/cpu/dispatch.h"
#include "kernels/gemm.h"
#include "weights/model_file.h"

namespace bert {

struct LayerWeights {
  const float* qkv_w;  // [3H, H]
  const float* qkv_b;  // [3H]
  const float* out_w;  // [H, H]
  const float* out_b;
  const float* attn_ln_g;
  const float* attn_ln_b;
  const float* ffn_in_w;   // [I, H]
  const float* ffn_in_b;   // [I]
  const float* ffn_out_w;  // [H, I]
  const float* ffn_out_b;
  const float* ffn_ln_g;
  const float* ffn_ln_b;
  // The four GEMM weights packed once for oneDNN's fast path (null: use the plain layout).
  const kernels::PackedWeights* qkv_p = nullptr;
  const kernels::PackedWeights* out_p = nullptr;
  const kernels::PackedWeights* ffn_in_p = nullptr;
  const kernels::PackedWeights* ffn_out_p = nullptr;
};

struct BertWeights {
  const float* word;        // [V, H]
  const float* position;    // [P, H]
  const float* token_type;  // [T, H]
  const float* emb_ln_g;
  const float* emb_ln_b;
  std::vector<LayerWeights> layers;
  const float* pooler_w = nullptr;  // [H, H]
  const float* pooler_b = nullptr;
  // Heads (null when absent).
  const float* classifier_w = nullptr;  // [num_labels, H]
  const float* classifier_b = nullptr;
  const float* qa_w = nullptr;  // [2, H]
  const float* qa_b = nullptr;
  const float* mlm_transform_w = nullptr;  // [H, H]
  const float* mlm_transform_b = nullptr;
  const float* mlm_ln_g = nullptr;
  const float* mlm_ln_b = nullptr;
  const float* mlm_decoder_w = nullptr;  // [V, H]: embeddings.word when tied
  const float* mlm_decoder_b = nullptr;  // [V]
  const kernels::PackedWeights* mlm_decoder_p = nullptr;
  const float* nsp_w = nullptr;          // [2, H]
  const float* nsp_b = nullptr;
};

struct Model::Impl {
  ModelSource source;  // config, vocab, tensors (keeps mmaps alive)
  ModelInfo info;
  std::unique_ptr<float[]> arena;  // F32 copies of weights stored as F16/BF16 (one allocation)
  TensorMap f32;                   // every tensor as F32 (zero copy where the file held F32)
  BertWeights w;
  std::vector<kernels::PackedWeightsPtr> packed;  // owns the packed copies the pointers above use
  const kernels::CpuKernels* kernels = nullptr;
};

// Builds a model from a source already in memory (synthetic weights, a converted checkpoint).
Result<std::shared_ptr<const Model>> load_model_from_source(ModelSource source, const LoadOptions& options = {});

}  // namespace bert
