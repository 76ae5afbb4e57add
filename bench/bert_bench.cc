// bert_bench: the engine's benchmark front door (Google Benchmark).
//
//   bert_bench [--model FILE] [--profile] [--benchmark_filter=REGEX] [other Google Benchmark flags]
//   (--profile adds per-op milliseconds per run as counters: embed, gemm.*, attention.*, softmax, ...;
//    GEMM ops name the oneDNN implementation that ran them, e.g. "ms:gemm.qkv [brg:avx512_core]";
//    BM_TrainStep adds the backward's ops and optimizer.step)
//
// BM_Inference   CPU inference over model x batch x seq x threads x precision (0 fp32, 1 bf16, 2 int8:
//                the encoder's linear layers; the label names it) x packed (SessionOptions.remove_padding;
//                the masks are full, so it measures the packing's overhead), with sequences/s, tokens/s and
//                GFLOP/s counters (GEMM + attention FLOPs). Models: the zoo (bert-base, bert-tiny,
//                distilbert-base, electra-small, squeezebert-uncased, albert-base shapes) with seeded
//                synthetic weights, or the file given with --model (reported as model:0).
//                speedup_vs_bert_base = bert-base's latency / this model's at the same batch, seq and
//                threads (bert-base is timed on the side when its own benchmark did not run).
// BM_PaddingRemoval  bert-base batch 8 (or --model) over seq 128 with SST-2-like sentence lengths (mean
//                25 tokens, 5..55: SST-2 dev averages 25.2, longest 55), padded vs remove_padding (the
//                encoder on the real tokens only), with real tokens/s and the real-token fraction.
// BM_Sst2Dev     SST-2 dev (../shared/data, all 872 sentences, engine-tokenised), bert-base batch 32: padded
//                to 128, to each batch's longest, and packed (bench/sst2_bench.cc; skipped without the data).
// BM_ModelLoad   Model::Load of an engine file (bert-base-shaped synthetic by default, or --model).
// BM_CudaGemmPeak, BM_CudaInference: the GPU (bench/cuda_bench.cc), in CUDA builds with a GPU.
// BM_TrainStep   One training step (forward + backward + AdamW) of a sequence classifier over
//                model (bert-base, bert-mini shapes) x batch x seq x threads x precision (0 fp32, 1 bf16
//                GEMMs on fp32 master weights), with samples/s and
//                GFLOP/s (3x the forward FLOPs: the backward's two GEMMs per forward GEMM).
#include <benchmark/benchmark.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <tuple>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "bert/engine.h"
#include "bert/train.h"
#include "bert/model_builder.h"  // LoadSynthetic, WriteSynthetic (synthetic weights without a file)
#include "tools/common/cli.h"

void register_cuda_benchmarks();  // bench/cuda_bench.cc (a no-op without CUDA)
void register_dist_benchmarks();  // bench/dist_bench.cc (BM_DataParallel*: ranks under mpirun)
void register_sst2_benchmarks();  // bench/sst2_bench.cc (BM_Sst2Dev: SST-2 dev from ../shared/data)
bool is_reporting_rank();         // bench/dist_bench.cc: rank 0, or the only process
void register_experiment_benchmarks();  // bench/experiments: the studies' experiments (docs/EXPERIMENTS.md)

