// bert_tokenize: tokenizes JSONL from stdin with a WordPiece vocab.txt, as HF BertTokenizer does.
// Input lines: {"text": "...", "text_pair"?: "..."}; output lines: {"input_ids": [...], "token_type_ids": [...]}.
// Blank input lines are skipped. Exit codes: 0 ok, 1 bad input (a vocab or input line, named on stderr), 2 usage.
#include <cerrno>
#include <cstdlib>
#include <iostream>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "bert/tokenizer.h"
#include "tools/common/cli.h"

int main(int argc, char** argv) {
  std::string vocab_path;
  bert::TokenizerOptions opts;
  int max_length = 0;
  bool no_lower_case = false;
  cli::Parser p("bert_tokenize", "bert_tokenize --vocab VOCAB.txt [--no-lower-case] [--max-length N] < in.jsonl > out.jsonl",
                "Reads JSONL {\"text\": ..., \"text_pair\"?: ...} from stdin and writes\n"
                "{\"input_ids\": [...], \"token_type_ids\": [...]} per line to stdout. Blank lines are skipped.");
  p.string("--vocab", &vocab_path, "FILE", "WordPiece vocab.txt (required)");
  p.flag("--no-lower-case", &no_lower_case, "keep case (cased models)");
  p.integer("--max-length", &max_length, 0, 1000000000, "truncate to N tokens, special tokens included (0: no truncation)");
  if (auto code = p.parse(argc, argv)) return *code;
  if (vocab_path.empty()) return p.usage_error("--vocab is required");
  opts.lower_case = !no_lower_case;
  auto tok = bert::Tokenizer::FromVocabFile(vocab_path, opts);
  if (!tok.ok()) return p.fail(tok.status().to_string());

  std::ios::sync_with_stdio(false);
  std::string line;
  size_t line_no = 0;
  while (std::getline(std::cin, line)) {
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") == std::string::npos) continue;
    nlohmann::json in;
    try {
      in = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception& e) {
      std::cerr << "bert_tokenize: line " << line_no << ": invalid JSON: " << e.what() << "\n";
      return 1;
    }
    if (!in.is_object() || !in.contains("text") || !in["text"].is_string()) {
      std::cerr << "bert_tokenize: line " << line_no << ": expected an object with a string \"text\" field\n";
      return 1;
    }
    std::optional<std::string> pair;
    if (in.contains("text_pair") && !in["text_pair"].is_null()) {
      if (!in["text_pair"].is_string()) {
        std::cerr << "bert_tokenize: line " << line_no << ": \"text_pair\" must be a string\n";
        return 1;
      }
      pair = in["text_pair"].get<std::string>();
    }
    const std::string text = in["text"].get<std::string>();
    auto enc = pair ? tok->Encode(text, std::string_view(*pair), max_length) : tok->Encode(text, std::nullopt, max_length);
    if (!enc.ok()) {
      std::cerr << "bert_tokenize: line " << line_no << ": " << enc.status().to_string() << "\n";
      return 1;
    }
    nlohmann::json out = nlohmann::json::object();
    out["input_ids"] = enc->input_ids;
    out["token_type_ids"] = enc->token_type_ids;
    std::cout << out.dump() << '\n';
  }
  std::cout.flush();
  if (!std::cout) {
    std::cerr << "bert_tokenize: write to stdout failed\n";
    return 1;
  }
  return 0;
}
