// The prediction JSON shared by bert_run's text mode and bert_serve (see prediction_json.h).
#include "engine/serve/prediction_json.h"

namespace bert::serve {

nlohmann::json PredictionJson(const Prediction& pr) {
  nlohmann::json j;
  j["tokens"] = pr.tokens;
  if (pr.classification) {
    j["label"] = pr.classification->label;
    j["label_id"] = pr.classification->label_id;
    for (const LabelProbability& p : pr.classification->probabilities) j["probabilities"][p.label] = p.probability;
  }
  if (pr.token_labels) {  // by word ("##" pieces joined, the first piece's label), without [CLS]/[SEP]
    j["entities"] = nlohmann::json::array();
    for (const WordLabel& w : GroupWords(*pr.token_labels))
      j["entities"].push_back({{"word", w.word}, {"label", w.label}, {"score", w.score},
                               {"first_token", w.first_token}, {"last_token", w.last_token}});
  }
  if (pr.answer) {
    j["answer"] = pr.answer->text;
    j["start_token"] = pr.answer->start_token;
    j["end_token"] = pr.answer->end_token;
    j["score"] = pr.answer->score;
  }
  if (pr.masks) {
    j["masks"] = nlohmann::json::array();
    for (const MaskFill& m : *pr.masks) {
      nlohmann::json top = nlohmann::json::array();
      for (const TokenCandidate& c : m.candidates)
        top.push_back({{"token", c.token}, {"id", c.id}, {"probability", c.probability}});
      j["masks"].push_back({{"position", m.position}, {"top5", top}});
    }
  }
  if (pr.in_order_probability) j["in_order_probability"] = *pr.in_order_probability;
  if (pr.is_next_probability) j["is_next_probability"] = *pr.is_next_probability;
  if (pr.replaced_tokens)
    for (const ReplacedToken& t : *pr.replaced_tokens)
      j["tokens_replaced"].push_back({{"token", t.token}, {"replaced_probability", t.replaced_probability}});
  if (pr.pooler_output) j["pooler_output"] = *pr.pooler_output;
  if (pr.sentence_embedding) j["sentence_embedding"] = *pr.sentence_embedding;
  if (!pr.note.empty()) j["note"] = pr.note;
  return j;
}

void AddAnswerOffsets(nlohmann::json& j, const Prediction& pr, const Encoding& enc, const std::string& text,
                      const std::optional<std::string>& pair, bool lower_case) {
  if (!pr.answer) return;
  auto located = LocateAnswer(*pr.answer, enc, pair ? *pair : text, lower_case);
  if (!located.ok()) {
    j["note"] = "answer offsets unavailable (" + located.status().message() + "); the answer is its word pieces";
    return;
  }
  j["answer"] = located->text;
  j["start"] = located->start_char;
  j["end"] = located->end_char;
}

}  // namespace bert::serve
