// Fuzz target: the WordPiece tokenizer on arbitrary bytes. The first byte picks the options
// (lower case, a text pair after the first NUL, max_length); the rest is the text.
#include <cstring>

#include "bert/tokenizer.h"

namespace {
std::vector<std::string> vocab() {
  std::vector<std::string> v = {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "un", "##able",
                                "play", "##ing", "é", "ca", "##fé", "中", "文", ".", ",", "!", "'", "##'"};
  for (char c = 'a'; c <= 'z'; ++c) v.push_back(std::string(1, c)), v.push_back("##" + std::string(1, c));
  return v;
}
bert::Tokenizer make(bool lower) {
  auto t = bert::Tokenizer::FromVocab(vocab(), {.lower_case = lower});
  if (!t.ok()) __builtin_trap();  // the harness's own vocab must be valid
  return *t;
}
const bert::Tokenizer& tokenizer(bool lower) {
  static const bert::Tokenizer lower_tok = make(true);
  static const bert::Tokenizer cased_tok = make(false);
  return lower ? lower_tok : cased_tok;
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const uint8_t opt = data[0];
  std::string_view text(reinterpret_cast<const char*>(data + 1), size - 1);
  std::optional<std::string_view> pair;
  if (opt & 2) {
    if (const size_t nul = text.find('\0'); nul != std::string_view::npos) {
      pair = text.substr(nul + 1);
      text = text.substr(0, nul);
    }
  }
  const int max_length = (opt >> 2) & 1 ? (opt >> 3) : 0;
  auto enc = tokenizer(opt & 1).Encode(text, pair, max_length);
  if (!enc.ok()) return 0;
  if (enc->input_ids.size() != enc->tokens.size() || enc->input_ids.size() != enc->token_type_ids.size())
    __builtin_trap();
  if (max_length > 0 && enc->input_ids.size() > static_cast<size_t>(std::max(max_length, 3))) __builtin_trap();
  return 0;
}
