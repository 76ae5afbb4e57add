// Sentence pairs for BERT / ALBERT pre-training: NSP (next sentence or a random one) and SOP
// (two consecutive sentences in order or swapped), drawn afresh for each (seed, epoch).
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "bert/data.h"

namespace bert::data {

Result<std::vector<Example>> MakeSentencePairs(const std::vector<TextLine>& lines, const Tokenizer& tok, int max_seq,
                                               SentenceTask task, uint64_t seed, int epoch) {
  if (lines.empty()) return invalid_argument("no sentence pairs: there are no text lines");
  const bool sentence_order = task == SentenceTask::kSentenceOrder;
  std::mt19937_64 rng(seed * 0x9E3779B97F4A7C15ull + uint64_t(epoch) * 104729ull + 17);
  std::uniform_int_distribution<size_t> any(0, lines.size() - 1);
  std::vector<Example> out;
  for (size_t i = 0; i < lines.size(); ++i) {
    const bool has_next = i + 1 < lines.size() && lines[i + 1].doc == lines[i].doc;
    if (sentence_order && !has_next) continue;  // SOP needs two consecutive sentences
    const bool negative = !has_next || (rng() & 1);
    const std::string* a = &lines[i].text;
    const std::string* b = has_next ? &lines[i + 1].text : nullptr;
    if (negative) {
      if (sentence_order) std::swap(a, b);
      else b = &lines[any(rng)].text;
    }
    BERT_ASSIGN_OR_RETURN(Encoding enc, tok.Encode(*a, std::optional<std::string_view>(*b), max_seq));
    Example e;
    e.enc = std::move(enc);
    e.label = negative ? 1 : 0;
    out.push_back(std::move(e));
  }
  if (out.empty()) return format_error("no sentence pairs: the text needs documents of two or more lines");
  return out;
}

}  // namespace bert::data
