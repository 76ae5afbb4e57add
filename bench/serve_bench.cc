// Serving benchmarks (part of bert_bench): an in-process bert_serve (engine/serve/server) on a free
// loopback port, driven by keep-alive HTTP clients that each send one SST-2 dev sentence per
// POST /v1/predict request. Models are synthetic SST-2-shaped classifiers (2 labels, seeded weights,
// ../shared's WordPiece vocab); sentences are ../shared/data/glue-sst2/dev.tsv (skipped without it).
//
// BM_ServeClients/model:M/clients:N  throughput vs concurrent clients over 3 s: sentences/s and
//                p50 / p90 / p99 latency (ms, client side). M: 0 bert-tiny, 1 bert-base shape.
// BM_ServeAtRate/model:0/rate:R      8 clients paced to R requests/s in all: the latency at that load.
// BM_ServeVsDirect/model:M           the same sentences through the server (8 clients) and through
//                bert_run's text-mode path in-process (tokenize, one reused Session of batch 1 with
//                all cores, Predict), one after another: server_over_direct = server / direct sentences/s;
//                also the direct path on one thread: server_over_cores_x_direct_1thread compares the
//                server with that rate on every core (what the server's one-thread workers could reach).
// BM_ServeVsDirectOneCore/model:M    the same with one core each: a one-worker server against that path
//                on one thread (fairer than the above when other processes share the cores).
// The compute pool has one worker per core (std::thread::hardware_concurrency()) unless noted.
#include <benchmark/benchmark.h>
#include <unistd.h>
#include <httplib.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "bert/engine.h"
#include "bert/model_builder.h"
#include "bert/predict.h"
#include "bert/tokenizer.h"
#include "engine/serve/server/http_server.h"

namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

fs::path shared_dir() {
  if (const char* e = std::getenv("BERT_SHARED_DIR")) return e;
#ifdef BERT_SHARED_DIR_DEFAULT
  return BERT_SHARED_DIR_DEFAULT;
#else
  return fs::path("..") / "shared";
#endif
}

// SST-2 dev sentences (empty when ../shared is absent).
const std::vector<std::string>& sentences() {
  static const std::vector<std::string> s = [] {
    std::vector<std::string> out;
    for (const fs::path& dir : {shared_dir(), fs::path("../shared"), fs::path("../../shared")}) {
      std::ifstream f(dir / "data/glue-sst2/dev.tsv");
      std::string line;
      while (std::getline(f, line)) {
        const size_t tab = line.rfind('\t');
        if (tab == std::string::npos || line.compare(tab + 1, 5, "label") == 0) continue;
        out.push_back(line.substr(0, tab));
      }
      if (!out.empty()) break;
    }
    return out;
  }();
  return s;
}

std::string vocab_path() {
  for (const fs::path& dir : {shared_dir(), fs::path("../shared"), fs::path("../../shared")}) {
    const fs::path v = dir / "models/bert-base-uncased-tokenizer/vocab.txt";
    if (fs::exists(v)) return v.string();
  }
  return "";
}

const char* kPresets[] = {"bert-tiny", "bert-base"};

// The model file of a preset (written once per process into the temp dir).
std::string model_file(int m, std::string* error) {
  static std::map<int, std::string> files;
  if (files.count(m)) return files[m];
  const std::string vocab = vocab_path();
  if (vocab.empty() || sentences().empty()) {
    *error = "../shared (vocab and SST-2 dev) is absent: set BERT_SHARED_DIR";
    return "";
  }
  const fs::path p = fs::temp_directory_path() / ("bert_serve_bench_" + std::to_string(getpid()) + "_" + kPresets[m] + ".bert");
  auto r = bert::WriteSynthetic(
      {.preset = kPresets[m], .architecture = "BertForSequenceClassification", .vocab_path = vocab}, p.string());
  if (!r.ok()) {
    *error = r.status().to_string();
    return "";
  }
  std::atexit([] {
    for (auto& [k, f] : files) {
      std::error_code ec;
      fs::remove(f, ec);
    }
  });
  return files[m] = p.string();
}

// One in-process server per model (and worker count: 0 = the cores), kept for the whole run.
int server_port(int m, std::string* error, int workers = 0) {
  static std::map<std::pair<int, int>, std::unique_ptr<bert::serve::Server>> servers;
  if (servers.count({m, workers})) return servers[{m, workers}]->port();
  const std::string file = model_file(m, error);
  if (file.empty()) return -1;
  bert::serve::ServerOptions o;
  o.port = 0;
  o.threads = workers;
  o.max_queue = 100000;
  auto s = bert::serve::Server::Create(o);
  if (!s.ok()) {
    *error = s.status().to_string();
    return -1;
  }
  if (bert::Status st = (*s)->Start({{"m", file, {}}}); !st.ok()) {
    *error = st.to_string();
    return -1;
  }
  while (!(*s)->ready()) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  if (!(*s)->startup_error().empty()) {
    *error = (*s)->startup_error();
    return -1;
  }
  const int port = (*s)->port();
  servers[{m, workers}] = std::move(*s);
  return port;
}

