// BERT WordPiece tokenizer, reproducing HuggingFace transformers' slow BertTokenizer
// (BasicTokenizer + WordpieceTokenizer, special-token handling of PreTrainedTokenizer.tokenize,
// [CLS] A [SEP] (B [SEP]) post-processing and truncation). Public, app-facing header.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "bert/status.h"

namespace bert {

struct TokenizerOptions {
  // Lowercase (Python str.lower) and strip accents (NFD, drop Mn), as HF do_lower_case=True with
  // strip_accents=None. false = cased: neither lowercasing nor accent stripping.
  bool lower_case = true;
  // Put spaces around CJK ideographs (HF tokenize_chinese_chars).
  bool tokenize_chinese_chars = true;
};

// One encoded sequence: [CLS] a [SEP] or [CLS] a [SEP] b [SEP].
struct Encoding {
  std::vector<int32_t> input_ids;
  std::vector<int32_t> token_type_ids;  // 0 for [CLS] a [SEP], 1 for b [SEP]
  std::vector<int32_t> attention_mask;  // all 1 (padding is added by pad_batch)
  std::vector<std::string> tokens;      // the token strings, special tokens included
};

class Tokenizer {
 public:
  // Reads vocab.txt (see weights/vocab.h for the exact rules) and builds the tokenizer.
  static Result<Tokenizer> FromVocabFile(const std::string& vocab_path, TokenizerOptions opts = {});
  // vocab[i] is the token of id i. [CLS], [SEP], [UNK] and [PAD] must be present
  // (InvalidArgument otherwise); [MASK] is optional. Duplicate tokens are an error.
  static Result<Tokenizer> FromVocab(std::vector<std::string> vocab, TokenizerOptions opts = {});

  // [CLS] a [SEP] (b [SEP]). max_length 0 = no truncation; otherwise special tokens count in
  // max_length and the word pieces are truncated like HF truncation=True: from the tail for a
  // single text, "longest_first" for a pair (one token at a time from the longer side, from the
  // pair's side on ties). InvalidArgument if max_length < 0 or too small for the special tokens
  // (2 for a single text, 3 for a pair).
  // Text is UTF-8; invalid bytes are decoded as U+FFFD, which the tokenizer then drops (as HF
  // drops U+FFFD), so invalid input never fails or crashes.
  Result<Encoding> Encode(std::string_view text, std::optional<std::string_view> text_pair = std::nullopt,
                          int max_length = 0) const;

  // Word pieces of one text, without special tokens added (special-token strings that occur in
  // the text, e.g. "[MASK]", come out as one token, as in HF).
  std::vector<std::string> Tokenize(std::string_view text) const;

  std::optional<int32_t> TokenToId(std::string_view token) const;
  // The token of an id; for an id outside [0, vocab_size()) a reference to a static empty string.
  const std::string& IdToToken(int32_t id) const;

  int32_t cls_id() const;
  int32_t sep_id() const;
  int32_t pad_id() const;
  int32_t unk_id() const;
  int32_t mask_id() const;  // -1 when the vocab has no [MASK]
  size_t vocab_size() const;
  // The vocabulary in id order (e.g. to embed it in a model file with join_vocab).
  const std::vector<std::string>& vocab() const;
  const TokenizerOptions& options() const;

 private:
  struct Impl;
  explicit Tokenizer(std::shared_ptr<const Impl> impl) : impl_(std::move(impl)) {}
  std::shared_ptr<const Impl> impl_;  // immutable; copies share it, Encode is thread-safe
};

// A batch padded to its longest encoding: row-major [batch, seq], pad_id and attention_mask 0 and
// token_type_id 0 on padding. An empty input gives batch = seq = 0.
struct EncodedBatch {
  int batch = 0, seq = 0;
  std::vector<int32_t> input_ids, token_type_ids, attention_mask;
};
EncodedBatch pad_batch(const std::vector<Encoding>& encodings, int32_t pad_id);

}  // namespace bert
