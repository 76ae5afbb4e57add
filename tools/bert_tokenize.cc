// bert_tokenize: tokenizes JSONL from stdin with a WordPiece vocab.txt, as HF BertTokenizer does.
// Input lines: {"text": "...", "text_pair"?: "...", "id"?: ...}; output lines: {"input_ids": [...],
// "token_type_ids": [...], "attention_mask": [...], "id"?: ...}; --pad-to N pads, --safetensors OUT
// also writes the batch for bert_run --inputs.
// Blank input lines are skipped. Exit codes: 0 ok, 1 bad input (a vocab or input line, named on stderr), 2 usage.
#include <algorithm>
#include <iostream>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "bert/tokenizer.h"
#include "bert/tensors_file.h"
#include "tools/common/cli.h"
#include "tools/common/text_request.h"

int main(int argc, char** argv) {
  std::string vocab_path, safetensors_path;
  bert::TokenizerOptions opts;
  int max_length = 0, pad_to = 0;
  bool no_lower_case = false;
  cli::Parser p("bert_tokenize",
                "bert_tokenize --vocab VOCAB.txt [--no-lower-case] [--max-length N] [--pad-to N]\n"
                "              [--safetensors OUT] < in.jsonl > out.jsonl",
                "Reads JSONL {\"text\": ..., \"text_pair\"?: ..., \"id\"?: ...} from stdin and writes one line\n"
                "{\"input_ids\": [...], \"token_type_ids\": [...], \"attention_mask\": [...], \"id\"?: ...} per\n"
                "input to stdout (the id passed through). Blank lines are skipped. --safetensors also writes\n"
                "input_ids, attention_mask and token_type_ids [batch, seq] (int32, padded to the longest or to\n"
                "--pad-to) that bert_run --inputs reads directly.");
  p.string("--vocab", &vocab_path, "FILE", "WordPiece vocab.txt (required)");
  p.flag("--no-lower-case", &no_lower_case, "keep case (cased models)");
  p.integer("--max-length", &max_length, 0, 1000000000, "truncate to N tokens, special tokens included (0: no truncation)");
  p.integer("--pad-to", &pad_to, 0, 1000000000,
            "pad every output to N tokens with [PAD] and attention_mask 0; longer inputs are truncated to N (0: no padding)");
  p.string("--safetensors", &safetensors_path, "OUT", "also write the batch as a safetensors file for bert_run --inputs");
  if (auto code = p.parse(argc, argv)) return *code;
  if (vocab_path.empty()) return p.usage_error("--vocab is required");
  opts.lower_case = !no_lower_case;
  if (pad_to > 0 && (max_length == 0 || max_length > pad_to)) max_length = pad_to;
  auto tok = bert::Tokenizer::FromVocabFile(vocab_path, opts);
  if (!tok.ok()) return p.fail(tok.status().to_string());
  const int32_t pad_id = static_cast<int32_t>(tok->pad_id());

  std::ios::sync_with_stdio(false);
  std::vector<bert::Encoding> all;  // --safetensors: every encoding, in input order
  std::string line;
  size_t line_no = 0;
  while (std::getline(std::cin, line)) {
    ++line_no;
    if (cli::IsBlankLine(line)) continue;
    auto req = cli::ParseJsonRequest(line);
    if (!req.ok()) return p.fail("line " + std::to_string(line_no) + ": " + req.status().message());
    auto enc = tok->Encode(req->text, req->pair ? std::optional<std::string_view>(*req->pair) : std::nullopt,
                           max_length);
    if (!enc.ok()) return p.fail("line " + std::to_string(line_no) + ": " + enc.status().to_string());
    std::vector<int32_t> ids = enc->input_ids, types = enc->token_type_ids, mask = enc->attention_mask;
    for (size_t i = ids.size(); i < static_cast<size_t>(pad_to); ++i)
      ids.push_back(pad_id), types.push_back(0), mask.push_back(0);
    nlohmann::json out = nlohmann::json::object();
    out["input_ids"] = ids;
    out["token_type_ids"] = types;
    out["attention_mask"] = mask;
    if (!req->id.is_null()) out["id"] = req->id;
    std::cout << out.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << '\n';
    if (!safetensors_path.empty()) all.push_back(std::move(*enc));
  }
  std::cout.flush();
  if (!std::cout) return p.fail("write to stdout failed");
  if (!safetensors_path.empty()) {
    if (all.empty()) return p.fail("no input lines: nothing to write to " + safetensors_path);
    bert::EncodedBatch b = bert::pad_batch(all, pad_id);
    const int seq = std::max(b.seq, pad_to);
    if (seq > b.seq) {  // widen each row to --pad-to
      bert::EncodedBatch w;
      w.batch = b.batch, w.seq = seq;
      for (int r = 0; r < b.batch; ++r)
        for (int c = 0; c < seq; ++c) {
          const bool in = c < b.seq;
          const size_t at = static_cast<size_t>(r) * b.seq + c;
          w.input_ids.push_back(in ? b.input_ids[at] : pad_id);
          w.token_type_ids.push_back(in ? b.token_type_ids[at] : 0);
          w.attention_mask.push_back(in ? b.attention_mask[at] : 0);
        }
      b = std::move(w);
    }
    const std::vector<int64_t> shape{b.batch, b.seq};
    std::vector<std::pair<std::string, bert::HostTensor>> tensors;
    for (auto [name, values] : {std::pair{"input_ids", &b.input_ids}, {"attention_mask", &b.attention_mask},
                                {"token_type_ids", &b.token_type_ids}}) {
      auto t = bert::Int32Tensor(*values, shape);
      if (!t.ok()) return p.fail(t.status().to_string());
      tensors.emplace_back(name, std::move(*t));
    }
    if (bert::Status st = bert::WriteTensorsFile(safetensors_path, tensors, {{"producer", "bert_tokenize"}}); !st.ok())
      return p.fail(st.to_string());
  }
  return 0;
}