struct Load {
  double seconds = 0;
  long ok = 0, errors = 0;
  std::vector<double> ms;
  double pct(double p) const {
    if (ms.empty()) return 0;
    std::vector<double> v = ms;
    std::sort(v.begin(), v.end());
    return v[std::min(v.size() - 1, static_cast<size_t>(p / 100 * (v.size() - 1) + 0.5))];
  }
};

// `clients` keep-alive clients, one sentence per request, for `seconds` or `total` requests in all;
// rate > 0 paces the requests over all clients.
Load run_load(int port, int clients, double seconds, long total, double rate) {
  const std::vector<std::string>& text = sentences();
  std::atomic<long> issued{0};
  std::mutex mu;
  Load out;
  const auto start = Clock::now();
  const auto end = start + std::chrono::microseconds(static_cast<int64_t>(seconds * 1e6));
  std::vector<std::thread> threads;
  for (int c = 0; c < clients; ++c)
    threads.emplace_back([&] {
      httplib::Client cli("127.0.0.1", port);
      cli.set_keep_alive(true);
      cli.set_tcp_nodelay(true);
      cli.set_read_timeout(600, 0);
      std::vector<double> mine;
      long errors = 0;
      for (;;) {
        const long n = issued.fetch_add(1);
        if (total > 0 && n >= total) break;
        if (seconds > 0 && Clock::now() >= end) break;
        if (rate > 0) std::this_thread::sleep_until(start + std::chrono::microseconds(static_cast<int64_t>(n * 1e6 / rate)));
        const std::string body = nlohmann::json{{"model", "m"}, {"inputs", {text[n % text.size()]}}}.dump();
        const auto t0 = Clock::now();
        auto res = cli.Post("/v1/predict", body, "application/json");
        const double ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
        if (res && res->status == 200) mine.push_back(ms);
        else ++errors;
      }
      std::lock_guard<std::mutex> lk(mu);
      out.ms.insert(out.ms.end(), mine.begin(), mine.end());
      out.errors += errors;
    });
  for (std::thread& t : threads) t.join();
  out.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  out.ok = static_cast<long>(out.ms.size());
  return out;
}

void report(benchmark::State& state, const Load& l) {
  state.counters["sentences_per_s"] = l.ok / l.seconds;
  state.counters["p50_ms"] = l.pct(50);
  state.counters["p90_ms"] = l.pct(90);
  state.counters["p99_ms"] = l.pct(99);
  state.counters["errors"] = static_cast<double>(l.errors);
  state.counters["requests"] = static_cast<double>(l.ok);
}

void BM_ServeClients(benchmark::State& state) {
  std::string error;
  const int port = server_port(static_cast<int>(state.range(0)), &error);
  if (port < 0) return state.SkipWithError(error.c_str());
  const int clients = static_cast<int>(state.range(1));
  run_load(port, clients, 0.3, 0, 0);  // warm: every worker has its sessions
  for (auto _ : state) {
    Load l = run_load(port, clients, 3.0, 0, 0);
    state.SetIterationTime(l.seconds);
    report(state, l);
  }
}
BENCHMARK(BM_ServeClients)
    ->ArgNames({"model", "clients"})
    ->ArgsProduct({{0}, {1, 2, 4, 8, 16}})
    ->Args({1, 1})
    ->Args({1, 8})
    ->Iterations(1)
    ->UseManualTime()
    ->Unit(benchmark::kSecond);

void BM_ServeAtRate(benchmark::State& state) {
  std::string error;
  const int port = server_port(static_cast<int>(state.range(0)), &error);
  if (port < 0) return state.SkipWithError(error.c_str());
  const double rate = static_cast<double>(state.range(1));
  run_load(port, 8, 0.3, 0, 0);
  for (auto _ : state) {
    Load l = run_load(port, 8, 3.0, 0, rate);
    state.SetIterationTime(l.seconds);
    report(state, l);
  }
}
BENCHMARK(BM_ServeAtRate)
    ->ArgNames({"model", "rate"})
    ->Args({0, 500})
    ->Args({0, 1000})
    ->Args({0, 1400})
    ->Args({0, 2000})
    ->Iterations(1)
    ->UseManualTime()
    ->Unit(benchmark::kSecond);

