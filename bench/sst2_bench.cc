// BM_Sst2Dev: real sentence lengths instead of synthetic ones. The SST-2 dev set (GLUE, 872 sentences,
// ../shared/data/glue-sst2/dev.tsv, or $BERT_SST2_DEV), all of it in file order, tokenised by the engine's
// tokenizer (the bert-base-uncased vocab.txt beside it in ../shared/models/bert-base-uncased-tokenizer, or
// $BERT_SST2_VOCAB), run through bert-base-shaped synthetic weights in batches of `batch` on `threads`
// threads, in three modes:
//   mode:0  padded to 128 tokens (what fixed-shape deployments do)
//   mode:1  padded to each batch's longest sentence
//   mode:2  padding removal (SessionOptions.remove_padding: the encoder runs the real tokens only)
// and precision:0 fp32 (every mode), 1 bf16 and 2 int8 (padding removal; bf16 is skipped, with the
// engine's message naming the CPU feature, where the CPU lacks it).
// Counters: sentences/s (the model's runs only), real_fraction (real tokens / the token rows the encoder
// runs), real_tokens/s, tokenize_s (tokenising the 872 sentences once, not in the timed runs).
// Skipped when the data or the vocab is absent: not registered, with a note on stderr (this Google
// Benchmark, 1.7, has no SkipWithMessage, and SkipWithError would fail the run). Every shape a mode runs is
// planned in a warm-up pass first, so the timed pass measures the runs, not oneDNN's planning.
// Registered into bert_bench by register_sst2_benchmarks() (bench/bert_bench.cc's main).
#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "bert/engine.h"
#include "bert/model_builder.h"
#include "bert/tokenizer.h"

