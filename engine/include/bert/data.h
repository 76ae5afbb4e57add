// Training data as library code: GLUE-style TSV and raw-text readers, NSP / SOP sentence pairs for
// pre-training, BERT's dynamic MLM masking, and seeded shuffling into padded batches. Public header:
// no oneDNN or CUDA types; errors are Status / Result values naming the file and line; nothing throws.
//
//   auto train = bert::data::ReadTsv("train.tsv", tok, {.max_seq = 128, .num_labels = 2});
//   auto order = bert::data::ShuffledOrder(train->size(), seed, epoch);
//   bert::data::Batch b = bert::data::MakeBatch(*train, order, 0, 32, tok.pad_id());
//   auto labels = bert::data::MaskTokens(b, order, 0, tok, {.seed = seed, .epoch = epoch, .vocab_size = V});
//
// Every random choice is a pure function of (seed, epoch, example index), so a run that resumes at a
// batch reproduces what an uninterrupted run would have drawn there.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "bert/engine.h"
#include "bert/status.h"
#include "bert/tokenizer.h"

namespace bert::data {

// Transformers' ignore index: label of every token the MLM loss does not score.
inline constexpr int32_t kIgnoreIndex = -100;

// One training example: its encoding and a class label (or sentence-pair label), or a float target
// for a one-label regression model.
struct Example {
  Encoding enc;
  int32_t label = 0;
  float target = 0;
};

// ---- GLUE-style TSV -----------------------------------------------------------------------------

struct TsvOptions {
  int max_seq = 128;       // truncation length for Tokenizer::Encode (special tokens included)
  bool regression = false; // the label column is a float target, not a class id
  int64_t num_labels = 2;  // class ids must lie in [0, num_labels)
  int64_t limit = 0;       // stop after this many examples; 0 = all
  bool header = true;      // the first line is a header and is skipped
  // With header: skip the first line only when its label field is not a label (an integer class id,
  // or a number for regression), so a headerless file keeps its first example.
  bool detect_header = false;
};

// `sentence[<TAB>sentence2]<TAB>label` per line: a trailing '\r' is dropped, empty lines are skipped.
// Errors name `source:line` (1-based): a wrong number of fields, a label that is not an integer (or
// number), a class id outside 0..num_labels-1, a tokenizer failure. No examples at all is an error.
Result<std::vector<Example>> ParseTsv(std::string_view text, const std::string& source, const Tokenizer& tok,
                                      const TsvOptions& options);
// The same, read from a file (NotFound naming the path when it cannot be opened).
Result<std::vector<Example>> ReadTsv(const std::string& path, const Tokenizer& tok, const TsvOptions& options);

// ---- raw text (MLM and pre-training corpora) ----------------------------------------------------

// A non-empty line of text and the document it belongs to (documents are separated by blank lines,
// i.e. lines of only spaces, tabs and '\r'; their numbers grow by one per blank line).
struct TextLine {
  std::string text;
  int64_t doc = 0;
};

// The non-blank lines of `text` (trailing '\r' dropped), at most `limit` of them (0 = all).
// `source` names the text in the error for an input without any text line.
Result<std::vector<TextLine>> ParseTextLines(std::string_view text, const std::string& source, int64_t limit = 0);
Result<std::vector<TextLine>> ReadTextLines(const std::string& path, int64_t limit = 0);

// One example per line ([CLS] line [SEP], truncated to max_seq), label 0.
Result<std::vector<Example>> EncodeLines(const std::vector<TextLine>& lines, const Tokenizer& tok, int max_seq);

// ---- sentence pairs for pre-training --------------------------------------------------------------

enum class SentenceTask {
  kNextSentence,   // BERT's NSP: label 0 = B follows A in its document, 1 = B is a random sentence
  kSentenceOrder,  // ALBERT's SOP: label 0 = A, B in document order, 1 = the two swapped
};

// One pair per line i, drawn afresh for each (seed, epoch). NSP: when line i has a successor in its
// document, B is that successor or (probability 1/2) a uniformly random line of the corpus; a
// document's last line always gets a random B (label 1). SOP: only lines with a successor in their
// document make a pair; half of them (at random) are swapped. Pairs come out in line order, encoded
// as [CLS] A [SEP] B [SEP] truncated to max_seq. Error when no pair can be made.
Result<std::vector<Example>> MakeSentencePairs(const std::vector<TextLine>& lines, const Tokenizer& tok, int max_seq,
                                               SentenceTask task, uint64_t seed, int epoch);

// ---- batching -----------------------------------------------------------------------------------

// A padded batch of examples with their labels and targets, in batch order.
struct Batch {
  EncodedBatch enc;              // [batch, seq] ids, token types, attention mask
  std::vector<int32_t> labels;   // one per example
  std::vector<float> targets;    // one per example (regression)
  int batch = 0, seq = 0;
  // The engine's view of the batch; token types only when the model has them (DistilBERT: none).
  BatchInput input(bool with_token_types) const {
    return {batch, seq, enc.input_ids.data(), enc.attention_mask.data(),
            with_token_types ? enc.token_type_ids.data() : nullptr};
  }
};

// 0 .. n-1 shuffled with std::shuffle over a std::mt19937_64 seeded by (seed, epoch).
std::vector<int64_t> ShuffledOrder(size_t n, uint64_t seed, int epoch);

// examples[order[begin]] .. examples[order[end - 1]] padded with pad_id to the longest of them.
// InvalidArgument when the range is empty, reaches beyond `order`, or an index is outside `examples`.
Result<Batch> MakeBatch(const std::vector<Example>& examples, std::span<const int64_t> order, size_t begin, size_t end,
                        int32_t pad_id);

// ---- masked-LM masking --------------------------------------------------------------------------

struct MaskingOptions {
  uint64_t seed = 42;
  int epoch = 0;
  int64_t vocab_size = 0;          // random replacements are drawn from [0, vocab_size)
  double probability = 0.15;       // share of eligible tokens that are predicted
  double mask_fraction = 0.8;      // of those: replaced by [MASK] ...
  double random_fraction = 0.1;    // ... or by a random token; the rest stay as they are
};

// BERT's dynamic masking of a padded batch, in place. Row r is example order[begin + r]; its random
// stream is seeded by (seed, epoch, that example index) alone, so an example is masked the same way
// in whatever batch it lands. Padding (attention mask 0), [CLS], [SEP] and [PAD] are never chosen.
// Returns labels [batch * seq]: the original id where a token is predicted, kIgnoreIndex elsewhere.
// InvalidArgument for fractions outside [0, 1] (or mask + random > 1), vocab_size < 1, a tokenizer
// without [MASK], or an order range shorter than the batch.
Result<std::vector<int32_t>> MaskTokens(Batch& batch, std::span<const int64_t> order, size_t begin,
                                        const Tokenizer& tok, const MaskingOptions& options);

}  // namespace bert::data
