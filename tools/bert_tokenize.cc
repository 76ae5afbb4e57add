// bert_tokenize: tokenizes JSONL from stdin with a WordPiece vocab.txt, as HF BertTokenizer does.
// Input lines: {"text": "...", "text_pair"?: "..."}; output lines: {"input_ids": [...], "token_type_ids": [...]}.
// Blank input lines are skipped. Exit codes: 0 ok, 1 bad input line (named on stderr), 2 usage/vocab.
#include <cerrno>
#include <cstdlib>
#include <iostream>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "bert/tokenizer.h"

namespace {

void usage(std::ostream& os) {
  os << "usage: bert_tokenize --vocab VOCAB.txt [--no-lower-case] [--max-length N]\n"
        "  reads JSONL {\"text\": ..., \"text_pair\"?: ...} from stdin and writes\n"
        "  {\"input_ids\": [...], \"token_type_ids\": [...]} per line to stdout.\n"
        "  --max-length N  truncate to N tokens, special tokens included (0 = no truncation)\n";
}

bool parse_int(const std::string& s, int& out) {
  if (s.empty()) return false;
  char* end = nullptr;
  errno = 0;
  long v = std::strtol(s.c_str(), &end, 10);
  if (errno != 0 || *end != '\0' || v < 0 || v > 1000000000L) return false;
  out = static_cast<int>(v);
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  std::string vocab_path;
  bert::TokenizerOptions opts;
  int max_length = 0;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    auto value = [&](const std::string& flag) -> std::optional<std::string> {
      if (arg == flag) {
        if (i + 1 >= argc) return std::nullopt;
        return std::string(argv[++i]);
      }
      return std::string(arg.substr(flag.size() + 1));  // --flag=value
    };
    if (arg == "-h" || arg == "--help") {
      usage(std::cout);
      return 0;
    } else if (arg == "--vocab" || arg.rfind("--vocab=", 0) == 0) {
      auto v = value("--vocab");
      if (!v || v->empty()) {
        std::cerr << "bert_tokenize: --vocab needs a path\n";
        usage(std::cerr);
        return 2;
      }
      vocab_path = *v;
    } else if (arg == "--max-length" || arg.rfind("--max-length=", 0) == 0) {
      auto v = value("--max-length");
      if (!v || !parse_int(*v, max_length)) {
        std::cerr << "bert_tokenize: --max-length needs a non-negative integer\n";
        usage(std::cerr);
        return 2;
      }
    } else if (arg == "--no-lower-case") {
      opts.lower_case = false;
    } else {
      std::cerr << "bert_tokenize: unknown argument '" << arg << "'\n";
      usage(std::cerr);
      return 2;
    }
  }
  if (vocab_path.empty()) {
    std::cerr << "bert_tokenize: --vocab is required\n";
    usage(std::cerr);
    return 2;
  }
  auto tok = bert::Tokenizer::FromVocabFile(vocab_path, opts);
  if (!tok.ok()) {
    std::cerr << "bert_tokenize: " << tok.status().to_string() << "\n";
    return 2;
  }

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
