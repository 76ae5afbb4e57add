// Embedding lookup (word + position + token type) fused with the embedding LayerNorm: argument struct and variants.
#pragma once

#include <cstdint>

#include "bert/status.h"

namespace bert::kernels {

struct EmbedArgs {
  const int32_t* input_ids;     // [tokens]
  const int32_t* positions;     // [tokens] or nullptr (no position table)
  const int32_t* token_types;   // [tokens] or nullptr (use row 0 of type_table if it exists)
  const float* word_table;      // [vocab, width]
  const float* position_table;  // [max_pos, width] or nullptr
  const float* type_table;      // [type_vocab, width] or nullptr
  const float* gamma;           // [width] or nullptr: no LayerNorm, just the sum
  const float* beta;            // [width]
  float* out;                   // [tokens, width]
  int64_t tokens = 0, width = 0;
  float eps = 1e-12f;
};

// input_ids, word_table, out non-null when tokens*width > 0; sizes >= 0 and representable; gamma and
// beta both given or both null; out disjoint from the id arrays and from gamma / beta. (Table heights
// are not in the struct: ids are the caller's to validate.)
Status check(const EmbedArgs& a);

// out[t] = LN(word[ids[t]] + pos[positions[t]] + type[types[t]]); ids are validated by the caller.
// A position row is added only when both positions and position_table are given.
void embed_f32_ref(const EmbedArgs& a);
void embed_f32_avx2(const EmbedArgs& a);
void embed_f32_avx512(const EmbedArgs& a);

}  // namespace bert::kernels
