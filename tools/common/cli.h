// The one command-line option parser every tool uses (bert_run, bert_train, bert_tokenize,
// convert_weights, bert_bench). Engine-independent: it knows flags, strings, numbers with bounds,
// choices and positional arguments, and it names what is wrong in one consistent way:
//   unknown option --bogus            option --threads needs a value
//   --threads: 'x' is not an integer  --threads: 99999 is out of range 0..1024
// Exit codes are the same in every tool: 0 success (and --help), 1 bad input (a file, a model, data),
// 2 usage (an option or argument is wrong). --help prints every option with its default to stdout.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace cli {

inline constexpr int kExitOk = 0;
inline constexpr int kExitBadInput = 1;
inline constexpr int kExitUsage = 2;

class Parser {
 public:
  // tool: the program name in messages; synopsis: the "usage:" lines (without "usage: "), one per
  // line; description: free text printed by --help after the synopsis (may be empty).
  Parser(std::string tool, std::string synopsis, std::string description = "");

  // A switch without a value: sets *out to true.
  void flag(const std::string& name, bool* out, const std::string& help);
  // A string value; the default shown by --help is *out's value now (or `default_text` if given).
  void string(const std::string& name, std::string* out, const std::string& metavar, const std::string& help,
              const std::string& default_text = "");
  void string(const std::string& name, std::optional<std::string>* out, const std::string& metavar,
              const std::string& help);
  // One of the given words.
  void choice(const std::string& name, std::string* out, std::vector<std::string> choices, const std::string& help);
  // An integer in [lo, hi]; the default shown is *out's value now unless `default_text` is given.
  void integer(const std::string& name, int* out, int64_t lo, int64_t hi, const std::string& help,
               const std::string& default_text = "");
  void integer(const std::string& name, int64_t* out, int64_t lo, int64_t hi, const std::string& help,
               const std::string& default_text = "");
  void integer(const std::string& name, uint64_t* out, int64_t lo, int64_t hi, const std::string& help,
               const std::string& default_text = "");
  // A finite real number in [lo, hi].
  void real(const std::string& name, double* out, double lo, double hi, const std::string& help,
            const std::string& default_text = "");
  // Positional arguments (in order) go to *out; more than `max` is a usage error.
  void positional(std::vector<std::string>* out, size_t max, const std::string& metavar);
  // Arguments starting with `prefix` are not ours: they go to *out untouched (bert_bench hands
  // --benchmark_* to Google Benchmark).
  void pass_through(const std::string& prefix, std::vector<std::string>* out);

  // Parses argv. Returns nullopt to go on, or the exit code main should return now: 0 after
  // --help / -h, 2 after a usage error (the message and the synopsis are on stderr).
  std::optional<int> parse(int argc, const char* const* argv);
  // Whether the option was given on the command line (after parse).
  bool given(const std::string& name) const;

  // Prints "tool: message" and the synopsis to stderr; returns 2 (kExitUsage).
  int usage_error(const std::string& message) const;
  // Prints "tool: message" to stderr; returns 1 (kExitBadInput).
  int fail(const std::string& message) const;
  // The full --help text.
  std::string help() const;
  const std::string& tool() const { return tool_; }

 private:
  struct Option {
    std::string name{}, metavar{}, help{}, default_text{};
    bool takes_value = true;
    bool seen = false;
    std::function<std::string(const std::string&)> set{};  // "" or what is wrong with the value
  };
  Option* find(const std::string& name);
  void add(Option o);

  std::string tool_, synopsis_, description_;
  std::vector<Option> options_;
  std::vector<std::string>* positional_ = nullptr;
  size_t positional_max_ = 0;
  std::string positional_metavar_;
  std::vector<std::pair<std::string, std::vector<std::string>*>> pass_through_;
};

// Parses a whole decimal integer in [lo, hi]. On failure *error says why ("'x' is not an integer",
// "99999 is out of range 0..1024"), without the option's name.
bool parse_integer(const std::string& text, int64_t lo, int64_t hi, int64_t* out, std::string* error);
// Parses a finite real number in [lo, hi], as parse_integer.
bool parse_real(const std::string& text, double lo, double hi, double* out, std::string* error);

}  // namespace cli
