// Shared pieces of the study experiments (see exp_common.h) and register_experiment_benchmarks(),
// which bert_bench's main calls.
#include "bench/experiments/exp_common.h"

#include <malloc.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "bert/model_builder.h"
#include "weights/synthetic.h"

#ifndef BERT_EXP_SHARED_DIR
#define BERT_EXP_SHARED_DIR "../shared"
#endif

namespace studies {

Scale scale() {
  static const Scale s = [] {
    const char* e = std::getenv("BERT_EXP_SCALE");
    std::string v = e ? e : "";
    if (v == "smoke") return Scale::kSmoke;
    if (v == "full") return Scale::kFull;
    return Scale::kDefault;
  }();
  return s;
}

const char* scale_name() { return by_scale("smoke", "default", "full"); }

int all_threads() {
  // Smoke runs check that everything runs and reports, not speed: one thread keeps them quick on a
  // busy CI machine (OpenMP teams slow down badly when their cores are shared).
  if (scale() == Scale::kSmoke) return 1;
  const unsigned n = std::thread::hardware_concurrency();
  return n ? static_cast<int>(n) : 1;
}

std::string shared_dir() {
  const char* e = std::getenv("BERT_SHARED_DIR");
  return e && *e ? e : BERT_EXP_SHARED_DIR;
}

const Sst2* sst2(int64_t train_limit, std::string* error) {
  static std::mutex mu;
  static std::unique_ptr<Sst2> cached;
  static int64_t cached_limit = -1;
  std::lock_guard<std::mutex> lock(mu);
  if (cached && (cached_limit == 0 || (train_limit != 0 && train_limit <= cached_limit))) return cached.get();
  const std::string dir = shared_dir();
  auto tok = bert::Tokenizer::FromVocabFile(dir + "/models/bert-base-uncased-tokenizer/vocab.txt");
  if (!tok.ok()) return *error = "needs ../shared (vocab): " + tok.status().to_string(), nullptr;
  bert::data::TsvOptions o;
  o.max_seq = 128, o.num_labels = 2, o.detect_header = true;
  auto dev = bert::data::ReadTsv(dir + "/data/glue-sst2/dev.tsv", *tok, o);
  if (!dev.ok()) return *error = "needs ../shared (SST-2): " + dev.status().to_string(), nullptr;
  o.limit = train_limit;
  auto train = bert::data::ReadTsv(dir + "/data/glue-sst2/train.tsv", *tok, o);
  if (!train.ok()) return *error = "needs ../shared (SST-2): " + train.status().to_string(), nullptr;
  cached = std::make_unique<Sst2>(Sst2{*tok, std::move(*train), std::move(*dev)});
  cached_limit = train_limit;
  return cached.get();
}

std::vector<std::string> sst2_sentences(int n, std::string* error) {
  std::vector<std::string> out;
  const std::string dir = shared_dir();
  for (const char* file : {"/data/glue-sst2/dev.tsv", "/data/glue-sst2/train.tsv"}) {
    std::ifstream in(dir + file);
    if (!in) return *error = std::string("needs ../shared: cannot open ") + dir + file, std::vector<std::string>{};
    std::string line;
    std::getline(in, line);  // header
    while (static_cast<int>(out.size()) < n && std::getline(in, line)) {
      const size_t tab = line.rfind('\t');
      if (tab != std::string::npos && tab > 0) out.push_back(line.substr(0, tab));
    }
    if (static_cast<int>(out.size()) >= n) break;
  }
  return out;
}

bert::Result<std::shared_ptr<const bert::Model>> synthetic(const std::string& shape, const std::string& architecture,
                                                           const std::string& config_patch_json, bool pack_weights) {
  bert::SyntheticSpec spec;
  spec.seed = 1234;
  if (config_patch_json.empty()) {
    spec.preset = shape, spec.architecture = architecture;
  } else {
    auto text = bert::synthetic_config_json(shape, architecture);
    if (!text.ok()) return text.status();
    nlohmann::json j = nlohmann::json::parse(*text);
    nlohmann::json patch = nlohmann::json::parse(config_patch_json);
    if (patch.contains("num_labels")) j.erase("id2label"), j.erase("label2id");
    j.merge_patch(patch);
    spec.config_json = j.dump();
    spec.origin = shape + " " + config_patch_json;
  }
  bert::LoadOptions lo;
  lo.pack_weights = pack_weights;
  return bert::LoadSynthetic(spec, lo);
}

namespace {
struct TempFiles {
  std::map<std::string, std::string> paths;
  ~TempFiles() {
    std::error_code ec;
    for (auto& [k, p] : paths) std::filesystem::remove(p, ec);
  }
};
TempFiles& temp_files() {
  static TempFiles t;
  return t;
}
}  // namespace

std::string synthetic_file(const std::string& shape, const std::string& architecture, std::string* error) {
  static std::mutex mu;
  std::lock_guard<std::mutex> lock(mu);
  const std::string key = shape + "/" + architecture;
  if (auto it = temp_files().paths.find(key); it != temp_files().paths.end()) return it->second;
  const std::string path = (std::filesystem::temp_directory_path() /
                            ("bert_exp_" + shape + "_" + std::to_string(getpid()) + ".bert")).string();
  auto r = bert::WriteSynthetic({.preset = shape, .architecture = architecture, .seed = 1234}, path);
  if (!r.ok()) return *error = r.status().to_string(), "";
  return temp_files().paths[key] = path;
}

namespace {
int64_t status_kib(const char* field) {
  std::ifstream in("/proc/self/status");
  std::string line;
  const size_t n = std::strlen(field);
  while (std::getline(in, line))
    if (line.compare(0, n, field) == 0) return std::atoll(line.c_str() + n + 1);
  return -1;
}
}  // namespace

int64_t rss_bytes() {
  const int64_t k = status_kib("VmRSS");
  return k < 0 ? 0 : k * 1024;
}

int64_t peak_rss_bytes() {
  const int64_t k = status_kib("VmHWM");
  if (k >= 0) return k * 1024;
  struct rusage u;
  getrusage(RUSAGE_SELF, &u);
  return int64_t(u.ru_maxrss) * 1024;
}

bool reset_peak_rss() {
  malloc_trim(0);
  std::ofstream f("/proc/self/clear_refs");
  if (!f) return false;
  f << "5";
  f.flush();
  return static_cast<bool>(f);
}

void MemoryProbe::start() {
  peak_reset = reset_peak_rss();
  pre = rss_bytes();
}
void MemoryProbe::stop_peak() { peak = std::max(peak, peak_rss_bytes()); }
void MemoryProbe::finish() {
  stop_peak();
  malloc_trim(0);
  post = rss_bytes();
}
void MemoryProbe::counters(benchmark::State& state) const {
  const double mib = 1.0 / (1 << 20);
  state.counters["rss_pre_MiB"] = pre * mib;
  state.counters["rss_peak_MiB"] = peak * mib;
  state.counters["rss_post_MiB"] = post * mib;
  state.counters["rss_peak_minus_pre_MiB"] = (peak - pre) * mib;
  state.counters["peak_is_region_peak"] = peak_reset ? 1 : 0;  // 0: lifetime peak (no clear_refs)
}

Progress::Progress(std::string label, int64_t total) : label_(std::move(label)), total_(total) {
  const char* e = std::getenv("BERT_EXP_PROGRESS");
  on_ = isatty(2) && !(e && std::string(e) == "0") && total > 1;
  start_ = std::chrono::steady_clock::now();
}
Progress::~Progress() {
  if (on_) std::fprintf(stderr, "\r%*s\r", 78, "");
}
void Progress::add(int64_t n) {
  done_ += n;
  if (!on_) return;
  const auto now = std::chrono::steady_clock::now();
  if (done_ < total_ && now - last_ < std::chrono::milliseconds(200)) return;
  last_ = now;
  const int width = 30, filled = static_cast<int>(width * std::min<int64_t>(done_, total_) / total_);
  const double elapsed = seconds_since(start_);
  const double eta = done_ > 0 ? elapsed * double(total_ - done_) / double(done_) : 0;
  std::fprintf(stderr, "\r  %-24.24s [%s%s] %3d%% %5.0fs left ", label_.c_str(), std::string(filled, '#').c_str(),
               std::string(width - filled, ' ').c_str(), static_cast<int>(100 * done_ / total_), eta);
  std::fflush(stderr);
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

void set_label(benchmark::State& state, const std::string& label) { state.SetLabel(label); }

void needs(benchmark::State& state, const std::string& what) {
  state.SkipWithError(("needs " + what).c_str());
}

double forward_bytes_read(const bert::ModelInfo& m, int64_t weight_bytes, int64_t batch, int64_t seq) {
  const double T = double(batch) * seq, H = double(m.hidden_size), I = double(m.intermediate_size);
  const double heads = double(m.num_heads), L = double(m.num_layers);
  // Per layer, what each op reads: QKV GEMM (x), scores (Q, K), softmax (scores), context (P, V),
  // output GEMM (ctx), residual + LayerNorm (2 x [T, H]), FFN in (a), activation ([T, I]), FFN out
  // ([T, I]), residual + LayerNorm (2 x [T, H]).
  const double per_layer = T * H + 2 * T * H + 2 * heads * T * seq + T * H + T * H + 2 * T * H + T * H + 2 * T * I +
                           2 * T * H;
  return double(weight_bytes) + 4.0 * (L * per_layer + 3 * T * (m.embedding_size ? m.embedding_size : H));
}

}  // namespace studies

// Called by bert_bench's main: the studies' experiment families (docs/EXPERIMENTS.md).
void register_experiment_benchmarks() {
  benchmark::AddCustomContext("experiment_scale", studies::scale_name());
  benchmark::AddCustomContext("hardware_threads", std::to_string(studies::all_threads()));
  if (auto tiny = studies::synthetic("bert-tiny", ""); tiny.ok())  // the kernels the engine picks here
    benchmark::AddCustomContext("cpu_isa", (*tiny)->info().cpu_isa);
  studies::register_inference();
  studies::register_training();
}
