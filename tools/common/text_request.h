// One input of the text tools: a JSONL line {"text": ..., "text_pair"?: ..., "id"?: ...}
// (bert_tokenize, bert_run --text-file with JSON lines) or a plain line text[<TAB>pair]
// (bert_run --text-file). Shared so both tools, the tests and the fuzzer read lines the same way.
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>

#include "bert/status.h"

namespace cli {

struct TextRequest {
  std::string text;
  std::optional<std::string> pair;
  nlohmann::json id;  // null when the line has none; otherwise copied to the output line as is
};

// A JSON object with a string "text", an optional string (or null) "text_pair" and an optional
// "id" (a string or a number). Errors say what is wrong with the line (the caller adds its number).
bert::Result<TextRequest> ParseJsonRequest(std::string_view line);
// text, or text<TAB>pair (a trailing '\r' dropped; more than one TAB is an error).
bert::Result<TextRequest> ParsePlainRequest(std::string_view line);
// Whether a line is blank (only spaces, tabs, '\r'): skipped by the readers.
bool IsBlankLine(std::string_view line);

}  // namespace cli
