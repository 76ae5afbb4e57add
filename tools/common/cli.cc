// The tools' shared option parser (cli.h): registration, parsing, and the --help text.
#include "tools/common/cli.h"

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <sstream>

#include "bert/status.h"  // bert::printable: argv bytes are escaped before they reach stderr

namespace cli {
namespace {
// 'text' with its bytes escaped (appended piecewise: GCC 12's -Wrestrict misfires on "'" + s).
std::string quoted(const std::string& text) {
  std::string q = "'";
  q += bert::printable(text);
  q += '\'';
  return q;
}
}  // namespace

bool parse_integer(const std::string& text, int64_t lo, int64_t hi, int64_t* out, std::string* error) {
  const std::string shown = quoted(text);
  if (text.empty() || !(std::isdigit(static_cast<unsigned char>(text[0])) || text[0] == '-' || text[0] == '+')) {
    *error = shown + " is not an integer";
    return false;
  }
  errno = 0;
  char* end = nullptr;
  const long long v = std::strtoll(text.c_str(), &end, 10);
  if (end == text.c_str() || *end != '\0') {
    *error = shown + " is not an integer";
    return false;
  }
  if (errno == ERANGE || v < lo || v > hi) {
    *error = bert::printable(text) + " is out of range " + std::to_string(lo) + ".." + std::to_string(hi);
    return false;
  }
  *out = v;
  return true;
}

bool parse_real(const std::string& text, double lo, double hi, double* out, std::string* error) {
  const std::string shown = quoted(text);
  if (text.empty() || std::isspace(static_cast<unsigned char>(text[0]))) {
    *error = shown + " is not a number";
    return false;
  }
  char* end = nullptr;
  const double v = std::strtod(text.c_str(), &end);
  if (end == text.c_str() || *end != '\0') {
    *error = shown + " is not a number";
    return false;
  }
  if (!std::isfinite(v)) {
    *error = shown + " is not a finite number";
    return false;
  }
  if (!(v >= lo && v <= hi)) {
    std::ostringstream range;
    range << lo << ".." << hi;
    *error = bert::printable(text) + " is out of range " + range.str();
    return false;
  }
  *out = v;
  return true;
}

Parser::Parser(std::string tool, std::string synopsis, std::string description)
    : tool_(std::move(tool)), synopsis_(std::move(synopsis)), description_(std::move(description)) {}

void Parser::add(Option o) { options_.push_back(std::move(o)); }

Parser::Option* Parser::find(const std::string& name) {
  for (Option& o : options_)
    if (o.name == name) return &o;
  return nullptr;
}

void Parser::flag(const std::string& name, bool* out, const std::string& help) {
  Option o{name, "", help, *out ? "on" : "off"};
  o.takes_value = false;
  o.set = [out](const std::string&) {
    *out = true;
    return std::string();
  };
  add(std::move(o));
}

void Parser::string(const std::string& name, std::string* out, const std::string& metavar, const std::string& help,
                    const std::string& default_text) {
  Option o{name, metavar, help, !default_text.empty() ? default_text : out->empty() ? "none" : *out};
  o.set = [out](const std::string& v) {
    *out = v;
    return std::string();
  };
  add(std::move(o));
}

void Parser::string(const std::string& name, std::optional<std::string>* out, const std::string& metavar,
                    const std::string& help) {
  Option o{name, metavar, help, "none"};
  o.set = [out](const std::string& v) {
    *out = v;
    return std::string();
  };
  add(std::move(o));
}

void Parser::choice(const std::string& name, std::string* out, std::vector<std::string> choices,
                    const std::string& help) {
  std::string list;
  for (const std::string& c : choices) list += (list.empty() ? "" : "|") + c;
  Option o{name, list, help, *out};
  o.set = [out, choices](const std::string& v) {
    for (const std::string& c : choices)
      if (c == v) {
        *out = v;
        return std::string();
      }
    std::string names;
    for (size_t i = 0; i < choices.size(); ++i)
      names += (i == 0 ? "" : i + 1 == choices.size() ? " or " : ", ") + choices[i];
    return quoted(v) + " is not " + names;
  };
  add(std::move(o));
}

namespace {
template <typename T>
std::function<std::string(const std::string&)> integer_setter(T* out, int64_t lo, int64_t hi) {
  return [out, lo, hi](const std::string& v) {
    int64_t x = 0;
    std::string error;
    if (!parse_integer(v, lo, hi, &x, &error)) return error;
    *out = static_cast<T>(x);
    return std::string();
  };
}
}  // namespace

void Parser::integer(const std::string& name, int* out, int64_t lo, int64_t hi, const std::string& help,
                     const std::string& default_text) {
  Option o{name, "N", help, default_text.empty() ? std::to_string(*out) : default_text};
  o.set = integer_setter(out, lo, hi);
  add(std::move(o));
}

void Parser::integer(const std::string& name, int64_t* out, int64_t lo, int64_t hi, const std::string& help,
                     const std::string& default_text) {
  Option o{name, "N", help, default_text.empty() ? std::to_string(*out) : default_text};
  o.set = integer_setter(out, lo, hi);
  add(std::move(o));
}

void Parser::integer(const std::string& name, uint64_t* out, int64_t lo, int64_t hi, const std::string& help,
                     const std::string& default_text) {
  Option o{name, "N", help, default_text.empty() ? std::to_string(*out) : default_text};
  o.set = integer_setter(out, lo, hi);
  add(std::move(o));
}

void Parser::real(const std::string& name, double* out, double lo, double hi, const std::string& help,
                  const std::string& default_text) {
  std::ostringstream d;
  d << *out;
  Option o{name, "F", help, default_text.empty() ? d.str() : default_text};
  o.set = [out, lo, hi](const std::string& v) {
    double x = 0;
    std::string error;
    if (!parse_real(v, lo, hi, &x, &error)) return error;
    *out = x;
    return std::string();
  };
  add(std::move(o));
}

void Parser::positional(std::vector<std::string>* out, size_t max, const std::string& metavar) {
  positional_ = out, positional_max_ = max, positional_metavar_ = metavar;
}

void Parser::pass_through(const std::string& prefix, std::vector<std::string>* out) {
  pass_through_.emplace_back(prefix, out);
}

std::optional<int> Parser::parse(int argc, const char* const* argv) {
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      std::fputs(help().c_str(), stdout);
      return kExitOk;
    }
    bool passed = false;
    for (auto& [prefix, out] : pass_through_)
      if (arg.rfind(prefix, 0) == 0) {
        out->push_back(arg);
        passed = true;
        break;
      }
    if (passed) continue;
    if (arg.size() > 1 && arg[0] == '-') {
      std::string name = arg;
      std::optional<std::string> value;
      if (const size_t eq = arg.find('='); arg.rfind("--", 0) == 0 && eq != std::string::npos) {
        name = arg.substr(0, eq);  // --name=value
        value = arg.substr(eq + 1);
      }
      Option* o = find(name);
      if (!o) return usage_error("unknown option " + name);
      if (!o->takes_value) {
        if (value) return usage_error("option " + name + " takes no value");
      } else if (!value) {
        if (i + 1 >= argc) return usage_error("option " + name + " needs a value");
        value = argv[++i];
      }
      if (std::string error = o->set(value.value_or("")); !error.empty()) return usage_error(name + ": " + error);
      o->seen = true;
      continue;
    }
    if (!positional_ || positional_->size() >= positional_max_) return usage_error("unexpected argument " + arg);
    positional_->push_back(arg);
  }
  return std::nullopt;
}

