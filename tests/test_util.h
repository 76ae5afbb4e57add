// Helpers shared by the tests: where ../shared and the build are, temporary files, random inputs, comparisons.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <random>
#include <string>
#include <vector>

namespace bert::test {

// ../shared beside the source tree (or $BERT_SHARED_DIR), or nullopt when it is absent.
std::optional<std::filesystem::path> shared_dir();
// The directory tools were built into (build/tools).
std::filesystem::path tools_dir();
std::filesystem::path source_dir();
std::filesystem::path binary_dir();

// A fresh empty directory under the system temp dir, removed when the object dies.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }
  std::filesystem::path operator/(const std::string& name) const { return path_ / name; }

 private:
  std::filesystem::path path_;
};

void write_file(const std::filesystem::path& p, const std::string& bytes);
std::string read_file(const std::filesystem::path& p);

// Uniform random floats in [lo, hi), deterministic for a seed.
std::vector<float> random_floats(size_t n, uint32_t seed, float lo = -1.f, float hi = 1.f);

// Runs a shell command; returns its exit status and captures stdout+stderr.
struct CommandResult {
  int exit_code;
  std::string output;
};
CommandResult run_command(const std::string& cmd);

// Comparison metrics used with per-op tolerances.
double relative_l2(const float* got, const float* want, size_t n);
double max_abs_diff(const float* got, const float* want, size_t n);
double max_abs(const float* x, size_t n);

// config.json text of a tiny model of `family` (bert, roberta, distilbert, electra, albert, squeezebert)
// with the options that make the family different switched on: vocab 97, hidden 32, 3 layers, 4 heads.
std::string tiny_family_config(const std::string& family);

}  // namespace bert::test

// Skip the current test when ../shared is not there.
#define BERT_REQUIRE_SHARED(var)                                                   \
  auto var##_opt = ::bert::test::shared_dir();                                     \
  if (!var##_opt) GTEST_SKIP() << "../shared is absent (set BERT_SHARED_DIR)";     \
  const std::filesystem::path var = *var##_opt
