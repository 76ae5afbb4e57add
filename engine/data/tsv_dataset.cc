// GLUE-style TSV datasets (`sentence[<TAB>sentence2]<TAB>label` after a header line) and raw-text
// corpora (one text per line, blank lines between documents), read into tokenized examples.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "bert/data.h"
#include "weights/mapped_file.h"  // check_regular_file

namespace bert::data {
namespace {

// Feeds `text` line by line (split on '\n'; a last line without one counts, as std::getline does)
// until `line_fn` returns false or fails.
template <typename Fn>
Status for_each_line(std::string_view text, Fn&& line_fn) {
  size_t start = 0;
  while (start < text.size()) {
    size_t nl = text.find('\n', start);
    if (nl == std::string_view::npos) nl = text.size();
    bool more = true;
    BERT_RETURN_IF_ERROR(line_fn(std::string(text.substr(start, nl - start)), &more));
    if (!more) break;
    start = nl + 1;
  }
  return Status();
}

// The same over a file, without reading it whole first.
template <typename Fn>
Status for_each_file_line(std::ifstream& f, Fn&& line_fn) {
  std::string line;
  while (std::getline(f, line)) {
    bool more = true;
    BERT_RETURN_IF_ERROR(line_fn(std::move(line), &more));
    if (!more) break;
  }
  return Status();
}

// One TSV line at a time: header skipping, field splitting, label parsing and tokenization.
class TsvReader {
 public:
  TsvReader(const std::string& source, const Tokenizer& tok, const TsvOptions& options)
      : source_(source), tok_(tok), options_(options) {}

  Status line(std::string line, bool* more) {
    ++line_no_;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line_no_ == 1 && options_.header && !(options_.detect_header && looks_like_example(line))) return Status();
    if (line.empty()) return Status();
    std::vector<std::string> cols;
    size_t start = 0;
    for (size_t tab; (tab = line.find('\t', start)) != std::string::npos; start = tab + 1)
      cols.push_back(line.substr(start, tab - start));
    cols.push_back(line.substr(start));
    const std::string where = source_ + ":" + std::to_string(line_no_);
    if (cols.size() != 2 && cols.size() != 3)
      return format_error(where + ": expected sentence[<TAB>sentence2]<TAB>label, got " +
                          std::to_string(cols.size()) + " tab-separated fields");
    Example e;
    const std::string& label = cols.back();
    char* end = nullptr;
    if (options_.regression) {
      e.target = std::strtof(label.c_str(), &end);
      if (!label.empty() && *end == '\0' && !std::isfinite(e.target))
        return format_error(where + ": label '" + label + "' is not a finite number");
    } else {
      const long v = std::strtol(label.c_str(), &end, 10);
      if (v < 0 || v >= options_.num_labels)
        return format_error(where + ": label " + label + " is outside 0.." + std::to_string(options_.num_labels - 1) +
                            " (the model's num_labels)");
      e.label = static_cast<int32_t>(v);
    }
    if (label.empty() || *end != '\0')
      return format_error(where + ": label '" + label + "' is not " +
                          (options_.regression ? "a number" : "an integer"));
    auto enc = tok_.Encode(cols[0], cols.size() == 3 ? std::optional<std::string_view>(cols[1]) : std::nullopt,
                           options_.max_seq);
    if (!enc.ok()) return enc.status().with_context(where);
    e.enc = std::move(*enc);
    out_.push_back(std::move(e));
    if (options_.limit > 0 && static_cast<int64_t>(out_.size()) >= options_.limit) *more = false;
    return Status();
  }

  // Whether a first line is an example rather than a header: 2 or 3 fields and a label field that
  // parses as a label (a class id in range, or a finite number for regression).
  bool looks_like_example(const std::string& line) const {
    const size_t tabs = static_cast<size_t>(std::count(line.begin(), line.end(), '\t'));
    if (tabs != 1 && tabs != 2) return false;
    const std::string label = line.substr(line.rfind('\t') + 1);
    if (label.empty()) return false;
    char* end = nullptr;
    if (options_.regression) {
      const float v = std::strtof(label.c_str(), &end);
      return *end == '\0' && std::isfinite(v);
    }
    const long v = std::strtol(label.c_str(), &end, 10);
    return *end == '\0' && v >= 0 && v < options_.num_labels;
  }

