// A Prediction (bert/predict.h) as JSON: the object bert_run's text mode prints and bert_serve's
// /v1/predict returns per input, so both always say the same thing. Internal header (nlohmann::json).
#pragma once

#include <nlohmann/json.hpp>

#include "bert/predict.h"

namespace bert::serve {

// Keys: tokens; label, label_id, probabilities (classification); entities (token labels); answer,
// start_token, end_token, score (QA); masks (top-k per [MASK]); is_next_probability /
// in_order_probability; tokens_replaced; pooler_output; sentence_embedding; note.
nlohmann::json PredictionJson(const Prediction& pr);

}  // namespace bert::serve
