// Fuzz target: the GLUE-style TSV reader (fields, labels, header detection) with a small
// tokenizer. The first byte picks the options; the rest is the file.
#include <cmath>

#include "bert/data.h"
#include "bert/tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const bert::Tokenizer tok =
      *bert::Tokenizer::FromVocab({"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "good", "bad", "movie", "##s"});
  if (size < 1) return 0;
  const uint8_t opt = data[0];
  bert::data::TsvOptions o;
  o.regression = opt & 1;
  o.header = opt & 2;
  o.detect_header = opt & 4;
  o.num_labels = 1 + ((opt >> 3) & 3);
  o.max_seq = 8 + (opt >> 5);
  auto r = bert::data::ParseTsv(std::string_view(reinterpret_cast<const char*>(data + 1), size - 1), "fuzz.tsv",
                                tok, o);
  if (!r.ok()) return 0;
  for (const auto& e : *r) {
    if (!o.regression && (e.label < 0 || e.label >= o.num_labels)) __builtin_trap();
    if (o.regression && !std::isfinite(e.target)) __builtin_trap();
  }
  (void)bert::data::ParseTextLines(std::string_view(reinterpret_cast<const char*>(data), size), "fuzz.txt", 0);
  return 0;
}
