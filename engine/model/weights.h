// The model's parameters as the network reads them: one pointer per tensor, laid out per layer and
// head, on whichever backend holds them (host memory on the CPU, device memory on CUDA). Trainers bind
// a second BertWeights of the same shape to the gradients. Filled by bind_weights from a name lookup.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "bert/status.h"
#include "kernels/activation.h"
#include "kernels/gemm.h"
#include "weights/model_config.h"

namespace bert {

// One linear layer: y = x W^T + b, W [N, K / groups] (grouped: SqueezeBERT), optionally packed.
struct Linear {
  const float* w = nullptr;
  const float* b = nullptr;
  int64_t N = 0, K = 0, groups = 1;
  const kernels::PackedWeights* packed = nullptr;  // the same weights in oneDNN's blocked layout (CPU)
  explicit operator bool() const { return w != nullptr; }
};

struct LayerNormWeights {
  const float* gamma = nullptr;
  const float* beta = nullptr;
};

struct LayerWeights {
  Linear qkv;      // Q | K | V fused, [3H, H] (when no linear is grouped)
  Linear q, k, v;  // separate, when grouped
  Linear out;      // attention output [H, H]
  LayerNormWeights attn_ln;
  Linear ffn_in;   // [I, H]
  Linear ffn_out;  // [H, I]
  LayerNormWeights ffn_ln;
};

struct BertWeights {
  const float* word = nullptr;        // [V, E]
  const float* position = nullptr;    // [P, E]
  const float* token_type = nullptr;  // [T, E], or null (no token types)
  LayerNormWeights emb_ln;            // [E]
  Linear emb_project;                 // E -> H, or unset
  std::vector<LayerWeights> layers;   // num_layer_weights sets
  Linear pooler;                      // [H, H], or unset
  // Heads (unset when absent).
  Linear pre_classifier;  // first-token classifiers' dense [H, H]
  Linear classifier;      // [num_labels, H]
  Linear qa;              // [2, H]
  Linear mlm_transform;   // [E, H]
  LayerNormWeights mlm_ln;
  Linear mlm_decoder;     // [V, E]: embeddings.word when tied
  Linear nsp;             // [2, H]: NSP or SOP
  Linear disc_dense;      // ELECTRA discriminator [H, H]
  Linear disc_out;        // [1, H]
};

// Points `w` at the tensors `lookup` returns for each engine name (null: absent). The tied MLM
// decoder falls back to embeddings.word. Fails naming the first required tensor that is missing.
Status bind_weights(const ModelConfig& config, const std::function<const float*(const std::string&)>& lookup,
                    BertWeights& w);

// The kernels' activation for a config's hidden_act (and classifier / MLM activations).
kernels::Activation to_activation(HiddenAct a);

// Position ids of a [batch, seq] batch: 0, 1, 2, ... or RoBERTa's pad + 1 + index among non-pad tokens
// (pad tokens get pad_token_id), as transformers makes them from input_ids.
void compute_position_ids(const ModelConfig& config, const int32_t* input_ids, int64_t batch, int64_t seq,
                          int32_t* positions);

}  // namespace bert
