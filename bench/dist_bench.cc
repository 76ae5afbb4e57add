// Data-parallel benchmarks (run under `mpirun -np N bert_bench --benchmark_filter=BM_DataParallel`, or
// alone for the one-rank baseline; rank 0 reports, the other ranks' output is discarded):
// BM_DataParallelTrainStep  one fp32 training step of a sequence classifier: each rank its share of
//                           the global batch, gradients all-reduced in buckets during the backward,
//                           then AdamW (ZeRO stage as an argument). Counters: samples/s (global),
//                           the share of the step spent waiting for communication after the backward,
//                           gradient bytes all-reduced per step, per-rank memory.
// BM_DataParallelInference  a fixed set of records shared by the ranks, 8 rows per run, ended by a
//                           barrier: records/s of the whole job.
// Iteration counts are fixed: every rank must run the same collectives.
#include <benchmark/benchmark.h>
#include <sys/resource.h>

#include <cstdio>
#include <algorithm>
#include <chrono>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "bert/comm.h"
#include "bert/engine.h"
#include "bert/model_builder.h"
#include "bert/train.h"

namespace {

const char* const kDpShapes[] = {"bert-base", "bert-mini", "bert-tiny"};

std::shared_ptr<bert::Communicator> comm() {
  static std::shared_ptr<bert::Communicator> c = [] {
    auto r = bert::Communicator::FromEnvironment();
    if (!r.ok()) {
      std::fprintf(stderr, "bert_bench: %s\n", r.status().to_string().c_str());
      std::exit(1);
    }
    return *r;
  }();
  return c;
}

std::shared_ptr<const bert::Model> dp_model(int index, const char* architecture, bert::Status* error) {
  static std::map<std::pair<int, std::string>, std::shared_ptr<const bert::Model>> cache;
  auto& m = cache[{index, architecture}];
  if (!m) {
    auto r = bert::LoadSynthetic({.preset = kDpShapes[index], .architecture = architecture, .seed = 1234},
                                 {.pack_weights = false});
    if (!r.ok()) return *error = r.status(), nullptr;
    m = *r;
  }
  return m;
}

// This rank's rows of `n`: contiguous shares differing by at most one.
std::pair<int, int> share(int n) {
  const int ranks = comm()->world_size(), r = comm()->rank(), per = n / ranks, extra = n % ranks;
  const int from = r * per + std::min(r, extra);
  return {from, from + per + (r < extra ? 1 : 0)};
}

void BM_DataParallelTrainStep(benchmark::State& state) {
  const int model_index = static_cast<int>(state.range(0)), batch = static_cast<int>(state.range(1));
  const int seq = static_cast<int>(state.range(2)), threads = static_cast<int>(state.range(3));
  const int zero = static_cast<int>(state.range(4));
  bert::Status error;
  auto model = dp_model(model_index, "BertForSequenceClassification", &error);
  if (!model) return state.SkipWithError(error.to_string().c_str());
  const auto [lo, hi] = share(batch);
  const int rows = hi - lo;
  if (rows < 1) return state.SkipWithError("fewer rows than ranks");
  bert::TrainerOptions o;
  o.max_batch = rows, o.max_seq = seq, o.num_threads = threads, o.dropout = 0;
  o.communicator = comm(), o.zero_stage = zero;
  auto trainer = bert::Trainer::Create(model, o);
  if (!trainer.ok()) return state.SkipWithError(trainer.status().to_string().c_str());
  std::mt19937 rng(42 + comm()->rank());
  std::uniform_int_distribution<int32_t> id(1000, static_cast<int32_t>(model->info().vocab_size - 1));
  std::vector<int32_t> ids(size_t(rows) * seq), mask(ids.size(), 1), labels(rows);
  for (auto& x : ids) x = id(rng);
  for (int b = 0; b < rows; ++b) labels[b] = (lo + b) % 2;
  bert::BatchInput in{rows, seq, ids.data(), mask.data(), nullptr};
  bert::TrainLabels y;
  y.labels = labels.data();
  auto step = [&]() -> bert::Status {
    BERT_RETURN_IF_ERROR((*trainer)->ForwardBackward(in, y, float(rows) / batch).status());
    return (*trainer)->Step(1e-5f).status();
  };
  if (auto st = step(); !st.ok()) return state.SkipWithError(st.to_string().c_str());  // warm-up
  const double wait0 = (*trainer)->CommStats().wait_seconds;
  double total = 0;
  for (auto _ : state) {
    const auto t0 = std::chrono::steady_clock::now();
    if (auto st = step(); !st.ok()) return state.SkipWithError(st.to_string().c_str());
    total += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }
  const bert::TrainerCommStats cs = (*trainer)->CommStats();
  const bert::TrainerMemory mem = (*trainer)->Memory();
  struct rusage u;
  getrusage(RUSAGE_SELF, &u);
  state.SetLabel(std::string(kDpShapes[model_index]) + " ranks:" + std::to_string(comm()->world_size()));
  state.counters["ranks"] = comm()->world_size();
  state.counters["samples_per_s"] = benchmark::Counter(double(batch) * state.iterations(), benchmark::Counter::kIsRate);
  state.counters["comm_wait_share"] = total > 0 ? (cs.wait_seconds - wait0) / total : 0;
  state.counters["allreduce_MiB_per_step"] = cs.bytes_per_step / 1048576.0;
  state.counters["rank_state_MiB"] = (mem.parameters + mem.gradients + mem.optimizer_state) / 1048576.0;
  state.counters["rank_activations_MiB"] = mem.activations / 1048576.0;
  state.counters["peak_rss_MiB"] = u.ru_maxrss / 1024.0;
}

void BM_DataParallelInference(benchmark::State& state) {
  const int model_index = static_cast<int>(state.range(0)), records = static_cast<int>(state.range(1));
  const int seq = static_cast<int>(state.range(2)), threads = static_cast<int>(state.range(3));
  const int per_run = 8;
  bert::Status error;
  auto model = dp_model(model_index, "BertForSequenceClassification", &error);
  if (!model) return state.SkipWithError(error.to_string().c_str());
  const auto [lo, hi] = share(records);
  bert::SessionOptions so;
  so.max_batch = per_run, so.max_seq = seq, so.num_threads = threads;
  auto session = bert::Session::Create(model, so);
  if (!session.ok()) return state.SkipWithError(session.status().to_string().c_str());
  std::mt19937 rng(7);
  std::uniform_int_distribution<int32_t> id(1000, static_cast<int32_t>(model->info().vocab_size - 1));
  std::vector<int32_t> ids(size_t(records) * seq), mask(ids.size(), 1);
  for (auto& x : ids) x = id(rng);
  auto run_share = [&]() -> bert::Status {
    for (int r0 = lo; r0 < hi; r0 += per_run) {
      const int n = std::min(per_run, hi - r0);
      BERT_RETURN_IF_ERROR((*session)->Run({n, seq, ids.data() + size_t(r0) * seq, mask.data() + size_t(r0) * seq, nullptr}));
    }
    return comm()->Barrier().Wait();
  };
  if (auto st = run_share(); !st.ok()) return state.SkipWithError(st.to_string().c_str());  // warm-up
  for (auto _ : state)
    if (auto st = run_share(); !st.ok()) return state.SkipWithError(st.to_string().c_str());
  state.SetLabel(std::string(kDpShapes[model_index]) + " ranks:" + std::to_string(comm()->world_size()));
  state.counters["ranks"] = comm()->world_size();
  state.counters["records_per_s"] = benchmark::Counter(double(records) * state.iterations(), benchmark::Counter::kIsRate);
}

}  // namespace

