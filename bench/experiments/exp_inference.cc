// The studies' inference experiments as Google Benchmark families (docs/EXPERIMENTS.md):
//   Workers        study 000: SST-2 records classified by W sessions on W threads (each loads the model
//                  from its file) x T OpenMP threads: load time, inference time, records/s, bytes read/s.
//   DataParallel   study 000 (GPU part) on CPU ranks: the records shared by the mpirun ranks.
//   ZooDeploy      study 002: the zoo's four models over input sizes on 1 thread and all threads.
//   Optimization   study 002: fp32 padded vs the packed path vs int8 / bf16 (padded and packed): latency and accuracy.
//   MemoryVsSeq, MemoryVsBatch, TimeVsSeq   study 003: QA models' memory and time over the grid.
//   Profile        study 004: per-op times of one inference and of a training step's phases.
// Every family runs a fixed number of iterations (BERT_EXP_SCALE picks the grid); counters hold the
// figures, scripts/experiments/report.py turns them into tables and plots.
#include <algorithm>
#include <atomic>
#include <barrier>
#include <filesystem>
#include <map>
#include <random>
#include <thread>

#include "bench/experiments/exp_common.h"
#include "bert/comm.h"
#include "bert/train.h"

namespace studies {

namespace {

// ---- Workers ------------------------------------------------------------------------------------

void Workers(benchmark::State& state) {
  const int records = static_cast<int>(state.range(0)), workers = static_cast<int>(state.range(1));
  const int threads = static_cast<int>(state.range(2));
  const std::string shape = by_scale<std::string>("bert-tiny", "bert-base", "bert-base");
  std::string err;
  const std::string path = synthetic_file(shape, "BertForSequenceClassification", &err);
  if (path.empty()) return state.SkipWithError(err.c_str());
  const auto texts = sst2_sentences(records, &err);
  const Sst2* data = sst2(1, &err);
  if (texts.empty() || !data) return state.SkipWithError(err.c_str());
  std::error_code ec;
  const int64_t weight_bytes = static_cast<int64_t>(std::filesystem::file_size(path, ec));

  std::vector<double> load_s(workers), infer_s(workers), bytes(workers);
  std::vector<std::string> errors(workers);
  std::atomic<int64_t> done{0};
  std::atomic<int> finished{0};
  double inference_wall = 0;
  MemoryProbe mem;
  mem.start();
  for (auto _ : state) {
    std::barrier sync(workers + 1);
    std::vector<std::thread> pool;
    for (int w = 0; w < workers; ++w) {
      pool.emplace_back([&, w] {
        const int lo = static_cast<int>(int64_t(records) * w / workers);
        const int hi = static_cast<int>(int64_t(records) * (w + 1) / workers);
        const auto t0 = std::chrono::steady_clock::now();
        auto model = bert::Model::Load(path);
        std::unique_ptr<bert::Session> session;
        if (model.ok()) {
          auto s = bert::Session::Create(*model, {.max_batch = 1, .max_seq = 128, .num_threads = threads});
          if (s.ok()) session = std::move(*s); else errors[w] = s.status().to_string();
        } else {
          errors[w] = model.status().to_string();
        }
        load_s[w] = seconds_since(t0);
        sync.arrive_and_wait();  // every worker loaded: inference starts together
        const auto t1 = std::chrono::steady_clock::now();
        for (int r = lo; r < hi && session; ++r) {
          auto enc = data->tok.Encode(texts[r], std::nullopt, 128);
          if (!enc.ok()) { errors[w] = enc.status().to_string(); break; }
          const int len = static_cast<int>(enc->input_ids.size());
          auto st = session->Run({1, len, enc->input_ids.data(), enc->attention_mask.data(), enc->token_type_ids.data()});
          if (!st.ok()) { errors[w] = st.to_string(); break; }
          bytes[w] += forward_bytes_read((*model)->info(), weight_bytes, 1, len);
          ++done;
        }
        infer_s[w] = seconds_since(t1);
        ++finished;
      });
    }
    sync.arrive_and_wait();
    const auto t1 = std::chrono::steady_clock::now();
    {
      Progress progress("workers " + std::to_string(workers) + "x" + std::to_string(threads), records);
      int64_t shown = 0;
      while (finished.load() < workers) {
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
        const int64_t d = done.load();
        progress.add(d - shown), shown = d;
      }
      for (auto& t : pool) t.join();
    }
    inference_wall = seconds_since(t1);
  }
  mem.finish();
  for (auto& e : errors)
    if (!e.empty()) return state.SkipWithError(e.c_str());
  double total_bytes = 0;
  for (double b : bytes) total_bytes += b;
  state.SetLabel(shape + " " + std::to_string(workers) + " worker(s) x " + std::to_string(threads) + " thread(s)");
  state.counters["records"] = records;
  state.counters["workers"] = workers;
  state.counters["threads"] = threads;
  state.counters["load_s"] = *std::max_element(load_s.begin(), load_s.end());
  state.counters["inference_s"] = inference_wall;
  state.counters["records_per_s"] = records / inference_wall;
  state.counters["GBps_read"] = total_bytes / inference_wall / 1e9;
  state.counters["weights_MiB"] = weight_bytes / 1048576.0;
  mem.counters(state);
}

// ---- DataParallel (CPU ranks) -----------------------------------------------------------------

void DataParallel(benchmark::State& state) {
  const int records = static_cast<int>(state.range(0)), threads = static_cast<int>(state.range(1));
  auto comm_r = bert::Communicator::FromEnvironment();
  if (!comm_r.ok()) return state.SkipWithError(comm_r.status().to_string().c_str());
  auto comm = *comm_r;
  const std::string shape = by_scale<std::string>("bert-tiny", "bert-base", "bert-base");
  std::string err;
  const std::string path = synthetic_file(shape, "BertForSequenceClassification", &err);
  const auto texts = sst2_sentences(records, &err);
  const Sst2* data = sst2(1, &err);
  if (path.empty() || texts.empty() || !data) return state.SkipWithError(err.c_str());
  const int ranks = comm->world_size(), rank = comm->rank();
  const int lo = static_cast<int>(int64_t(records) * rank / ranks), hi = static_cast<int>(int64_t(records) * (rank + 1) / ranks);
  double load = 0, infer = 0;
  for (auto _ : state) {
    if (auto st = comm->Barrier().Wait(); !st.ok()) return state.SkipWithError(st.to_string().c_str());
    const auto t0 = std::chrono::steady_clock::now();
    auto model = bert::Model::Load(path);
    if (!model.ok()) return state.SkipWithError(model.status().to_string().c_str());
    auto session = bert::Session::Create(*model, {.max_batch = 8, .max_seq = 128, .num_threads = threads});
    if (!session.ok()) return state.SkipWithError(session.status().to_string().c_str());
    load = seconds_since(t0);
    (void)comm->Barrier().Wait();
    const auto t1 = std::chrono::steady_clock::now();
    Progress progress("ranks " + std::to_string(ranks), hi - lo);
    for (int r = lo; r < hi; r += 8) {
      std::vector<bert::Encoding> encs;
      for (int i = r; i < std::min(hi, r + 8); ++i) {
        auto e = data->tok.Encode(texts[i], std::nullopt, 128);
        if (!e.ok()) return state.SkipWithError(e.status().to_string().c_str());
        encs.push_back(std::move(*e));
      }
      bert::EncodedBatch b = bert::pad_batch(encs, data->tok.pad_id());
      if (auto st = (*session)->Run({b.batch, b.seq, b.input_ids.data(), b.attention_mask.data(), b.token_type_ids.data()});
          !st.ok())
        return state.SkipWithError(st.to_string().c_str());
      progress.add(b.batch);
    }
    (void)comm->Barrier().Wait();
    infer = seconds_since(t1);
  }
  // The job's load time is its slowest rank's.
  std::vector<double> loads(ranks);
  loads[rank] = load;
  (void)comm->AllGather(&loads[rank], loads.data(), 1, bert::CommType::kF64).Wait();
  state.SetLabel(shape + " " + std::to_string(ranks) + " rank(s) x " + std::to_string(threads) + " thread(s)");
  state.counters["records"] = records;
  state.counters["ranks"] = ranks;
  state.counters["threads"] = threads;
  state.counters["load_s"] = *std::max_element(loads.begin(), loads.end());
  state.counters["inference_s"] = infer;
  state.counters["records_per_s"] = records / infer;
}

// ---- ZooDeploy --------------------------------------------------------------------------------

const char* const kZoo[][2] = {{"bert-base", "BertForSequenceClassification"},
                               {"bert-tiny", "BertForSequenceClassification"},
                               {"distilbert-base", "DistilBertForSequenceClassification"},
                               {"electra-small", "ElectraForSequenceClassification"}};

// One synthetic model at a time (the grids go model by model), so memory stays that of one.
std::shared_ptr<const bert::Model> one_model(const std::string& shape, const std::string& arch, const std::string& patch,
                                             std::string* err) {
  static std::string key;
  static std::shared_ptr<const bert::Model> model;
  const std::string k = shape + "|" + arch + "|" + patch;
  if (k != key || !model) {
    model.reset();
    key = k;
    std::string p = patch;
    if (p.empty() && scale() == Scale::kSmoke)  // smoke: two layers of each shape (quick to create)
      p = shape.rfind("distilbert", 0) == 0 ? R"({"n_layers": 2})" : R"({"num_hidden_layers": 2})";
    auto m = synthetic(shape, arch, p);
    if (!m.ok()) return *err = m.status().to_string(), nullptr;
    model = *m;
  }
  return model;
}

void ZooDeploy(benchmark::State& state) {
  const int m = static_cast<int>(state.range(0)), inputs = static_cast<int>(state.range(2));
  const int threads = state.range(1) == 0 ? all_threads() : static_cast<int>(state.range(1));
  std::string err;
  auto model = one_model(kZoo[m][0], kZoo[m][1], "", &err);
  const auto texts = sst2_sentences(inputs, &err);
  const Sst2* data = sst2(1, &err);
  if (!model || texts.empty() || !data) return state.SkipWithError(err.c_str());
  auto session = bert::Session::Create(model, {.max_batch = inputs, .max_seq = 128, .num_threads = threads});
  if (!session.ok()) return state.SkipWithError(session.status().to_string().c_str());
  const bool types = model->info().type_vocab_size > 1;
  // What the study's server did per request: tokenize the sentences, one padded batch, the model.
  auto run = [&]() -> bert::Status {
    std::vector<bert::Encoding> encs;
    for (const auto& t : texts) {
      auto e = data->tok.Encode(t, std::nullopt, 128);
      if (!e.ok()) return e.status();
      encs.push_back(std::move(*e));
    }
    bert::EncodedBatch b = bert::pad_batch(encs, data->tok.pad_id());
    return (*session)->Run({b.batch, b.seq, b.input_ids.data(), b.attention_mask.data(),
                            types ? b.token_type_ids.data() : nullptr});
  };
  if (auto st = run(); !st.ok()) return state.SkipWithError(st.to_string().c_str());  // warm-up
  double total = 0;
  for (auto _ : state) {
    const auto t0 = std::chrono::steady_clock::now();
    if (auto st = run(); !st.ok()) return state.SkipWithError(st.to_string().c_str());
    total += seconds_since(t0);
  }
  const double per = total / double(state.iterations());
  state.SetLabel(kZoo[m][0]);
  state.counters["inputs"] = inputs;
  state.counters["threads"] = threads;
  state.counters["seconds"] = per;
  state.counters["sentences_per_s"] = inputs / per;
}

// ---- Optimization -----------------------------------------------------------------------------

struct OptModel {
  const char* shape;
  bool trained;  // fine-tuned on SST-2 here (accuracy means something); else synthetic (latency only)
};
std::vector<OptModel> opt_models() {
  if (scale() == Scale::kSmoke) return {{"bert-tiny", true}};
  if (scale() == Scale::kFull)
    return {{"bert-tiny", true}, {"bert-mini", true}, {"bert-base", false}, {"distilbert-base", false}, {"electra-small", false}};
  return {{"bert-tiny", true}, {"bert-base", false}};
}
const char* const kModes[] = {"fp32 padded", "fp32 packed (remove_padding)", "int8",
                              "bf16",        "int8 packed (remove_padding)", "bf16 packed (remove_padding)"};
constexpr int kModeCount = sizeof(kModes) / sizeof(kModes[0]);
bool packed_mode(int mode) { return mode == 1 || mode >= 4; }

void Optimization(benchmark::State& state) {
  const OptModel om = opt_models()[state.range(0)];
  const int mode = static_cast<int>(state.range(1));
  const int threads = state.range(2) == 0 ? all_threads() : static_cast<int>(state.range(2));
  state.SetLabel(std::string(om.shape) + " " + kModes[mode]);
  std::string err, note;
  std::string path;
  if (om.trained) {
    auto p = trained_sst2_file(om.shape, &note);
    if (!p.ok()) return state.SkipWithError(p.status().to_string().c_str());
    path = *p;
  } else {
    path = synthetic_file(om.shape, "BertForSequenceClassification", &err);
    if (path.empty()) return state.SkipWithError(err.c_str());
  }
  bert::LoadOptions lo;
  if (mode == 2 || mode == 4) lo.precision = bert::Precision::kInt8;
  if (mode == 3 || mode == 5) lo.precision = bert::Precision::kBF16;
  auto model = bert::Model::Load(path, lo);  // bf16 on a CPU without a bf16 matmul: the engine says which feature
  if (!model.ok()) return needs(state, "a precision this CPU runs: " + model.status().to_string());
  const Sst2* data = sst2(1, &err);
  if (!data) return state.SkipWithError(err.c_str());
  const int n = om.trained ? by_scale(64, 872, 872) : by_scale(32, 128, 872);
  std::vector<bert::data::Example> dev(data->dev.begin(), data->dev.begin() + std::min<size_t>(n, data->dev.size()));
  std::vector<bert::data::Example> first(dev.begin(), dev.begin() + std::min<size_t>(32, dev.size()));
  if (auto w = evaluate(*model, first, 32, threads, packed_mode(mode), 128); !w.ok())  // warm-up
    return state.SkipWithError(w.status().to_string().c_str());
  Eval e;
  for (auto _ : state) {
    auto r = evaluate(*model, dev, 32, threads, packed_mode(mode), 128);
    if (!r.ok()) return state.SkipWithError(r.status().to_string().c_str());
    e = *r;
  }
  state.counters["threads"] = threads;
  state.counters["sentences"] = double(e.n);
  state.counters["ms_per_batch32"] = e.seconds * 1e3 / double(e.batches);
  state.counters["sentences_per_s"] = double(e.n) / e.seconds;
  state.counters["accuracy"] = om.trained ? e.accuracy : -1;  // -1: synthetic weights, accuracy meaningless
  state.counters["trained_here"] = om.trained ? 1 : 0;
}

// ---- study 003: memory and time of QA models -----------------------------------------------

const char* const kQa[][2] = {{"bert-base", "BertForQuestionAnswering"},
                              {"distilbert-base", "DistilBertForQuestionAnswering"},
                              {"squeezebert-uncased", "SqueezeBertForQuestionAnswering"}};
const char* const kQaNames[] = {"bert", "distilbert", "squeezebert"};

std::shared_ptr<const bert::Model> qa_model(int m, int seq, std::string* err) {
  return one_model(kQa[m][0], kQa[m][1], seq > 512 ? R"({"max_position_embeddings": 1024})" : "", err);
}

std::vector<int32_t> random_ids(const bert::ModelInfo& info, size_t n) {
  std::mt19937 rng(42);
  std::uniform_int_distribution<int32_t> id(1000, static_cast<int32_t>(info.vocab_size - 1));
  std::vector<int32_t> ids(n);
  for (auto& x : ids) x = id(rng);
  return ids;
}

void QaMemory(benchmark::State& state) {
  const int m = static_cast<int>(state.range(0)), batch = static_cast<int>(state.range(1));
  const int seq = static_cast<int>(state.range(2));
  std::string err;
  auto model = qa_model(m, seq, &err);
  if (!model) return state.SkipWithError(err.c_str());
  state.SetLabel(std::string(kQaNames[m]) + (seq > 512 ? " (1024-row position table, synthetic)" : ""));
  const auto ids = random_ids(model->info(), size_t(batch) * seq);
  const std::vector<int32_t> mask(ids.size(), 1);
  MemoryProbe mem;
  size_t workspace = 0;
  for (auto _ : state) {
    mem.start();
    {
      auto session = bert::Session::Create(model, {.max_batch = batch, .max_seq = seq, .num_threads = all_threads()});
      if (!session.ok()) return state.SkipWithError(session.status().to_string().c_str());
      if (auto st = (*session)->Run({batch, seq, ids.data(), mask.data(), nullptr}); !st.ok())
        return state.SkipWithError(st.to_string().c_str());
      mem.stop_peak();
      workspace = (*session)->workspace_bytes();
    }
    mem.finish();
  }
  state.counters["batch"] = batch;
  state.counters["seq"] = seq;
  state.counters["workspace_MiB"] = workspace / 1048576.0;
  mem.counters(state);
}

void QaTime(benchmark::State& state) {
  const int m = static_cast<int>(state.range(0)), batch = static_cast<int>(state.range(1));
  const int seq = static_cast<int>(state.range(2));
  std::string err;
  auto model = qa_model(m, seq, &err);
  if (!model) return state.SkipWithError(err.c_str());
  state.SetLabel(kQaNames[m]);
  auto session = bert::Session::Create(model, {.max_batch = batch, .max_seq = seq, .num_threads = all_threads()});
  if (!session.ok()) return state.SkipWithError(session.status().to_string().c_str());
  const auto ids = random_ids(model->info(), size_t(batch) * seq);
  const std::vector<int32_t> mask(ids.size(), 1);
  const bert::BatchInput in{batch, seq, ids.data(), mask.data(), nullptr};
  if (auto st = (*session)->Run(in); !st.ok()) return state.SkipWithError(st.to_string().c_str());
  double total = 0;
  for (auto _ : state) {
    const auto t0 = std::chrono::steady_clock::now();
    if (auto st = (*session)->Run(in); !st.ok()) return state.SkipWithError(st.to_string().c_str());
    total += seconds_since(t0);
  }
  state.counters["batch"] = batch;
  state.counters["seq"] = seq;
  state.counters["threads"] = all_threads();
  state.counters["seconds"] = total / double(state.iterations());
}

// ---- Profile ----------------------------------------------------------------------------------

// Work of one op kind over one forward pass (FLOPs for GEMMs / attention, bytes read + written
// for the memory-bound ops; model-level counts from the shapes), 0 when not known.
// Memory-bound ops count per call (calls_per_run of them), as some layers fuse them into GEMMs.
std::pair<double, double> op_work(const std::string& op, const bert::ModelInfo& m, double B, double S, double calls) {
  const double T = B * S, H = double(m.hidden_size), I = double(m.intermediate_size), L = double(m.num_layers);
  const double E = double(m.embedding_size ? m.embedding_size : m.hidden_size), heads = double(m.num_heads);
  if (op == "gemm.qkv") return {2 * T * H * 3 * H * L, 0};
  if (op == "gemm.attn_out") return {2 * T * H * H * L, 0};
  if (op == "gemm.ffn_in" || op == "gemm.ffn_out") return {2 * T * H * I * L, 0};
  if (op == "gemm.embed_project") return {2 * T * E * H, 0};
  if (op == "attention.scores" || op == "attention.context") return {2 * B * S * S * H * L, 0};
  if (op == "attention.fused") return {4 * B * S * S * H * L, 0};
  if (op == "pooler") return {2 * B * H * H, 0};
  if (op == "softmax") return {0, 4.0 * 2 * B * heads * S * S * calls};
  if (op == "layernorm") return {0, 4.0 * 3 * T * H * calls};  // input, residual, output
  if (op == "embed") return {0, 4.0 * 4 * T * E};  // three table rows read, one row written per token
  return {0, 0};
}

void Profile(benchmark::State& state) {
  const bool training = state.range(0) == 1;
  const std::string shape = by_scale<std::string>("bert-tiny", "bert-base", "bert-base");
  const int batch = by_scale(2, 8, 8), seq = by_scale(32, 128, 128), threads = all_threads();
  const int runs = by_scale(2, 3, 20);
  std::string err;
  if (!training) {
    auto model = one_model(shape, "BertForSequenceClassification", "", &err);
    if (!model) return state.SkipWithError(err.c_str());
    auto session = bert::Session::Create(model, {.max_batch = batch, .max_seq = seq, .num_threads = threads, .profile = true});
    if (!session.ok()) return state.SkipWithError(session.status().to_string().c_str());
    const auto ids = random_ids(model->info(), size_t(batch) * seq);
    const std::vector<int32_t> mask(ids.size(), 1);
    double total = 0;
    for (auto _ : state) {
      for (int r = 0; r <= runs; ++r) {  // run 0 is the warm-up (in the profile too: divided below)
        const auto t0 = std::chrono::steady_clock::now();
        if (auto st = (*session)->Run({batch, seq, ids.data(), mask.data(), nullptr}); !st.ok())
          return state.SkipWithError(st.to_string().c_str());
        if (r > 0) total += seconds_since(t0);
      }
    }
    const double n = runs + 1;
    for (const bert::OpProfile& p : (*session)->Profile()) {
      state.counters["ms:" + p.op] = p.seconds * 1e3 / n;
      state.counters["calls:" + p.op] = double(p.calls) / n;
      auto [flops, bytes] = op_work(p.op, model->info(), batch, seq, double(p.calls) / n);
      if (flops > 0) state.counters["gflop:" + p.op] = flops / 1e9;
      if (bytes > 0) state.counters["gbytes:" + p.op] = bytes / 1e9;
    }
    state.counters["ms_per_run"] = total * 1e3 / runs;
    state.SetLabel(shape + " inference batch " + std::to_string(batch) + " seq " + std::to_string(seq));
  } else {
    auto m = synthetic(shape, "BertForSequenceClassification", "", false);
    if (!m.ok()) return state.SkipWithError(m.status().to_string().c_str());
    bert::TrainerOptions o;
    o.max_batch = batch, o.max_seq = seq, o.num_threads = threads;
    auto trainer = bert::Trainer::Create(*m, o);
    if (!trainer.ok()) return state.SkipWithError(trainer.status().to_string().c_str());
    const auto ids = random_ids((*m)->info(), size_t(batch) * seq);
    const std::vector<int32_t> mask(ids.size(), 1);
    std::vector<int32_t> labels(batch);
    for (int b = 0; b < batch; ++b) labels[b] = b % 2;
    bert::TrainLabels y;
    y.labels = labels.data();
    const int steps = by_scale(1, 2, 5);
    double fb = 0, opt = 0;
    for (auto _ : state) {
      for (int s = 0; s <= steps; ++s) {  // step 0: warm-up
        const auto t0 = std::chrono::steady_clock::now();
        auto l = (*trainer)->ForwardBackward({batch, seq, ids.data(), mask.data(), nullptr}, y);
        if (!l.ok()) return state.SkipWithError(l.status().to_string().c_str());
        const double t_fb = seconds_since(t0);
        const auto t1 = std::chrono::steady_clock::now();
        auto g = (*trainer)->Step(1e-5f);
        if (!g.ok()) return state.SkipWithError(g.status().to_string().c_str());
        if (s > 0) fb += t_fb, opt += seconds_since(t1);
      }
    }
    state.counters["ms:forward+backward"] = fb * 1e3 / steps;
    state.counters["ms:optimizer (AdamW)"] = opt * 1e3 / steps;
    state.counters["gflop:forward+backward"] = 3 * (*m)->forward_flops(batch, seq) / 1e9;
    state.counters["ms_per_run"] = (fb + opt) * 1e3 / steps;
    state.SetLabel(shape + " training step batch " + std::to_string(batch) + " seq " + std::to_string(seq) +
                   " (phases only: the Trainer has no per-op profiling hook)");
  }
  state.counters["threads"] = threads;
  state.counters["batch"] = batch;
  state.counters["seq"] = seq;
}

}  // namespace

void register_inference() {
  const int all = all_threads();
  auto* w = benchmark::RegisterBenchmark("Workers", Workers)->ArgNames({"records", "workers", "threads"});
  if (scale() == Scale::kSmoke) {
    w->Args({16, 1, 1})->Args({16, 2, 1});
  } else {
    const int records = by_scale(16, 200, 400);
    for (int workers : {1, 2, 4}) w->Args({records, workers, 1});
    w->Args({records, 1, all});
    if (scale() == Scale::kFull) w->Args({records, 2, all})->Args({records, 4, all});
  }
  w->Iterations(1)->UseRealTime()->Unit(benchmark::kSecond);

  benchmark::RegisterBenchmark("DataParallel", DataParallel)
      ->ArgNames({"records", "threads"})
      ->Args({by_scale(32, 200, 4000), 1})
      ->Iterations(1)->UseRealTime()->Unit(benchmark::kSecond);

  auto* z = benchmark::RegisterBenchmark("ZooDeploy", ZooDeploy)->ArgNames({"model", "threads", "inputs"});
  const std::vector<int> sizes = scale() == Scale::kSmoke   ? std::vector<int>{1, 4}
                                 : scale() == Scale::kFull ? std::vector<int>{1, 2, 4, 8, 16, 32, 64, 128, 256}
                                                           : std::vector<int>{1, 8, 64};
  for (int m = 0; m < 4; ++m)
    for (int t : {1, 0})
      for (int n : sizes) z->Args({m, t, n});
  z->Iterations(by_scale(1, 1, 3))->UseRealTime()->Unit(benchmark::kMillisecond);

  auto* o = benchmark::RegisterBenchmark("Optimization", Optimization)->ArgNames({"model", "mode", "threads"});
  for (int m = 0; m < static_cast<int>(opt_models().size()); ++m)
    for (int t : {1, 0})
      for (int mode = 0; mode < kModeCount; ++mode) o->Args({m, mode, t});
  o->Iterations(1)->UseRealTime()->Unit(benchmark::kMillisecond);

  // study 003's grids (scaled down by default; docs/EXPERIMENTS.md)
  auto* ms = benchmark::RegisterBenchmark("MemoryVsSeq", QaMemory)->ArgNames({"model", "batch", "seq"});
  auto* mb = benchmark::RegisterBenchmark("MemoryVsBatch", QaMemory)->ArgNames({"model", "batch", "seq"});
  auto* ts = benchmark::RegisterBenchmark("TimeVsSeq", QaTime)->ArgNames({"model", "batch", "seq"});
  for (int m = 0; m < 3; ++m) {
    if (scale() == Scale::kSmoke) {
      for (int s : {16, 32}) ms->Args({m, 2, s}), ts->Args({m, 2, s});
      for (int b : {1, 2}) mb->Args({m, b, 32});
    } else if (scale() == Scale::kFull) {
      for (int s : {32, 128, 512, 1024}) ms->Args({m, 32, s});
      for (int b : {64, 128, 256, 512}) mb->Args({m, b, 512});
      for (int s : {8, 32, 128, 512}) ts->Args({m, 256, s});
    } else {
      for (int s : {32, 128, 512}) ms->Args({m, 8, s});
      for (int b : {8, 16, 32, 64}) mb->Args({m, b, 128});
      for (int s : {8, 32, 128, 512}) ts->Args({m, 8, s});
    }
  }
  for (auto* b : {ms, mb, ts}) b->Iterations(1)->UseRealTime()->Unit(benchmark::kMillisecond);

  benchmark::RegisterBenchmark("Profile", Profile)->ArgNames({"training"})->Arg(0)->Arg(1)
      ->Iterations(1)->UseRealTime()->Unit(benchmark::kMillisecond);
}

}  // namespace studies