namespace {

std::string g_model_file;  // --model FILE, or empty for the synthetic shapes
bool g_profile = false;    // --profile: per-op milliseconds per run as counters
bool g_failed = false;     // a benchmark stopped on an error (not a planned skip): main exits 1

void skip_with_error(benchmark::State& state, const std::string& message) {
  g_failed = true;
  state.SkipWithError(message.c_str());
}

// Model index -> model, loaded once per process. Index 0 is the speed-up baseline.
const char* const kShapes[] = {"bert-base",           "bert-tiny",  "distilbert-base", "electra-small",
                               "squeezebert-uncased", "albert-base"};
constexpr int kNumShapes = sizeof(kShapes) / sizeof(kShapes[0]);

// BM_Inference's precision argument.
constexpr bert::Precision kPrecisions[] = {bert::Precision::kF32, bert::Precision::kBF16, bert::Precision::kInt8};

std::shared_ptr<const bert::Model> get_model(int index, std::string* error,
                                             bert::Precision precision = bert::Precision::kF32) {
  static std::map<std::pair<int, bert::Precision>, std::shared_ptr<const bert::Model>> cache;
  if (auto it = cache.find({index, precision}); it != cache.end()) return it->second;
  bert::Result<std::shared_ptr<const bert::Model>> m = bert::internal_error("unset");
  bert::LoadOptions load;
  load.precision = precision;
  if (!g_model_file.empty()) {
    m = bert::Model::Load(g_model_file, load);
  } else {
    m = bert::LoadSynthetic({.preset = kShapes[index], .seed = 1234}, load);  // the family's base model
  }
  if (!m.ok()) return *error = m.status().to_string(), nullptr;
  return cache[{index, precision}] = *m;
}

// Seconds per run of bert-base (synthetic) at batch x seq x threads: recorded by its own benchmark,
// or timed here (median of 3 after a warm-up) when that did not run first.
std::map<std::tuple<int, int, int>, double>& baseline_seconds() {
  static std::map<std::tuple<int, int, int>, double> m;
  return m;
}

double time_bert_base(int batch, int seq, int threads) {
  auto key = std::make_tuple(batch, seq, threads);
  if (auto it = baseline_seconds().find(key); it != baseline_seconds().end()) return it->second;
  std::string error;
  auto model = get_model(0, &error);
  if (!model) return 0;
  bert::SessionOptions opts;
  opts.max_batch = batch, opts.max_seq = seq, opts.num_threads = threads;
  auto session = bert::Session::Create(model, opts);
  if (!session.ok()) return 0;
  std::vector<int32_t> ids(size_t(batch) * seq, 2000), mask(ids.size(), 1);
  bert::BatchInput in{batch, seq, ids.data(), mask.data(), nullptr};
  std::vector<double> runs;
  for (int i = 0; i < 4; ++i) {
    auto start = std::chrono::steady_clock::now();
    if (!(*session)->Run(in).ok()) return 0;
    runs.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  std::sort(runs.begin() + 1, runs.end());  // runs[0] is the warm-up
  return baseline_seconds()[key] = runs[2];
}

// --profile: "ms:<op>" counters, milliseconds per run; GEMM ops name their implementation
// ("ms:gemm.qkv [brg:avx512_core]").
void add_profile_counters(benchmark::State& state, const std::vector<bert::OpProfile>& profile, double runs) {
  for (const bert::OpProfile& p : profile) state.counters["ms:" + p.display_name()] = p.seconds * 1e3 / runs;
}

void BM_Inference(benchmark::State& state) {
  const int model_index = static_cast<int>(state.range(0));
  const int batch = static_cast<int>(state.range(1)), seq = static_cast<int>(state.range(2));
  const int threads = static_cast<int>(state.range(3));
  const bert::Precision precision = kPrecisions[state.range(4)];
  const bool packed = state.range(5) != 0;
  std::string error;
  auto model = get_model(model_index, &error, precision);
  // A precision this CPU cannot run (bf16 without AVX-512) is a planned skip, not a failure.
  if (!model && error.find("CPU") != std::string::npos) return state.SkipWithError(error.c_str());
  if (!model) return skip_with_error(state, error);
  if (seq > model->info().max_seq) return state.SkipWithError("seq beyond the position table");
  state.SetLabel(std::string(g_model_file.empty() ? kShapes[model_index] : g_model_file) + " " +
                 bert::precision_name(precision) + (packed ? " packed" : ""));

  bert::SessionOptions opts;
  opts.remove_padding = packed;
  opts.max_batch = batch;
  opts.max_seq = seq;
  opts.num_threads = threads;
  opts.profile = g_profile;
  auto session = bert::Session::Create(model, opts);
  if (!session.ok()) return skip_with_error(state, session.status().to_string());

  // Random tokens (ids 1000.. avoid special tokens), full attention mask, two segments.
  std::mt19937 rng(42);
  std::uniform_int_distribution<int32_t> id(std::min<int64_t>(1000, model->info().vocab_size - 1),
                                            model->info().vocab_size - 1);
  std::vector<int32_t> ids(size_t(batch) * seq), mask(ids.size(), 1), types(ids.size(), 0);
  for (size_t i = 0; i < ids.size(); ++i) {
    ids[i] = id(rng);
    types[i] = (i % seq) >= size_t(seq) / 2 && model->info().type_vocab_size > 1;
  }
  bert::BatchInput in{batch, seq, ids.data(), mask.data(), types.data()};
  if (auto st = (*session)->Run(in); !st.ok()) return skip_with_error(state, st.to_string());  // warm-up: plans

  const auto start = std::chrono::steady_clock::now();
  for (auto _ : state) {
    auto st = (*session)->Run(in);
    benchmark::DoNotOptimize(st);
  }
  const double seconds_per_run =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() / double(state.iterations());
  if (g_model_file.empty() && precision == bert::Precision::kF32 && !packed) {
    if (model_index == 0) baseline_seconds()[std::make_tuple(batch, seq, threads)] = seconds_per_run;
    if (double base = time_bert_base(batch, seq, threads); base > 0)
      state.counters["speedup_vs_bert_base"] = base / seconds_per_run;
  }
  const double flops = model->forward_flops(batch, seq);
  state.counters["seq/s"] = benchmark::Counter(double(batch), benchmark::Counter::kIsIterationInvariantRate);
  state.counters["tokens/s"] = benchmark::Counter(double(batch) * seq, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["GFLOP/s"] = benchmark::Counter(flops / 1e9, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["workspace_MiB"] = double((*session)->workspace_bytes()) / (1 << 20);
  if (g_profile) {
    const double runs = double(state.iterations()) + 1;  // + the warm-up run
    add_profile_counters(state, (*session)->Profile(), runs);
  }
}

void inference_args(benchmark::internal::Benchmark* b) {
  b->ArgNames({"model", "batch", "seq", "threads", "precision", "packed"});
  const int models = g_model_file.empty() ? kNumShapes : 1;
  for (int m = 0; m < models; ++m)
    for (int batch : {1, 8})
      for (int seq : {32, 128, 384})
        for (int threads : {1, 2})
          for (int precision : {0, 1, 2})
            for (int packed : {0, 1}) {
              // SqueezeBERT's grouped layers run fp32 only; padding removal is timed in fp32.
              if (precision > 0 && (packed || (g_model_file.empty() && kShapes[m] == std::string("squeezebert-uncased"))))
                continue;
              b->Args({m, batch, seq, threads, precision, packed});
            }
  b->UseRealTime()->Unit(benchmark::kMillisecond)->MeasureProcessCPUTime();
}

void BM_PaddingRemoval(benchmark::State& state) {
  const bool remove = state.range(0) != 0;
  const int batch = static_cast<int>(state.range(1)), seq = 128, threads = static_cast<int>(state.range(2));
  std::string error;
  auto model = get_model(0, &error);
  if (!model) return skip_with_error(state, error);
  state.SetLabel(std::string(g_model_file.empty() ? kShapes[0] : g_model_file) + (remove ? " packed" : " padded"));
  bert::SessionOptions opts;
  opts.max_batch = batch, opts.max_seq = seq, opts.num_threads = threads, opts.remove_padding = remove;
  auto session = bert::Session::Create(model, opts);
  if (!session.ok()) return skip_with_error(state, session.status().to_string());
  // Sentence lengths like SST-2 dev's (a seeded draw, the same for both modes), real tokens first.
  std::mt19937 rng(7);
  std::lognormal_distribution<double> length(std::log(22.0), 0.45);
  std::uniform_int_distribution<int32_t> id(1000, int32_t(model->info().vocab_size - 1));
  std::vector<int32_t> ids(size_t(batch) * seq, 0), mask(ids.size(), 0);
  int64_t real = 0;
  for (int b = 0; b < batch; ++b) {
    const int len = std::clamp(static_cast<int>(length(rng)), 5, 55);
    for (int s = 0; s < len; ++s) ids[size_t(b) * seq + s] = id(rng), mask[size_t(b) * seq + s] = 1;
    real += len;
  }
  bert::BatchInput in{batch, seq, ids.data(), mask.data(), nullptr};
  if (auto st = (*session)->Run(in); !st.ok()) return skip_with_error(state, st.to_string());
  for (auto _ : state) {
    auto st = (*session)->Run(in);
    benchmark::DoNotOptimize(st);
  }
  state.counters["seq/s"] = benchmark::Counter(double(batch), benchmark::Counter::kIsIterationInvariantRate);
  state.counters["real_tokens/s"] = benchmark::Counter(double(real), benchmark::Counter::kIsIterationInvariantRate);
  state.counters["real_fraction"] = double(real) / (double(batch) * seq);
}

// Training-step models: synthetic sequence classifiers, loaded once.
const char* const kTrainShapes[] = {"bert-base", "bert-mini"};

void BM_TrainStep(benchmark::State& state) {
  const int model_index = static_cast<int>(state.range(0));
  const int batch = static_cast<int>(state.range(1)), seq = static_cast<int>(state.range(2));
  const int threads = static_cast<int>(state.range(3));
  static std::map<int, std::shared_ptr<const bert::Model>> cache;
  auto& model = cache[model_index];
  if (!model) {
    auto m = bert::LoadSynthetic(
        {.preset = kTrainShapes[model_index], .architecture = "BertForSequenceClassification", .seed = 1234},
        {.pack_weights = false});
    if (!m.ok()) return skip_with_error(state, m.status().to_string());
    model = *m;
  }
  const bool bf16 = state.range(4) != 0;
  state.SetLabel(std::string(kTrainShapes[model_index]) + (bf16 ? " bf16" : " fp32"));
  bert::TrainerOptions opts;
  opts.max_batch = batch, opts.max_seq = seq, opts.num_threads = threads, opts.profile = g_profile;
  opts.precision = bf16 ? bert::TrainPrecision::kBF16 : bert::TrainPrecision::kF32;
  auto trainer = bert::Trainer::Create(model, opts);
  // bf16 on a CPU without a bf16 matmul is a planned skip (the message names the missing feature).
  if (!trainer.ok() && bf16 && trainer.status().code() == bert::ErrorCode::kUnsupported)
    return state.SkipWithError(trainer.status().to_string().c_str());
  if (!trainer.ok()) return skip_with_error(state, trainer.status().to_string());
  std::mt19937 rng(42);
  std::uniform_int_distribution<int32_t> id(1000, static_cast<int32_t>(model->info().vocab_size - 1));
  std::vector<int32_t> ids(size_t(batch) * seq), mask(ids.size(), 1), labels(batch);
  for (auto& x : ids) x = id(rng);
  for (int b = 0; b < batch; ++b) labels[b] = b % 2;
  bert::BatchInput in{batch, seq, ids.data(), mask.data(), nullptr};
  bert::TrainLabels y;
  y.labels = labels.data();
  auto step = [&]() -> bert::Status {
    BERT_RETURN_IF_ERROR((*trainer)->ForwardBackward(in, y).status());
    return (*trainer)->Step(1e-5f).status();
  };
  if (auto st = step(); !st.ok()) return skip_with_error(state, st.to_string());  // warm-up: plans
  for (auto _ : state) {
    auto st = step();
    benchmark::DoNotOptimize(st);
  }
  const double flops = 3 * model->forward_flops(batch, seq);
  state.counters["samples/s"] = benchmark::Counter(double(batch), benchmark::Counter::kIsIterationInvariantRate);
  state.counters["GFLOP/s"] = benchmark::Counter(flops / 1e9, benchmark::Counter::kIsIterationInvariantRate);
  if (g_profile) add_profile_counters(state, (*trainer)->Profile(), double(state.iterations()) + 1);
}

void train_args(benchmark::internal::Benchmark* b) {
  b->ArgNames({"model", "batch", "seq", "threads", "precision"});  // precision: 0 fp32, 1 bf16 mixed precision
  for (int precision : {0, 1})
    for (int threads : {1, 2}) {
      b->Args({0, 8, 128, threads, precision});
      for (int batch : {8, 32}) b->Args({1, batch, 128, threads, precision});
    }
  b->UseRealTime()->Unit(benchmark::kMillisecond)->MeasureProcessCPUTime();
}

void BM_ModelLoad(benchmark::State& state) {
  // An engine file on disk: --model, or a bert-base-shaped synthetic one written once.
  static std::string path;
  if (path.empty()) {
    if (!g_model_file.empty()) {
      path = g_model_file;
    } else {
      path = (std::filesystem::temp_directory_path() / ("bert_bench_base_" + std::to_string(getpid()) + ".bert")).string();
      if (auto r = bert::WriteSynthetic({.preset = "bert-base", .seed = 1234}, path, bert::DType::kF32); !r.ok())
        return skip_with_error(state, r.status().to_string());
    }
  }
  for (auto _ : state) {
    auto m = bert::Model::Load(path);
    if (!m.ok()) return skip_with_error(state, m.status().to_string());
    benchmark::DoNotOptimize(m);
  }
  state.SetLabel(path);
  std::error_code ec;
  state.counters["file_MiB"] = double(std::filesystem::file_size(path, ec)) / (1 << 20);
  if (g_model_file.empty()) std::filesystem::remove(path, ec), path.clear();
}

// The CPU flags that decide which paths run (every recorded figure names them).
std::string cpu_flags() {
  std::ifstream in("/proc/cpuinfo");
  std::string line, word, flags;
  while (std::getline(in, line))
    if (line.rfind("flags", 0) == 0) break;
  std::istringstream words(line);
  std::set<std::string> have;
  while (words >> word) have.insert(word);
  for (const char* f : {"avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile"})
    if (have.count(f)) flags += (flags.empty() ? "" : " ") + std::string(f);
  return flags.empty() ? "unknown" : flags;
}

}  // namespace

int main(int argc, char** argv) {
  // --model and --profile are ours (tools/common/cli.h); --benchmark_* go to Google Benchmark.
  std::vector<std::string> benchmark_flags;
  cli::Parser p("bert_bench", "bert_bench [--model FILE] [--profile] [--benchmark_filter=REGEX] [other --benchmark_* flags]",
                "Google Benchmark's own flags (--benchmark_*) are passed through; bert_bench --benchmark_help\n"
                "lists them.");
  p.string("--model", &g_model_file, "FILE", "benchmark this engine file instead of the synthetic shapes");
  p.flag("--profile", &g_profile, "per-op milliseconds per run as counters");
  p.pass_through("--benchmark_", &benchmark_flags);
  if (auto code = p.parse(argc, argv)) return *code;
  if (!g_model_file.empty()) {  // a file that does not load is an error, not a skipped benchmark
    auto m = bert::Model::Load(g_model_file);
    if (!m.ok()) return p.fail(m.status().to_string());
  }
  std::vector<char*> args{argv[0]};
  for (std::string& f : benchmark_flags)  // under mpirun only rank 0 writes --benchmark_out
    if (is_reporting_rank() || f.rfind("--benchmark_out", 0) != 0) args.push_back(f.data());
  int n = static_cast<int>(args.size());
  benchmark::Initialize(&n, args.data());
  if (benchmark::ReportUnrecognizedArguments(n, args.data())) return 1;
  benchmark::RegisterBenchmark("BM_Inference", BM_Inference)->Apply(inference_args);
  benchmark::RegisterBenchmark("BM_PaddingRemoval", BM_PaddingRemoval)
      ->ArgNames({"remove", "batch", "threads"})
      ->ArgsProduct({{0, 1}, {8}, {1, 2}})
      ->UseRealTime()
      ->Unit(benchmark::kMillisecond)
      ->MeasureProcessCPUTime();
  benchmark::RegisterBenchmark("BM_ModelLoad", BM_ModelLoad)->Unit(benchmark::kMillisecond)->Iterations(5);
  if (g_model_file.empty()) benchmark::RegisterBenchmark("BM_TrainStep", BM_TrainStep)->Apply(train_args);
  if (g_model_file.empty()) register_cuda_benchmarks();
  if (g_model_file.empty()) register_dist_benchmarks();
  if (g_model_file.empty()) register_sst2_benchmarks();
  if (g_model_file.empty()) register_experiment_benchmarks();
  benchmark::AddCustomContext("engine", "bert_engine CPU fp32 / bf16 / int8 (oneDNN GEMMs, hand-written kernels)");
  benchmark::AddCustomContext("cpu_flags", cpu_flags());
  benchmark::AddCustomContext("weights", g_model_file.empty() ? "synthetic, seed 1234" : g_model_file);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  if (g_failed) std::fprintf(stderr, "bert_bench: a benchmark stopped on an error (above)\n");
  return g_failed ? 1 : 0;
}