// Called by bert_bench's main.
bool is_reporting_rank() { return comm()->rank() == 0; }

void register_dist_benchmarks() {
  if (comm()->world_size() > 1 && comm()->rank() != 0)
    if (!std::freopen("/dev/null", "w", stdout)) std::perror("bert_bench: /dev/null");
  benchmark::RegisterBenchmark("BM_DataParallelTrainStep", BM_DataParallelTrainStep)
      ->ArgNames({"model", "batch", "seq", "threads", "zero"})
      ->Args({0, 8, 128, 1, 0})
      ->Args({0, 8, 128, 2, 0})
      ->Args({0, 8, 128, 1, 1})
      ->Args({0, 8, 128, 1, 2})
      ->Args({1, 32, 128, 1, 0})
      ->Args({1, 32, 128, 2, 0})
      ->Args({1, 32, 128, 1, 1})
      ->Args({1, 32, 128, 1, 2})
      ->Iterations(3)
      ->UseRealTime()
      ->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark("BM_DataParallelInference", BM_DataParallelInference)
      ->ArgNames({"model", "records", "seq", "threads"})
      ->Args({0, 32, 128, 1})
      ->Args({0, 32, 128, 2})
      ->Args({2, 400, 64, 1})
      ->Args({2, 400, 64, 2})
      ->Iterations(3)
      ->UseRealTime()
      ->Unit(benchmark::kMillisecond);
}
