// Reading, joining and splitting WordPiece vocabularies (see vocab.h).
#include "weights/vocab.h"

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <unordered_map>

#include "weights/mapped_file.h"  // check_regular_file

namespace bert {
namespace {

// Strict UTF-8 check (no overlongs, no surrogates, nothing above U+10FFFF), as Python's decoder.
bool valid_utf8(std::string_view s) {
  size_t i = 0, n = s.size();
  while (i < n) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) { ++i; continue; }
    int len;
    uint32_t cp;
    if (c >= 0xC2 && c <= 0xDF) { len = 2; cp = c & 0x1F; }
    else if (c >= 0xE0 && c <= 0xEF) { len = 3; cp = c & 0x0F; }
    else if (c >= 0xF0 && c <= 0xF4) { len = 4; cp = c & 0x07; }
    else return false;
    if (i + len > n) return false;
    for (int k = 1; k < len; ++k) {
      unsigned char cc = static_cast<unsigned char>(s[i + k]);
      if ((cc & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (cc & 0x3F);
    }
    if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10FFFF))) return false;
    if (cp >= 0xD800 && cp <= 0xDFFF) return false;
    i += len;
  }
  return true;
}

// Checks a token list; `what` prefixes messages; line numbers in messages are 1-based.
Status check_tokens(const std::vector<std::string>& tokens, const std::string& what) {
  if (tokens.empty()) return format_error(what + ": empty vocabulary (no tokens)");
  std::unordered_map<std::string_view, size_t> seen;
  seen.reserve(tokens.size() * 2);
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (!valid_utf8(tokens[i]))
      return format_error(what + ": line " + std::to_string(i + 1) + " is not valid UTF-8");
    auto [it, inserted] = seen.emplace(tokens[i], i);
    if (!inserted)
      return format_error(what + ": duplicate token '" + tokens[i] + "' on line " +
                          std::to_string(i + 1) + " (first on line " + std::to_string(it->second + 1) +
                          ")");
  }
  return Status::Ok();
}

}  // namespace

Result<std::vector<std::string>> read_vocab_file(const std::string& path) {
  const std::string what = "vocab file '" + path + "'";
  if (Status st = check_regular_file(path, "vocab file (vocab.txt)"); !st.ok()) {
    if (st.code() == ErrorCode::kNotFound) return not_found(what + ": no such file");
    return st;
  }
  std::ifstream f(path, std::ios::binary);
  if (!f) {
    int err = errno;
    if (err == ENOENT) return not_found(what + ": no such file");
    return io_error(what + ": cannot open: " + std::strerror(err));
  }
  std::stringstream ss;
  ss << f.rdbuf();
  if (f.bad()) return io_error(what + ": read failed");
  const std::string data = ss.str();

  std::vector<std::string> tokens;
  std::string cur;
  bool pending = false;  // characters seen since the last terminator
  for (size_t i = 0; i < data.size(); ++i) {
    char c = data[i];
    if (c == '\n' || c == '\r') {
      if (c == '\r' && i + 1 < data.size() && data[i + 1] == '\n') ++i;
      tokens.push_back(std::move(cur));
      cur.clear();
      pending = false;
    } else {
      cur.push_back(c);
      pending = true;
    }
  }
  if (pending) tokens.push_back(std::move(cur));
  // One empty line is not a vocabulary: it would be stored in a model file as "" and read back as
  // none (found by fuzz/fuzz_vocab.cc).
  if (tokens.size() == 1 && tokens[0].empty()) return format_error(what + ": empty vocabulary (one empty line)");
  BERT_RETURN_IF_ERROR(check_tokens(tokens, what));
  return tokens;
}

std::string join_vocab(const std::vector<std::string>& tokens) {
  std::string out;
  size_t total = 0;
  for (const auto& t : tokens) total += t.size() + 1;
  out.reserve(total);
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (i) out.push_back('\n');
    out += tokens[i];
  }
  return out;
}

Result<std::vector<std::string>> split_vocab(std::string_view joined) {
  std::vector<std::string> tokens;
  if (!joined.empty()) {
    size_t start = 0;
    while (true) {
      size_t nl = joined.find('\n', start);
      if (nl == std::string_view::npos) {
        tokens.emplace_back(joined.substr(start));
        break;
      }
      tokens.emplace_back(joined.substr(start, nl - start));
      start = nl + 1;
    }
  }
  BERT_RETURN_IF_ERROR(check_tokens(tokens, "embedded vocabulary"));
  return tokens;
}

}  // namespace bert