bool Parser::given(const std::string& name) const {
  for (const Option& o : options_)
    if (o.name == name) return o.seen;
  return false;
}

int Parser::usage_error(const std::string& message) const {
  std::string s = tool_ + ": " + bert::printable(message) + "\n";
  std::istringstream lines(synopsis_);
  bool first = true;
  for (std::string line; std::getline(lines, line); first = false) s += (first ? "usage: " : "       ") + line + "\n";
  s += "(" + tool_ + " --help lists every option)\n";
  std::fputs(s.c_str(), stderr);
  return kExitUsage;
}

int Parser::fail(const std::string& message) const {
  std::fprintf(stderr, "%s: %s\n", tool_.c_str(), bert::printable(message).c_str());
  return kExitBadInput;
}

std::string Parser::help() const {
  std::string s;
  std::istringstream lines(synopsis_);
  bool first = true;
  for (std::string line; std::getline(lines, line); first = false) s += (first ? "usage: " : "       ") + line + "\n";
  if (!description_.empty()) s += "\n" + description_ + (description_.back() == '\n' ? "" : "\n");
  s += "\noptions:\n";
  for (const Option& o : options_) {
    std::string head = "  " + o.name + (o.metavar.empty() ? "" : " " + o.metavar);
    if (head.size() < 28) head.resize(28, ' ');
    else head += "\n" + std::string(28, ' ');
    const bool required = o.help.find("(required)") != std::string::npos;
    s += head + o.help + (required ? "" : " (default: " + o.default_text + ")") + "\n";
  }
  s += "  -h, --help                print this help and exit\n";
  s += "\nexit status: 0 success, 1 bad input (a file, model or data is wrong; the message names it),\n"
       "             2 usage error (an unknown option, a missing or bad value)\n";
  return s;
}

}  // namespace cli
