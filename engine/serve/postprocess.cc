// Prediction post-processing (bert/predict.h): softmax over logits, class labels, token labels and
// words, the best QA span, top-k tokens per [MASK], ELECTRA's replaced tokens, and Predict, which
// reads one sequence's outputs from a session and applies the model's head.
#include <algorithm>
#include <cctype>
#include <cmath>
#include <numeric>
#include <string>
#include <vector>

#include "bert/predict.h"

#include <utf8proc.h>

namespace bert {
namespace {

std::string label_name(const std::vector<std::string>& id2label, int64_t id) {
  return id >= 0 && id < static_cast<int64_t>(id2label.size()) ? id2label[id] : "LABEL_" + std::to_string(id);
}

// Index of the largest value; ties go to the first.
int64_t argmax(const std::vector<double>& p) { return std::max_element(p.begin(), p.end()) - p.begin(); }

Status need_values(std::span<const float> x, size_t n, const std::string& what, const std::string& shape) {
  if (x.size() < n)
    return invalid_argument(what + ": " + std::to_string(x.size()) + " values, fewer than the " + std::to_string(n) +
                            " of " + shape);
  return Status();
}

// One row [row * stride, (row + 1) * stride) of an output.
Result<std::span<const float>> output_row(const Session& session, const std::string& name, int row) {
  BERT_ASSIGN_OR_RETURN(OutputView v, session.Output(name));
  if (v.shape.empty() || v.shape[0] < 1 || !v.data)
    return internal_error("output '" + name + "' has no rows");
  if (row < 0 || row >= v.shape[0])
    return out_of_range("row " + std::to_string(row) + " is outside output '" + name + "' of " +
                        std::to_string(v.shape[0]) + " rows");
  const int64_t stride = v.numel() / v.shape[0];
  return std::span<const float>(v.data + row * stride, static_cast<size_t>(stride));
}

// A prediction is never printed from non-finite values (JSON would show them as null).
Status check_finite_values(std::span<const float> x, const std::string& what) {
  for (size_t i = 0; i < x.size(); ++i)
    if (!std::isfinite(x[i]))
      return invalid_argument(what + "[" + std::to_string(i) + "] is " +
                              (std::isnan(x[i]) ? "NaN" : x[i] > 0 ? "+inf" : "-inf") +
                              ": no prediction from non-finite scores (are the weights finite?)");
  return Status();
}

}  // namespace

Result<std::vector<double>> Softmax(std::span<const float> x, const std::string& what) {
  if (x.empty()) return invalid_argument(what + ": no values to take a softmax of");
  for (size_t i = 0; i < x.size(); ++i)
    if (std::isnan(x[i]) || x[i] == INFINITY)
      return invalid_argument(what + "[" + std::to_string(i) + "] is " + (std::isnan(x[i]) ? "NaN" : "+inf"));
  const double mx = *std::max_element(x.begin(), x.end());
  std::vector<double> p(x.size());
  if (mx == -INFINITY) {  // every entry masked out: uniform
    std::fill(p.begin(), p.end(), 1.0 / double(x.size()));
    return p;
  }
  double sum = 0;
  for (size_t i = 0; i < x.size(); ++i) sum += p[i] = std::exp(double(x[i]) - mx);
  for (auto& v : p) v /= sum;
  return p;
}

Result<ClassPrediction> ClassifySequence(std::span<const float> logits, const std::vector<std::string>& id2label) {
  // A head's logits are never masked: any -inf (or NaN / +inf) comes from non-finite weights.
  BERT_RETURN_IF_ERROR(check_finite_values(logits, "logits"));
  BERT_ASSIGN_OR_RETURN(std::vector<double> p, Softmax(logits, "logits"));
  ClassPrediction c;
  c.label_id = argmax(p);
  c.label = label_name(id2label, c.label_id);
  for (size_t i = 0; i < p.size(); ++i) c.probabilities.push_back({label_name(id2label, int64_t(i)), p[i]});
  return c;
}

Result<std::vector<TokenLabel>> ClassifyTokens(std::span<const float> logits, int64_t num_labels,
                                               const std::vector<std::string>& tokens,
                                               const std::vector<std::string>& id2label) {
  if (num_labels < 1) return invalid_argument("token classification: num_labels " + std::to_string(num_labels) + " < 1");
  BERT_RETURN_IF_ERROR(need_values(logits, tokens.size() * size_t(num_labels), "logits",
                                   std::to_string(tokens.size()) + " tokens x " + std::to_string(num_labels) + " labels"));
  BERT_RETURN_IF_ERROR(check_finite_values(logits.first(tokens.size() * size_t(num_labels)), "logits"));
  std::vector<TokenLabel> out;
  for (size_t s = 0; s < tokens.size(); ++s) {
    BERT_ASSIGN_OR_RETURN(std::vector<double> p,
                          Softmax(logits.subspan(s * num_labels, num_labels), "logits[" + std::to_string(s) + "]"));
    const int64_t best = argmax(p);
    out.push_back({static_cast<int>(s), tokens[s], best, label_name(id2label, best), p[best]});
  }
  return out;
}

std::vector<WordLabel> GroupWords(const std::vector<TokenLabel>& tokens, const std::set<std::string>& skip) {
  std::vector<WordLabel> words;
  bool open = false;  // the last word may take more "##" pieces
  for (const TokenLabel& t : tokens) {
    if (skip.count(t.token)) {
      open = false;
      continue;
    }
    if (open && t.token.rfind("##", 0) == 0) {
      words.back().word += t.token.substr(2);
      words.back().last_token = t.position;
      continue;
    }
    // A word starts here (a stray "##" piece with nothing before it keeps its text as is).
    words.push_back({t.token, t.position, t.position, t.label_id, t.label, t.score});
    open = true;
  }
  return words;
}

std::string JoinWordPieces(const std::vector<std::string>& tokens, size_t begin, size_t end) {
  std::string s;
  for (size_t i = begin; i < end && i < tokens.size(); ++i) {
    const std::string& t = tokens[i];
    if (t.rfind("##", 0) == 0) s += t.substr(2);
    else s += (s.empty() ? "" : " ") + t;
  }
  return s;
}

Result<AnswerSpan> BestAnswerSpan(std::span<const float> start_logits, std::span<const float> end_logits,
                                  const Encoding& enc, int32_t sep_id, const QaOptions& options) {
  const int seq = static_cast<int>(enc.input_ids.size());
  if (enc.token_type_ids.size() != enc.input_ids.size())
    return invalid_argument("question answering: the encoding has " + std::to_string(enc.token_type_ids.size()) +
                            " token types for " + std::to_string(seq) + " ids");
  if (options.max_answer_tokens < 1)
    return invalid_argument("question answering: max_answer_tokens " + std::to_string(options.max_answer_tokens) +
                            " < 1");
  BERT_RETURN_IF_ERROR(need_values(start_logits, seq, "start_logits", std::to_string(seq) + " tokens"));
  BERT_RETURN_IF_ERROR(need_values(end_logits, seq, "end_logits", std::to_string(seq) + " tokens"));
  const bool has_pair = std::find(enc.token_type_ids.begin(), enc.token_type_ids.end(), 1) != enc.token_type_ids.end();
  const int32_t ctx_type = has_pair ? 1 : 0;
  auto in_context = [&](int s) {
    const bool masked = enc.attention_mask.size() == enc.input_ids.size() && !enc.attention_mask[s];
    return !masked && enc.token_type_ids[s] == ctx_type && enc.input_ids[s] != sep_id;
  };
  double best = -INFINITY;
  int bs = -1, be = -1;
  for (int s = 1; s < seq - 1; ++s) {
    if (!in_context(s)) continue;
    for (int e = s; e < std::min(seq - 1, s + options.max_answer_tokens); ++e) {
      if (!in_context(e)) break;
      const double score = double(start_logits[s]) + double(end_logits[e]);
      if (score > best || bs < 0) best = score, bs = s, be = e;
    }
  }
  if (bs < 0) return invalid_argument("no context tokens to take an answer from");
  BERT_ASSIGN_OR_RETURN(std::vector<double> ps, Softmax(start_logits.first(seq), "start_logits"));
  BERT_ASSIGN_OR_RETURN(std::vector<double> pe, Softmax(end_logits.first(seq), "end_logits"));
  AnswerSpan a;
  a.start_token = bs, a.end_token = be;
  a.score = ps[bs] * pe[be];
  a.text = JoinWordPieces(enc.tokens, bs, be + 1);
  return a;
}

Result<std::vector<MaskFill>> TopTokensAtMasks(std::span<const float> logits, int64_t vocab_size,
                                               std::span<const int32_t> input_ids, int32_t mask_id, int k,
                                               const std::vector<std::string>& vocab) {
  if (vocab_size < 1) return invalid_argument("masked LM: vocab_size " + std::to_string(vocab_size) + " < 1");
  if (k < 1) return invalid_argument("masked LM: top-k needs k >= 1, not " + std::to_string(k));
  BERT_RETURN_IF_ERROR(need_values(logits, input_ids.size() * size_t(vocab_size), "prediction logits",
                                   std::to_string(input_ids.size()) + " tokens x vocab " + std::to_string(vocab_size)));
  const size_t top = std::min<size_t>(size_t(k), size_t(vocab_size));
  std::vector<MaskFill> out;
  std::vector<int32_t> order(static_cast<size_t>(vocab_size));
  for (size_t s = 0; s < input_ids.size(); ++s) {
    if (input_ids[s] != mask_id) continue;
    BERT_ASSIGN_OR_RETURN(std::vector<double> p, Softmax(logits.subspan(s * vocab_size, vocab_size),
                                                         "prediction logits[" + std::to_string(s) + "]"));
    std::iota(order.begin(), order.end(), 0);
    std::partial_sort(order.begin(), order.begin() + top, order.end(),
                      [&](int32_t a, int32_t b) { return p[a] > p[b] || (p[a] == p[b] && a < b); });
    MaskFill f;
    f.position = static_cast<int>(s);
    for (size_t r = 0; r < top; ++r) {
      const int32_t id = order[r];
      f.candidates.push_back({id, id < static_cast<int64_t>(vocab.size()) ? vocab[id] : std::string(), p[id]});
    }
    out.push_back(std::move(f));
  }
  return out;
}

Result<std::vector<ReplacedToken>> ReplacedTokens(std::span<const float> logits, const std::vector<std::string>& tokens,
                                                  double threshold) {
  BERT_RETURN_IF_ERROR(need_values(logits, tokens.size(), "logits", std::to_string(tokens.size()) + " tokens"));
  std::vector<ReplacedToken> out;
  for (size_t s = 0; s < tokens.size(); ++s) {
    if (std::isnan(logits[s])) return invalid_argument("logits[" + std::to_string(s) + "] is NaN");
    const double p = 1.0 / (1.0 + std::exp(-double(logits[s])));
    out.push_back({static_cast<int>(s), tokens[s], p, p > threshold});
  }
  return out;
}

Result<Prediction> Predict(const Session& session, const Model& model, const Tokenizer& tok, const Encoding& enc,
                           int row, const PredictOptions& options) {
  const ModelInfo& info = model.info();
  Prediction pr;
  pr.head = info.head;
  pr.tokens = enc.tokens;
  const size_t seq = enc.input_ids.size();
  if (enc.tokens.size() != seq)
    return invalid_argument("the encoding has " + std::to_string(enc.tokens.size()) + " token strings for " +
                            std::to_string(seq) + " ids");
  // The row and the encoding must fit the last run ([batch, seq, hidden] states).
  BERT_ASSIGN_OR_RETURN(OutputView states, session.Output("last_hidden_state"));
  if (row < 0 || states.shape.size() != 3 || row >= states.shape[0])
    return out_of_range("row " + std::to_string(row) + " is outside the last run's batch of " +
                        std::to_string(states.shape.empty() ? 0 : states.shape[0]));
  if (static_cast<int64_t>(seq) > states.shape[1])
    return invalid_argument("the encoding has " + std::to_string(seq) + " tokens; the last run's sequences have " +
                            std::to_string(states.shape[1]));
  auto out = [&](const char* name) { return output_row(session, name, row); };
  if (info.head == "sequence_classification") {
    BERT_ASSIGN_OR_RETURN(auto logits, out("logits"));
    BERT_ASSIGN_OR_RETURN(pr.classification, ClassifySequence(logits.first(std::min<size_t>(logits.size(), info.num_labels)),
                                                              info.labels));
  } else if (info.head == "token_classification") {
    BERT_ASSIGN_OR_RETURN(auto logits, out("logits"));
    BERT_ASSIGN_OR_RETURN(pr.token_labels, ClassifyTokens(logits, info.num_labels, enc.tokens, info.labels));
  } else if (info.head == "question_answering") {
    BERT_ASSIGN_OR_RETURN(auto st, out("start_logits"));
    BERT_ASSIGN_OR_RETURN(auto en, out("end_logits"));
    BERT_ASSIGN_OR_RETURN(pr.answer, BestAnswerSpan(st, en, enc, tok.sep_id(), options.qa));
  } else if (info.head == "masked_lm" || info.head == "pretraining") {
    BERT_ASSIGN_OR_RETURN(auto logits, out(info.head == "masked_lm" ? "logits" : "prediction_logits"));
    BERT_ASSIGN_OR_RETURN(pr.masks, TopTokensAtMasks(logits, info.vocab_size, enc.input_ids, tok.mask_id(),
                                                     options.top_k, model.vocab()));
    if (pr.masks->empty()) pr.note = "the text has no [MASK] token";
    if (info.head == "pretraining") {
      const bool sop = info.family == "albert";  // sentence order: label 0 = in order
      BERT_ASSIGN_OR_RETURN(auto rel, out(sop ? "sop_logits" : "seq_relationship_logits"));
      BERT_ASSIGN_OR_RETURN(std::vector<double> p, Softmax(rel.first(std::min<size_t>(rel.size(), 2)),
                                                           sop ? "sop_logits" : "seq_relationship_logits"));
      (sop ? pr.in_order_probability : pr.is_next_probability) = p[0];
    }
  } else if (info.head == "discriminator") {
    BERT_ASSIGN_OR_RETURN(auto logits, out("logits"));
    BERT_ASSIGN_OR_RETURN(pr.replaced_tokens, ReplacedTokens(logits, enc.tokens));
  } else if (session.options().pooling == Pooling::kNone) {
    if (auto pooled = out("pooler_output"); pooled.ok()) {
      BERT_RETURN_IF_ERROR(check_finite_values(*pooled, "pooler_output"));
      pr.pooler_output = std::vector<float>(pooled->begin(), pooled->end());
    } else
      pr.note = "this model has no head or pooler; use --pooling cls|mean|max for a sentence embedding";
  }
  if (session.options().pooling != Pooling::kNone) {
    BERT_ASSIGN_OR_RETURN(auto e, out("sentence_embedding"));
    BERT_RETURN_IF_ERROR(check_finite_values(e, "sentence_embedding"));
    pr.sentence_embedding = std::vector<float>(e.begin(), e.end());
  }
  return pr;
}

// ---- answers in the original text ----------------------------------------------------------------

namespace {

// One code point of the original text: its bytes [begin, end).
struct SourceChar {
  char32_t cp;
  size_t begin, end;
};

std::vector<SourceChar> decode(std::string_view text) {
  std::vector<SourceChar> out;
  const auto* p = reinterpret_cast<const utf8proc_uint8_t*>(text.data());
  for (size_t i = 0; i < text.size();) {
    utf8proc_int32_t cp = 0;
    utf8proc_ssize_t n = utf8proc_iterate(p + i, static_cast<utf8proc_ssize_t>(text.size() - i), &cp);
    if (n <= 0) cp = 0xFFFD, n = 1;  // an invalid byte: the tokenizer drops it as U+FFFD
    out.push_back({static_cast<char32_t>(cp), i, i + static_cast<size_t>(n)});
    i += static_cast<size_t>(n);
  }
  return out;
}

// The comparison form of one code point: lowercased (with lower_case), decomposed, accents dropped
// (with lower_case); nothing for whitespace, controls and U+FFFD.
void fold(char32_t cp, bool lower_case, std::u32string& out) {
  if (cp == 0 || cp == 0xFFFD) return;
  const utf8proc_category_t cat = utf8proc_category(static_cast<utf8proc_int32_t>(cp));
  if (cp == U' ' || cp == U'\t' || cp == U'\n' || cp == U'\r' || cat == UTF8PROC_CATEGORY_ZS ||
      cat == UTF8PROC_CATEGORY_ZL || cat == UTF8PROC_CATEGORY_ZP || cat == UTF8PROC_CATEGORY_CC ||
      cat == UTF8PROC_CATEGORY_CF || cat == UTF8PROC_CATEGORY_CN || cat == UTF8PROC_CATEGORY_CO ||
      cat == UTF8PROC_CATEGORY_CS)
    return;
  utf8proc_int32_t c = static_cast<utf8proc_int32_t>(cp);
  if (lower_case) c = utf8proc_tolower(c);
  utf8proc_int32_t buf[16];
  int last = 0;
  const utf8proc_ssize_t n = utf8proc_decompose_char(c, buf, 16, UTF8PROC_DECOMPOSE, &last);
  if (n <= 0 || n > 16) {
    out.push_back(static_cast<char32_t>(c));
    return;
  }
  for (utf8proc_ssize_t k = 0; k < n; ++k) {
    if (lower_case && utf8proc_category(buf[k]) == UTF8PROC_CATEGORY_MN) continue;
    out.push_back(static_cast<char32_t>(lower_case ? utf8proc_tolower(buf[k]) : buf[k]));
  }
}

bool is_word_break(char32_t cp) {
  const utf8proc_category_t cat = utf8proc_category(static_cast<utf8proc_int32_t>(cp));
  return cp == U' ' || cp == U'\t' || cp == U'\n' || cp == U'\r' || cat == UTF8PROC_CATEGORY_ZS ||
         (cat >= UTF8PROC_CATEGORY_PC && cat <= UTF8PROC_CATEGORY_PO) ||
         (cp < 128 && std::ispunct(static_cast<int>(cp)));
}

}  // namespace

std::optional<std::vector<std::pair<size_t, size_t>>> AlignWordPieces(std::string_view text,
                                                                      const std::vector<std::string>& pieces,
                                                                      bool lower_case) {
  const std::vector<SourceChar> src = decode(text);
  // The folded stream, each folded code point with the index of its source character.
  std::u32string folded;
  std::vector<size_t> from;
  for (size_t i = 0; i < src.size(); ++i) {
    const size_t before = folded.size();
    fold(src[i].cp, lower_case, folded);
    from.resize(folded.size(), i);
    (void)before;
  }
  std::vector<std::pair<size_t, size_t>> out;
  size_t at = 0;  // position in `folded`
  for (const std::string& piece : pieces) {
    if (at >= folded.size()) return std::nullopt;
    const size_t first = at;
    if (piece == "[UNK]") {  // one word: up to the next break in the source (at least one character)
      size_t i = from[at];
      do {
        ++at;
      } while (at < folded.size() && from[at] == i);
      while (at < folded.size()) {
        const size_t j = from[at];
        if (is_word_break(src[j].cp) || is_word_break(src[j - 1].cp)) break;
        while (at < folded.size() && from[at] == j) ++at;
      }
    } else {
      const std::string_view body = std::string_view(piece).substr(piece.rfind("##", 0) == 0 ? 2 : 0);
      std::u32string want;
      for (const SourceChar& c : decode(body)) fold(c.cp, lower_case, want);
      if (want.empty() || folded.compare(at, want.size(), want) != 0) return std::nullopt;
      at += want.size();
    }
    out.emplace_back(src[from[first]].begin, src[from[at - 1]].end);
  }
  return out;
}

Result<AnswerInText> LocateAnswer(const AnswerSpan& answer, const Encoding& enc, std::string_view context,
                                  bool lower_case) {
  const bool pair = std::find(enc.token_type_ids.begin(), enc.token_type_ids.end(), 1) != enc.token_type_ids.end();
  const int32_t ctx_type = pair ? 1 : 0;
  std::vector<std::string> pieces;
  std::vector<int> index_of(enc.tokens.size(), -1);  // token position -> index in `pieces`
  for (size_t s = 0; s < enc.tokens.size(); ++s) {
    const std::string& t = enc.tokens[s];
    if (enc.token_type_ids[s] != ctx_type || t == "[CLS]" || t == "[SEP]" || t == "[PAD]") continue;
    index_of[s] = static_cast<int>(pieces.size());
    pieces.push_back(t);
  }
  if (answer.start_token < 0 || answer.end_token < answer.start_token ||
      static_cast<size_t>(answer.end_token) >= enc.tokens.size() || index_of[answer.start_token] < 0 ||
      index_of[answer.end_token] < 0)
    return invalid_argument("the answer's tokens " + std::to_string(answer.start_token) + ".." +
                            std::to_string(answer.end_token) + " are not in the context");
  auto offsets = AlignWordPieces(context, pieces, lower_case);
  if (!offsets) return invalid_argument("the context's word pieces do not align with the context text");
  AnswerInText a;
  a.start_byte = (*offsets)[index_of[answer.start_token]].first;
  a.end_byte = (*offsets)[index_of[answer.end_token]].second;
  a.text = std::string(context.substr(a.start_byte, a.end_byte - a.start_byte));
  a.start_char = static_cast<int64_t>(decode(context.substr(0, a.start_byte)).size());
  a.end_char = a.start_char + static_cast<int64_t>(decode(a.text).size());
  return a;
}

}  // namespace bert
