// Implementation of the shared test helpers.
#include "tests/test_util.h"

#include <array>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <sys/wait.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

namespace bert::test {

std::optional<std::filesystem::path> shared_dir() {
  const char* env = std::getenv("BERT_SHARED_DIR");
  std::filesystem::path p = env && *env ? env : BERT_SHARED_DIR_DEFAULT;
  if (std::filesystem::is_directory(p / "fixtures")) return p;
  return std::nullopt;
}

std::filesystem::path tools_dir() { return std::filesystem::path(BERT_BINARY_DIR) / "tools"; }
std::filesystem::path source_dir() { return BERT_SOURCE_DIR; }
std::filesystem::path binary_dir() { return BERT_BINARY_DIR; }

TempDir::TempDir() {
  std::string tmpl = (std::filesystem::temp_directory_path() / "bert_test_XXXXXX").string();
  char* made = mkdtemp(tmpl.data());
  path_ = made ? made : tmpl;
}
TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

void write_file(const std::filesystem::path& p, const std::string& bytes) {
  std::ofstream f(p, std::ios::binary);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

std::string read_file(const std::filesystem::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

std::vector<float> random_floats(size_t n, uint32_t seed, float lo, float hi) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(rng);
  return v;
}

CommandResult run_command(const std::string& cmd) {
  std::string full = cmd + " 2>&1";
  FILE* pipe = popen(full.c_str(), "r");
  if (!pipe) return {-1, "popen failed"};
  std::string out;
  std::array<char, 4096> buf;
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), pipe)) > 0) out.append(buf.data(), n);
  int status = pclose(pipe);
  int code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return {code, out};
}

double relative_l2(const float* got, const float* want, size_t n) {
  double num = 0, den = 0;
  for (size_t i = 0; i < n; ++i) {
    double d = double(got[i]) - double(want[i]);
    num += d * d;
    den += double(want[i]) * double(want[i]);
  }
  if (den == 0) return num == 0 ? 0 : INFINITY;
  return std::sqrt(num / den);
}

double max_abs_diff(const float* got, const float* want, size_t n) {
  double m = 0;
  for (size_t i = 0; i < n; ++i) {
    double d = std::fabs(double(got[i]) - double(want[i]));
    if (!(d <= m)) m = d;  // NaN propagates
  }
  return m;
}

double max_abs(const float* x, size_t n) {
  double m = 0;
  for (size_t i = 0; i < n; ++i) m = std::max(m, std::fabs(double(x[i])));
  return m;
}

std::string tiny_family_config(const std::string& family) {
  nlohmann::json j = {{"model_type", family}, {"vocab_size", 97},          {"hidden_size", 32},
            {"num_hidden_layers", 3},   {"num_attention_heads", 4}, {"intermediate_size", 48},
            {"max_position_embeddings", 40}, {"type_vocab_size", 2}, {"hidden_act", "gelu"},
            {"layer_norm_eps", 1e-12},  {"pad_token_id", 0}};
  if (family == "roberta") j.update({{"pad_token_id", 1}, {"type_vocab_size", 1}});
  if (family == "electra") j["embedding_size"] = 16;
  if (family == "albert") j.update({{"embedding_size", 16}, {"num_hidden_groups", 1}, {"hidden_act", "gelu_new"}});
  if (family == "squeezebert")
    j.update({{"embedding_size", 32}, {"q_groups", 4}, {"k_groups", 4}, {"v_groups", 2},
              {"post_attention_groups", 1}, {"intermediate_groups", 4}, {"output_groups", 8}});
  if (family == "distilbert")
    j = {{"model_type", "distilbert"}, {"vocab_size", 97}, {"dim", 32}, {"n_layers", 3}, {"n_heads", 4},
         {"hidden_dim", 48}, {"max_position_embeddings", 40}, {"activation", "relu"}, {"pad_token_id", 0}};
  return j.dump();
}


}  // namespace bert::test
