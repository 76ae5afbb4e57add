// Fuzz target: the text tools' input lines (bert_tokenize's JSONL, bert_run --text-file's plain
// and JSON lines): tools/common/text_request.h.
#include "tools/common/text_request.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view line(reinterpret_cast<const char*>(data), size);
  auto j = cli::ParseJsonRequest(line);
  if (j.ok() && !j->id.is_null() && !j->id.is_string() && !j->id.is_number()) __builtin_trap();
  (void)cli::ParsePlainRequest(line);
  (void)cli::IsBlankLine(line);
  return 0;
}
