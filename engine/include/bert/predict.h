// Prediction post-processing as library code: a model's raw outputs -> plain structs (labels with
// probabilities, a QA answer span, top-k tokens per [MASK], per-token / per-word labels, ELECTRA's
// replaced-token flags, sentence embeddings), ready for a tool or a server to print or serialise.
// Public header; no oneDNN or CUDA types; errors are values naming the output and position.
//
// The low-level functions take one sequence's logits (hand-made ones in tests); Predict reads them
// from a Session after Run for one row of the batch.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>
#include <utility>
#include <set>
#include <span>
#include <string>
#include <vector>

#include "bert/engine.h"
#include "bert/status.h"
#include "bert/tokenizer.h"

namespace bert {

// Softmax accumulated in double. -inf logits get probability 0 (a row of only -inf is uniform, as
// the engine's fully masked attention rows are); NaN or +inf is an error naming `what`[index].
// An empty row is an error too.
Result<std::vector<double>> Softmax(std::span<const float> logits, const std::string& what = "logits");

// ---- sequence classification --------------------------------------------------------------------

struct LabelProbability {
  std::string label;
  double probability = 0;
};
struct ClassPrediction {
  int64_t label_id = 0;  // the most probable class; ties go to the lowest id
  std::string label;
  std::vector<LabelProbability> probabilities;  // one per class, in id order
};
// One row of logits [num_labels]; label names from id2label (missing names: "LABEL_<id>").
Result<ClassPrediction> ClassifySequence(std::span<const float> logits, const std::vector<std::string>& id2label);

// ---- token classification -----------------------------------------------------------------------

struct TokenLabel {
  int position = 0;
  std::string token;
  int64_t label_id = 0;
  std::string label;
  double score = 0;  // the label's probability
};
// logits [seq, num_labels] for the seq = tokens.size() tokens of one sequence (special tokens included).
Result<std::vector<TokenLabel>> ClassifyTokens(std::span<const float> logits, int64_t num_labels,
                                               const std::vector<std::string>& tokens,
                                               const std::vector<std::string>& id2label);

struct WordLabel {
  std::string word;              // the word pieces joined ("un", "##able" -> "unable")
  int first_token = 0, last_token = 0;
  int64_t label_id = 0;
  std::string label;
  double score = 0;
};
// Whole words from per-token labels: a word is a token and the "##" pieces after it; it takes its
// first piece's label (transformers' aggregation "first"). Tokens in `skip` (the special tokens) are
// left out and end the word before them.
std::vector<WordLabel> GroupWords(const std::vector<TokenLabel>& tokens,
                                  const std::set<std::string>& skip = {"[CLS]", "[SEP]", "[PAD]"});

// ---- question answering -------------------------------------------------------------------------

struct AnswerSpan {
  int start_token = 0, end_token = 0;  // inclusive, start <= end
  double score = 0;                    // softmax(start)[start] * softmax(end)[end] over the sequence
  std::string text;                    // the span's word pieces joined back
};
struct QaOptions {
  int max_answer_tokens = 30;  // end - start + 1 <= this
};
// The span maximising start_logit + end_logit (ties: the earliest start, then the earliest end)
// inside the context: the second segment (token type 1) when the encoding has one, else the text;
// [SEP], the first and last positions and padding (attention mask 0) are never in a span.
// The logits hold at least enc.input_ids.size() values; only those are read. InvalidArgument when no
// context token can start a span.
Result<AnswerSpan> BestAnswerSpan(std::span<const float> start_logits, std::span<const float> end_logits,
                                  const Encoding& enc, int32_t sep_id, const QaOptions& options = {});

// Word pieces tokens[begin, end) joined back into text ("un", "##able" -> "unable").
std::string JoinWordPieces(const std::vector<std::string>& tokens, size_t begin, size_t end);

// ---- masked LM ----------------------------------------------------------------------------------

struct TokenCandidate {
  int32_t id = 0;
  std::string token;  // "" for an id beyond the vocab
  double probability = 0;
};
struct MaskFill {
  int position = 0;
  std::vector<TokenCandidate> candidates;  // most probable first; ties: lower id first
};
// For each position whose input id is mask_id, the k most probable tokens (k is capped at
// vocab_size). logits [seq, vocab_size] for seq = input_ids.size(). No [MASK]: an empty list.
Result<std::vector<MaskFill>> TopTokensAtMasks(std::span<const float> logits, int64_t vocab_size,
                                               std::span<const int32_t> input_ids, int32_t mask_id, int k,
                                               const std::vector<std::string>& vocab);

// ---- ELECTRA discriminator ----------------------------------------------------------------------

struct ReplacedToken {
  int position = 0;
  std::string token;
  double replaced_probability = 0;  // sigmoid(logit)
  bool replaced = false;            // replaced_probability > threshold
};
Result<std::vector<ReplacedToken>> ReplacedTokens(std::span<const float> logits, const std::vector<std::string>& tokens,
                                                  double threshold = 0.5);

// ---- one sequence from a session ----------------------------------------------------------------

struct PredictOptions {
  int top_k = 5;
  QaOptions qa;
};

// Everything a model's head (and pooling) says about one sequence; the parts its head has are set.
// Where each word piece of `text` lies in it: [begin, end) byte offsets, one per piece, in order
// (`pieces` are the tokenizer's pieces of `text` alone, no special tokens; a prefix of them is
// fine, as after truncation). Matching ignores case, accents (with lower_case), whitespace and
// control characters, as the tokenizer does; "[UNK]" covers one word. nullopt when the pieces do
// not align with the text.
std::optional<std::vector<std::pair<size_t, size_t>>> AlignWordPieces(std::string_view text,
                                                                      const std::vector<std::string>& pieces,
                                                                      bool lower_case);

// An answer located in the original context string: byte offsets, character (code point) offsets
// as Python's str indexes them, and the answer text cut from the context (not word pieces joined).
struct AnswerInText {
  size_t start_byte = 0, end_byte = 0;
  int64_t start_char = 0, end_char = 0;  // [start, end)
  std::string text;
};
// `context` is the text the answer was taken from: the second segment of a pair encoding (the
// question-answering convention BestAnswerSpan follows), else the single text.
Result<AnswerInText> LocateAnswer(const AnswerSpan& answer, const Encoding& enc, std::string_view context,
                                  bool lower_case);

struct Prediction {
  std::string head;                 // ModelInfo::head
  std::vector<std::string> tokens;  // the encoding's tokens
  std::optional<ClassPrediction> classification;         // sequence_classification
  std::optional<std::vector<TokenLabel>> token_labels;   // token_classification
  std::optional<AnswerSpan> answer;                      // question_answering
  std::optional<std::vector<MaskFill>> masks;            // masked_lm, pretraining
  std::optional<double> is_next_probability;             // pretraining (NSP): P(B follows A)
  std::optional<double> in_order_probability;            // pretraining (ALBERT SOP): P(A, B in order)
  std::optional<std::vector<ReplacedToken>> replaced_tokens;  // discriminator
  std::optional<std::vector<float>> pooler_output;       // a bare model without pooling: its pooler
  std::optional<std::vector<float>> sentence_embedding;  // sessions with pooling
  std::string note;  // what is missing: "the text has no [MASK] token", ...
};

// Reads row `row` of the last Run of `session` (a session of `model`, run on a batch whose row `row`
// is `enc`, padded or not) and post-processes it for the model's head.
Result<Prediction> Predict(const Session& session, const Model& model, const Tokenizer& tok, const Encoding& enc,
                           int row = 0, const PredictOptions& options = {});

}  // namespace bert
