// A Prediction (bert/predict.h) as JSON: the object bert_run's text mode prints and bert_serve's
// /v1/predict returns per input, so both always say the same thing. Internal header (nlohmann::json).
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "bert/predict.h"
#include "bert/tokenizer.h"

namespace bert::serve {

// Keys: tokens; label, label_id, probabilities (classification); entities (token labels); answer,
// start_token, end_token, score (QA); masks (top-k per [MASK]); is_next_probability /
// in_order_probability; tokens_replaced; pooler_output; sentence_embedding; note.
nlohmann::json PredictionJson(const Prediction& pr);

// Question answering: the answer cut from the original context (`pair` when given, else `text`)
// with its character offsets "start" / "end", instead of word pieces joined by spaces (a note says
// why when the offsets cannot be found).
void AddAnswerOffsets(nlohmann::json& j, const Prediction& pr, const Encoding& enc, const std::string& text,
                      const std::optional<std::string>& pair, bool lower_case);

}  // namespace bert::serve