// bert_run's text mode in-process: tokenize, run one sentence on a batch-1 session, post-process.
double direct_sentences_per_s(int m, size_t n, int threads, std::string* error) {
  // One model and one batch-1 session (all cores, as bert_run's default) per preset, reused for
  // every length: the steady state of bert_run's text path, without its per-process model load and
  // session planning.
  struct Direct {
    std::shared_ptr<const bert::Model> model;
    std::optional<bert::Tokenizer> tok;
    std::unique_ptr<bert::Session> session;
  };
  static std::map<std::pair<int, int>, Direct> cache;
  Direct& d = cache[{m, threads}];
  if (!d.session) {
    auto model = bert::Model::Load(model_file(m, error));
    if (!model.ok()) {
      *error = model.status().to_string();
      return -1;
    }
    d.model = *model;
    bert::TokenizerOptions topts;
    topts.lower_case = d.model->lower_case();
    auto tok = bert::Tokenizer::FromVocab(d.model->vocab(), topts);
    if (!tok.ok()) return -1;
    d.tok = std::move(*tok);
    auto session = bert::Session::Create(d.model, {.max_batch = 1, .max_seq = 128, .num_threads = threads});
    if (!session.ok()) {
      *error = session.status().to_string();
      return -1;
    }
    d.session = std::move(session.value());
  }
  const auto start = Clock::now();
  for (size_t i = 0; i < n; ++i) {
    auto enc = d.tok->Encode(sentences()[i % sentences().size()], std::nullopt, 128);
    const int seq = static_cast<int>(enc->input_ids.size());
    bert::BatchInput in{1, seq, enc->input_ids.data(), enc->attention_mask.data(), enc->token_type_ids.data()};
    if (!d.session->Run(in).ok()) return -1;
    auto pr = bert::Predict(*d.session, *d.model, *d.tok, *enc);
    benchmark::DoNotOptimize(pr);
  }
  return n / std::chrono::duration<double>(Clock::now() - start).count();
}

void BM_ServeVsDirect(benchmark::State& state) {
  const int m = static_cast<int>(state.range(0));
  std::string error;
  const int port = server_port(m, &error);
  if (port < 0) return state.SkipWithError(error.c_str());
  const long n = m == 0 ? 4000 : 200;
  // Warm both over the very sentences they are timed on (the GEMMs are planned per shape).
  direct_sentences_per_s(m, std::min<long>(n, 872), 0, &error);
  direct_sentences_per_s(m, std::min<long>(n, 872), 1, &error);
  run_load(port, 8, 0, std::min<long>(n, 872), 0);
  for (auto _ : state) {
    const double direct = direct_sentences_per_s(m, n, 0, &error);
    const double direct1 = direct_sentences_per_s(m, n, 1, &error);
    if (direct < 0 || direct1 < 0) return state.SkipWithError(error.c_str());
    Load l = run_load(port, 8, 0, n, 0);
    state.SetIterationTime(l.seconds);
    report(state, l);
    state.counters["direct_sentences_per_s"] = direct;
    state.counters["server_over_direct"] = (l.ok / l.seconds) / direct;
    // Per core: the server's workers each run one thread, so compare with one-thread runs on every core.
    const double cores = std::max(1u, std::thread::hardware_concurrency());
    state.counters["direct_1thread_sentences_per_s"] = direct1;
    state.counters["server_over_cores_x_direct_1thread"] = (l.ok / l.seconds) / (cores * direct1);
  }
}
BENCHMARK(BM_ServeVsDirect)->ArgNames({"model"})->Arg(0)->Arg(1)->Iterations(1)->UseManualTime()->Unit(benchmark::kSecond);

// One core each: a server with one worker against bert_run's path on one thread, the same sentences,
// alternating; on a machine whose cores are shared this is the fairer measure of what the server adds.
void BM_ServeVsDirectOneCore(benchmark::State& state) {
  const int m = static_cast<int>(state.range(0));
  std::string error;
  const int port = server_port(m, &error, 1);
  if (port < 0) return state.SkipWithError(error.c_str());
  const long n = m == 0 ? 4000 : 100;
  direct_sentences_per_s(m, std::min<long>(n, 872), 1, &error);
  run_load(port, 8, 0, std::min<long>(n, 872), 0);
  for (auto _ : state) {
    const double direct1 = direct_sentences_per_s(m, n, 1, &error);
    if (direct1 < 0) return state.SkipWithError(error.c_str());
    Load l = run_load(port, 8, 0, n, 0);
    state.SetIterationTime(l.seconds);
    report(state, l);
    state.counters["direct_1thread_sentences_per_s"] = direct1;
    state.counters["server_over_direct"] = (l.ok / l.seconds) / direct1;
  }
}
BENCHMARK(BM_ServeVsDirectOneCore)->ArgNames({"model"})->Arg(0)->Arg(1)->Iterations(1)->UseManualTime()->Unit(benchmark::kSecond);

}  // namespace