namespace {

constexpr int kMaxSeq = 128;
const char* const kModeNames[] = {"padded-128", "padded-longest", "packed"};
// The precision argument: 0 fp32, 1 bf16, 2 int8 (as BM_Inference's).
constexpr bert::Precision kPrecisions[] = {bert::Precision::kF32, bert::Precision::kBF16, bert::Precision::kInt8};

// The first existing path: $env, then the candidates (relative to the working directory: a checkout
// beside ../shared, or one with shared/ inside it).
std::string find_path(const char* env, std::initializer_list<const char*> candidates) {
  if (const char* e = std::getenv(env); e && *e) return e;
  std::error_code ec;
  for (const char* c : candidates)
    if (std::filesystem::exists(c, ec)) return c;
  return "";
}

// The sentences of a GLUE SST-2 tsv ("sentence<TAB>label" with a header line), in file order.
bool read_sentences(const std::string& path, std::vector<std::string>* out, std::string* error) {
  std::ifstream f(path);
  if (!f) return *error = path + ": cannot open", false;
  std::string line;
  bool header = true;
  while (std::getline(f, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (header) {
      header = false;
      if (line.rfind("sentence", 0) == 0) continue;
    }
    if (line.empty()) continue;
    const size_t tab = line.rfind('\t');
    out->push_back(tab == std::string::npos ? line : line.substr(0, tab));
  }
  if (out->empty()) return *error = path + ": no sentences", false;
  return true;
}

struct Sst2 {
  std::vector<bert::Encoding> encodings;  // truncated to kMaxSeq
  double tokenize_seconds = 0;
  int64_t real_tokens = 0;
  std::string skip;  // why the benchmark is skipped (data absent)
  std::string error;
};

std::string tsv_path() {
  return find_path("BERT_SST2_DEV", {"../shared/data/glue-sst2/dev.tsv", "shared/data/glue-sst2/dev.tsv"});
}
std::string vocab_path() {
  return find_path("BERT_SST2_VOCAB", {"../shared/models/bert-base-uncased-tokenizer/vocab.txt",
                                       "shared/models/bert-base-uncased-tokenizer/vocab.txt"});
}

const Sst2& sst2() {
  static const Sst2 data = [] {
    Sst2 d;
    const std::string tsv = tsv_path(), vocab = vocab_path();
    if (tsv.empty() || vocab.empty()) {
      d.skip = std::string("no ") + (tsv.empty() ? "glue-sst2/dev.tsv" : "bert-base-uncased-tokenizer/vocab.txt") +
               " under ../shared (or $BERT_SST2_DEV / $BERT_SST2_VOCAB)";
      return d;
    }
    std::vector<std::string> sentences;
    if (!read_sentences(tsv, &sentences, &d.error)) return d;
    auto tok = bert::Tokenizer::FromVocabFile(vocab);
    if (!tok.ok()) return d.error = tok.status().to_string(), d;
    const auto start = std::chrono::steady_clock::now();
    for (const std::string& s : sentences) {
      auto enc = tok->Encode(s, std::nullopt, kMaxSeq);
      if (!enc.ok()) return d.error = enc.status().to_string(), d;
      d.real_tokens += static_cast<int64_t>(enc->input_ids.size());
      d.encodings.push_back(std::move(*enc));
    }
    d.tokenize_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    return d;
  }();
  return data;
}

// One padded batch: ids / mask / types [batch, seq], real tokens first.
struct Batch {
  int batch = 0, seq = 0;
  std::vector<int32_t> ids, mask, types;
  bert::BatchInput input() const { return {batch, seq, ids.data(), mask.data(), types.data()}; }
};

void BM_Sst2Dev(benchmark::State& state) {
  const int mode = static_cast<int>(state.range(0)), batch = static_cast<int>(state.range(1));
  const int threads = static_cast<int>(state.range(2));
  const bert::Precision precision = kPrecisions[state.range(3)];
  const Sst2& data = sst2();
  if (!data.skip.empty()) return state.SkipWithError(data.skip.c_str());  // (not registered then)
  if (!data.error.empty()) return state.SkipWithError(data.error.c_str());
  static std::map<bert::Precision, std::shared_ptr<const bert::Model>> models;
  std::shared_ptr<const bert::Model>& model = models[precision];
  if (!model) {
    bert::LoadOptions load;
    load.precision = precision;
    auto m = bert::LoadSynthetic({.preset = "bert-base", .seed = 1234}, load);
    // bf16 on a CPU without AVX-512 is refused with a message naming the CPU feature: skipped, said so.
    if (!m.ok()) return state.SkipWithError(m.status().to_string().c_str());
    model = *m;
  }
  state.SetLabel(std::string("bert-base ") + kModeNames[mode] + " " + bert::precision_name(precision));

  // The batches, in file order.
  std::vector<Batch> batches;
  int64_t encoder_rows = 0;
  const int64_t n = static_cast<int64_t>(data.encodings.size());
  for (int64_t first = 0; first < n; first += batch) {
    const int rows = static_cast<int>(std::min<int64_t>(batch, n - first));
    int longest = 0;
    for (int r = 0; r < rows; ++r) longest = std::max(longest, int(data.encodings[first + r].input_ids.size()));
    Batch b;
    b.batch = rows, b.seq = mode == 0 ? kMaxSeq : longest;
    b.ids.assign(size_t(rows) * b.seq, 0), b.mask.assign(b.ids.size(), 0), b.types.assign(b.ids.size(), 0);
    for (int r = 0; r < rows; ++r) {
      const bert::Encoding& e = data.encodings[first + r];
      std::copy(e.input_ids.begin(), e.input_ids.end(), b.ids.begin() + size_t(r) * b.seq);
      std::copy(e.attention_mask.begin(), e.attention_mask.end(), b.mask.begin() + size_t(r) * b.seq);
      std::copy(e.token_type_ids.begin(), e.token_type_ids.end(), b.types.begin() + size_t(r) * b.seq);
    }
    encoder_rows += mode == 2 ? 0 : int64_t(rows) * b.seq;
    batches.push_back(std::move(b));
  }
  if (mode == 2) encoder_rows = data.real_tokens;

  bert::SessionOptions opts;
  opts.max_batch = batch, opts.max_seq = kMaxSeq, opts.num_threads = threads, opts.remove_padding = mode == 2;
  auto session = bert::Session::Create(model, opts);
  if (!session.ok()) return state.SkipWithError(session.status().to_string().c_str());
  // Warm-up: every shape this mode runs (packed: every batch, whose real-token counts differ).
  std::set<std::pair<int, int>> planned;
  for (const Batch& b : batches) {
    if (mode != 2 && !planned.insert({b.batch, b.seq}).second) continue;
    if (auto st = (*session)->Run(b.input()); !st.ok()) return state.SkipWithError(st.to_string().c_str());
  }
  for (auto _ : state) {
    for (const Batch& b : batches) {
      auto st = (*session)->Run(b.input());
      if (!st.ok()) return state.SkipWithError(st.to_string().c_str());
    }
  }
  state.counters["sentences/s"] = benchmark::Counter(double(n), benchmark::Counter::kIsIterationInvariantRate);
  state.counters["real_tokens/s"] =
      benchmark::Counter(double(data.real_tokens), benchmark::Counter::kIsIterationInvariantRate);
  state.counters["real_fraction"] = double(data.real_tokens) / double(encoder_rows);
  state.counters["tokenize_s"] = data.tokenize_seconds;
  state.counters["sentences"] = double(n);
}

}  // namespace

void register_sst2_benchmarks() {
  if (tsv_path().empty() || vocab_path().empty()) {
    std::fprintf(stderr, "bert_bench: BM_Sst2Dev skipped: no %s under ../shared (or $BERT_SST2_DEV / $BERT_SST2_VOCAB)\n",
                 tsv_path().empty() ? "data/glue-sst2/dev.tsv" : "models/bert-base-uncased-tokenizer/vocab.txt");
    return;
  }
  auto* b = benchmark::RegisterBenchmark("BM_Sst2Dev", BM_Sst2Dev)->ArgNames({"mode", "batch", "threads", "precision"});
  for (int threads : {2, 1}) {
    for (int mode : {0, 1, 2}) b->Args({mode, 32, threads, 0});
    for (int precision : {1, 2}) b->Args({2, 32, threads, precision});  // bf16, int8: padding removal
  }
  b->Iterations(1)
      ->UseRealTime()
      ->Unit(benchmark::kMillisecond)
      ->MeasureProcessCPUTime();
}