  Result<std::vector<Example>> finish() {
    if (out_.empty()) return format_error(source_ + ": no examples");
    return std::move(out_);
  }

 private:
  const std::string& source_;
  const Tokenizer& tok_;
  const TsvOptions& options_;
  int64_t line_no_ = 0;
  std::vector<Example> out_;
};

Status check_tsv_options(const std::string& source, const TsvOptions& o) {
  if (!o.regression && o.num_labels < 1)
    return invalid_argument(source + ": num_labels is " + std::to_string(o.num_labels) + "; a classifier needs 1 or more");
  if (o.max_seq < 0) return invalid_argument(source + ": max_seq " + std::to_string(o.max_seq) + " is negative");
  return Status();
}

// Blank-line separated documents of non-blank lines.
class TextLineReader {
 public:
  explicit TextLineReader(int64_t limit) : limit_(limit) {}
  Status line(std::string line, bool* more) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) {
      ++doc_;
      return Status();
    }
    if (!line.empty() && line.back() == '\r') line.pop_back();
    out_.push_back({std::move(line), doc_});
    if (limit_ > 0 && static_cast<int64_t>(out_.size()) >= limit_) *more = false;
    return Status();
  }
  Result<std::vector<TextLine>> finish(const std::string& source) {
    if (out_.empty()) return format_error(source + ": no text lines");
    return std::move(out_);
  }

 private:
  int64_t limit_;
  int64_t doc_ = 0;
  std::vector<TextLine> out_;
};

}  // namespace

Result<std::vector<Example>> ParseTsv(std::string_view text, const std::string& source, const Tokenizer& tok,
                                      const TsvOptions& options) {
  BERT_RETURN_IF_ERROR(check_tsv_options(source, options));
  TsvReader reader(source, tok, options);
  BERT_RETURN_IF_ERROR(for_each_line(text, [&](std::string l, bool* more) { return reader.line(std::move(l), more); }));
  return reader.finish();
}

Result<std::vector<Example>> ReadTsv(const std::string& path, const Tokenizer& tok, const TsvOptions& options) {
  BERT_RETURN_IF_ERROR(check_tsv_options(path, options));
  BERT_RETURN_IF_ERROR(check_regular_file(path, "text file"));
  std::ifstream f(path);
  if (!f) return not_found(path + ": cannot open");
  TsvReader reader(path, tok, options);
  BERT_RETURN_IF_ERROR(for_each_file_line(f, [&](std::string l, bool* more) { return reader.line(std::move(l), more); }));
  return reader.finish();
}

Result<std::vector<TextLine>> ParseTextLines(std::string_view text, const std::string& source, int64_t limit) {
  TextLineReader reader(limit);
  BERT_RETURN_IF_ERROR(for_each_line(text, [&](std::string l, bool* more) { return reader.line(std::move(l), more); }));
  return reader.finish(source);
}

Result<std::vector<TextLine>> ReadTextLines(const std::string& path, int64_t limit) {
  BERT_RETURN_IF_ERROR(check_regular_file(path, "text file"));
  std::ifstream f(path);
  if (!f) return not_found(path + ": cannot open");
  TextLineReader reader(limit);
  BERT_RETURN_IF_ERROR(for_each_file_line(f, [&](std::string l, bool* more) { return reader.line(std::move(l), more); }));
  return reader.finish(path);
}

Result<std::vector<Example>> EncodeLines(const std::vector<TextLine>& lines, const Tokenizer& tok, int max_seq) {
  std::vector<Example> out;
  out.reserve(lines.size());
  for (const TextLine& l : lines) {
    BERT_ASSIGN_OR_RETURN(Encoding enc, tok.Encode(l.text, std::nullopt, max_seq));
    out.push_back({std::move(enc)});
  }
  return out;
}

}  // namespace bert::data
