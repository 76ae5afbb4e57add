// The studies' training experiments as Google Benchmark families (docs/EXPERIMENTS.md):
//   FinetuneBatchSize  study 001: SST-2 fine-tuning per batch size: accuracy, F1, loss per epoch.
//   FinetuneMemory     study 001's plugin table: pre / max / post memory, samples/s, parameters for fp32,
//                      recomputed activations, mixed precision, and (under mpirun) DDP, ZeRO-1, ZeRO-2.
//   Pretrain           study 004: MLM + NSP pre-training with LAMB, phase 1 (seq 128) and 2 (seq 512).
//   Squad              study 004: SQuAD-style QA fine-tuning steps at seq 384.
// No pre-trained weights exist on these machines: models start from seeded random weights (or the
// engine file in $BERT_EXP_MODEL for FinetuneBatchSize), and every label says which.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <random>

#include <unistd.h>

#include "bench/experiments/exp_common.h"
#include "bert/comm.h"
#include "bert/train.h"

namespace studies {

bert::Result<Eval> evaluate(const std::shared_ptr<const bert::Model>& model, const std::vector<bert::data::Example>& examples,
                            int batch, int threads, bool remove_padding, int pad_to) {
  bert::SessionOptions so;
  so.max_batch = batch, so.max_seq = pad_to > 0 ? pad_to : 128, so.num_threads = threads;
  so.remove_padding = remove_padding;
  BERT_ASSIGN_OR_RETURN(auto session, bert::Session::Create(model, so));
  const bool types = model->info().type_vocab_size > 1;
  Eval e;
  int64_t tp = 0, fp = 0, fn = 0, correct = 0;
  for (size_t i = 0; i < examples.size(); i += batch) {
    const int b = static_cast<int>(std::min<size_t>(batch, examples.size() - i));
    int seq = pad_to;
    if (seq == 0)
      for (int r = 0; r < b; ++r) seq = std::max(seq, static_cast<int>(examples[i + r].enc.input_ids.size()));
    std::vector<int32_t> ids(size_t(b) * seq, 0), mask(ids.size(), 0), tt(ids.size(), 0);
    for (int r = 0; r < b; ++r) {
      const auto& enc = examples[i + r].enc;
      const size_t n = std::min<size_t>(enc.input_ids.size(), seq);
      for (size_t s = 0; s < n; ++s)
        ids[r * seq + s] = enc.input_ids[s], mask[r * seq + s] = 1, tt[r * seq + s] = enc.token_type_ids[s];
    }
    const auto t0 = std::chrono::steady_clock::now();
    BERT_RETURN_IF_ERROR(session->Run({b, seq, ids.data(), mask.data(), types ? tt.data() : nullptr}));
    e.seconds += seconds_since(t0);
    BERT_ASSIGN_OR_RETURN(bert::OutputView logits, session->Output("logits"));
    const int64_t k = logits.shape.back();
    for (int r = 0; r < b; ++r) {
      const float* row = logits.data + r * k;
      const int pred = static_cast<int>(std::max_element(row, row + k) - row);
      const int label = examples[i + r].label;
      float mx = *std::max_element(row, row + k);
      double z = 0;
      for (int64_t c = 0; c < k; ++c) z += std::exp(double(row[c]) - mx);
      e.loss += std::log(z) + mx - row[label];
      correct += pred == label;
      tp += pred == 1 && label == 1, fp += pred == 1 && label != 1, fn += pred != 1 && label == 1;
    }
    e.n += b, ++e.batches;
  }
  e.accuracy = e.n ? double(correct) / double(e.n) : 0;
  e.f1 = tp ? 2.0 * tp / double(2 * tp + fp + fn) : 0;
  e.loss = e.n ? e.loss / double(e.n) : 0;
  return e;
}

namespace {

// Fine-tunes `trainer` on `train` for `epochs` epochs (AdamW, linear warmup then decay) and calls
// after_epoch(epoch, mean train loss, training samples/s) after each.
template <typename AfterEpoch>
bert::Status fit(bert::Trainer& trainer, const bert::Model& model, const std::vector<bert::data::Example>& train, int batch,
                 float lr, int epochs, double warmup, const std::string& label, AfterEpoch after_epoch) {
  const int64_t steps_per_epoch = (int64_t(train.size()) + batch - 1) / batch;
  bert::LinearSchedule sched{static_cast<int64_t>(warmup * steps_per_epoch * epochs), steps_per_epoch * epochs};
  const bool types = model.info().type_vocab_size > 1;
  for (int epoch = 0; epoch < epochs; ++epoch) {
    const auto order = bert::data::ShuffledOrder(train.size(), 42, epoch);
    double loss = 0;
    const auto t0 = std::chrono::steady_clock::now();
    Progress progress(label + " epoch " + std::to_string(epoch + 1), steps_per_epoch);
    for (size_t i = 0; i < train.size(); i += batch) {
      BERT_ASSIGN_OR_RETURN(bert::data::Batch b,
                            bert::data::MakeBatch(train, order, i, std::min(train.size(), i + batch), 0));
      bert::TrainLabels y;
      y.labels = b.labels.data();
      BERT_ASSIGN_OR_RETURN(double l, trainer.ForwardBackward(b.input(types), y));
      loss += l * b.batch;
      BERT_RETURN_IF_ERROR(trainer.Step(lr * sched.lr_factor(trainer.steps())).status());
      progress.add();
    }
    after_epoch(epoch, loss / double(train.size()), double(train.size()) / seconds_since(t0));
  }
  return bert::Status::Ok();
}

struct RemoveAtExit {
  std::vector<std::string> paths;
  ~RemoveAtExit() {
    std::error_code ec;
    for (auto& p : paths) std::filesystem::remove(p, ec);
  }
};

}  // namespace

// An SST-2 classifier of `shape` fine-tuned here from seeded random weights (cached per process, as
// a temporary engine file), for the experiments that need predictions that mean something.
bert::Result<std::string> trained_sst2_file(const std::string& shape, std::string* note) {
  static std::map<std::string, std::string> cache;
  static RemoveAtExit cleanup;
  if (auto it = cache.find(shape); it != cache.end()) return it->second;
  const int64_t n = by_scale<int64_t>(128, 4000, 20000);
  const int epochs = by_scale(1, 1, 2);
  std::string err;
  const Sst2* data = sst2(n, &err);
  if (!data) return bert::not_found(err);
  std::vector<bert::data::Example> train(data->train.begin(), data->train.begin() + std::min<size_t>(n, data->train.size()));
  BERT_ASSIGN_OR_RETURN(auto model, synthetic(shape, "BertForSequenceClassification", "", false));
  bert::TrainerOptions o;
  o.max_batch = 32, o.max_seq = 128, o.num_threads = all_threads();
  o.optimizer.lr = 1e-3f;
  BERT_ASSIGN_OR_RETURN(auto trainer, bert::Trainer::Create(model, o));
  BERT_RETURN_IF_ERROR(fit(*trainer, *model, train, 32, 1e-3f, epochs, 0.1, "training " + shape, [](int, double, double) {}));
  const std::string path = (std::filesystem::temp_directory_path() /
                            ("bert_exp_sst2_" + shape + "_" + std::to_string(getpid()) + ".bert")).string();
  BERT_RETURN_IF_ERROR(trainer->Save(path));
  cleanup.paths.push_back(path);
  *note = shape + " fine-tuned here from random weights on " + std::to_string(train.size()) + " SST-2 examples, " +
          std::to_string(epochs) + " epoch(s), lr 1e-3";
  return cache[shape] = path;
}

namespace {

// ---- FinetuneBatchSize -------------------------------------------------------------------------

void FinetuneBatchSize(benchmark::State& state) {
  const int batch = static_cast<int>(state.range(0));
  const char* given = std::getenv("BERT_EXP_MODEL");
  const std::string shape = by_scale<std::string>("bert-tiny", "bert-mini", "bert-base");
  const int64_t n_train = by_scale<int64_t>(128, 1500, 0), n_dev = by_scale<int64_t>(64, 872, 872);
  const int epochs = by_scale(1, 2, 3);
  // The study's recipe (lr 2.4e-5) is for a pre-trained model; from random weights it barely moves,
  // so without one the default uses a from-scratch learning rate.
  const float lr = (given && *given) || scale() == Scale::kFull ? 2.4e-5f : by_scale(1e-3f, 5e-4f, 2.4e-5f);
  std::string err;
  const Sst2* data = sst2(n_train, &err);
  if (!data) return state.SkipWithError(err.c_str());
  std::vector<bert::data::Example> train(data->train.begin(),
                                         data->train.begin() + (n_train ? std::min<size_t>(n_train, data->train.size())
                                                                        : data->train.size()));
  std::vector<bert::data::Example> dev(data->dev.begin(), data->dev.begin() + std::min<size_t>(n_dev, data->dev.size()));
  bert::Result<std::shared_ptr<const bert::Model>> model = bert::internal_error("unset");
  std::string what;
  if (given && *given) {
    model = bert::Model::Load(given, {.pack_weights = false});
    what = std::string(given) + " (given)";
  } else {
    model = synthetic(shape, "BertForSequenceClassification", "", false);
    what = shape + " from random weights (no pre-trained weights here)";
  }
  if (!model.ok()) return state.SkipWithError(model.status().to_string().c_str());
  bert::TrainerOptions o;
  o.max_batch = batch, o.max_seq = 128, o.num_threads = all_threads(), o.seed = 42;
  o.optimizer.lr = lr, o.optimizer.weight_decay = 0.01f;
  auto trainer = bert::Trainer::Create(*model, o);
  if (!trainer.ok()) return state.SkipWithError(trainer.status().to_string().c_str());
  double rate = 0;
  for (auto _ : state) {
    auto st = fit(**trainer, **model, train, batch, lr, epochs, 0.1, "batch " + std::to_string(batch),
                  [&](int epoch, double train_loss, double samples_per_s) {
                    const std::string e = "e" + std::to_string(epoch + 1) + "_";
                    state.counters[e + "train_loss"] = train_loss;
                    rate += samples_per_s / epochs;
                    auto snap = (*trainer)->Snapshot();
                    if (!snap.ok()) return;
                    auto r = evaluate(*snap, dev, 64, all_threads(), false, 0);
                    if (!r.ok()) return;
                    state.counters[e + "dev_loss"] = r->loss;
                    state.counters[e + "accuracy"] = r->accuracy;
                    state.counters[e + "f1"] = r->f1;
                  });
    if (!st.ok()) return state.SkipWithError(st.to_string().c_str());
  }
  state.SetLabel(what);
  state.counters["batch"] = batch;
  state.counters["epochs"] = epochs;
  state.counters["lr"] = lr;
  state.counters["train_examples"] = double(train.size());
  state.counters["dev_examples"] = double(dev.size());
  state.counters["train_samples_per_s"] = rate;
}

// ---- FinetuneMemory ----------------------------------------------------------------------------

const char* const kMemConfigs[] = {"fp32", "fp32 + recomputed activations", "mixed precision (bf16)", "ZeRO-1",
                                   "ZeRO-2", "mixed precision (fp16)"};

void FinetuneMemory(benchmark::State& state) {
  const int config = static_cast<int>(state.range(0));
  auto comm_r = bert::Communicator::FromEnvironment();
  if (!comm_r.ok()) return state.SkipWithError(comm_r.status().to_string().c_str());
  auto comm = *comm_r;
  const int ranks = comm->world_size();
  std::string name = kMemConfigs[config];
  if (config == 0 && ranks > 1) name = "fp32 DDP";
  state.SetLabel(name + " (" + std::to_string(ranks) + " process" + (ranks > 1 ? "es" : "") + ")");
  if ((config == 3 || config == 4) && ranks < 2)
    return needs(state, "mpirun -np 2 or more (ZeRO shards the optimizer state over ranks); "
                        "scripts/experiment.sh runs these rows under mpirun");
  const std::string shape = by_scale<std::string>("bert-tiny", "bert-base", "bert-base");
  const int batch = by_scale(2, 4, 16), seq = by_scale(32, 256, 512);
  const int steps = by_scale(1, 2, (1000 + 15) / 16);  // full: the study's 1000 samples at batch 16
  auto model = synthetic(shape, "BertForSequenceClassification", R"({"vocab_size": 1000, "num_labels": 10})", false);
  if (!model.ok()) return state.SkipWithError(model.status().to_string().c_str());
  const int rows = static_cast<int>(int64_t(batch) * (comm->rank() + 1) / ranks - int64_t(batch) * comm->rank() / ranks);
  bert::TrainerOptions o;
  o.max_batch = std::max(rows, 1), o.max_seq = seq, o.num_threads = ranks > 1 ? 1 : all_threads();
  o.optimizer.lr = 2.4e-5f, o.optimizer.weight_decay = 0.01f;
  o.recompute_activations = config == 1;
  if (config == 2) o.precision = bert::TrainPrecision::kBF16;
  if (config == 5) o.precision = bert::TrainPrecision::kF16;
  if (ranks > 1) o.communicator = comm;
  if (config == 3 || config == 4) o.zero_stage = config - 2;
  std::mt19937 rng(7 + comm->rank());
  std::uniform_int_distribution<int32_t> id(5, 999), label(0, 9);
  std::vector<int32_t> ids(size_t(std::max(rows, 1)) * seq), mask(ids.size(), 1), labels(std::max(rows, 1));
  for (auto& x : ids) x = id(rng);
  for (auto& x : labels) x = label(rng);
  MemoryProbe mem;
  bert::TrainerMemory accounted;
  double step_seconds = 0;
  for (auto _ : state) {
    mem.start();
    {
      auto trainer = bert::Trainer::Create(*model, o);
      if (!trainer.ok()) {
        if (config == 2 || config == 5) return needs(state, "a training precision this CPU runs: " + trainer.status().to_string());
        return state.SkipWithError(trainer.status().to_string().c_str());
      }
      bert::TrainLabels y;
      y.labels = labels.data();
      Progress progress(name, steps);
      const auto t0 = std::chrono::steady_clock::now();
      for (int s = 0; s < steps; ++s) {
        auto l = (*trainer)->ForwardBackward({rows, seq, ids.data(), mask.data(), nullptr}, y, float(rows) / batch);
        if (!l.ok()) return state.SkipWithError(l.status().to_string().c_str());
        if (auto g = (*trainer)->Step(2.4e-5f); !g.ok()) return state.SkipWithError(g.status().to_string().c_str());
        progress.add();
      }
      step_seconds = seconds_since(t0);
      mem.stop_peak();
      accounted = (*trainer)->Memory();
    }
    mem.finish();
  }
  const double mib = 1.0 / 1048576;
  state.counters["ranks"] = ranks;
  state.counters["batch"] = batch;
  state.counters["seq"] = seq;
  state.counters["steps"] = steps;
  state.counters["samples_per_s"] = double(batch) * steps / step_seconds;
  state.counters["params_M"] = double(accounted.parameters) / 4 / 1e6;
  state.counters["engine_parameters_MiB"] = accounted.parameters * mib;
  state.counters["engine_gradients_MiB"] = accounted.gradients * mib;
  state.counters["engine_optimizer_MiB"] = accounted.optimizer_state * mib;
  state.counters["engine_activations_MiB"] = accounted.activations * mib;
  state.counters["engine_total_MiB"] = accounted.total() * mib;
  mem.counters(state);
}

// ---- Pretrain and Squad ---------------------------------------------------------------------

// Timed training steps of a synthetic model with the given labels; counters sequences/s.
template <typename MakeLabels>
void train_steps(benchmark::State& state, const std::string& shape, const std::string& arch, int batch, int seq,
                 bert::OptimizerOptions opt, bool mixed, MakeLabels make_labels) {
  auto model = synthetic(shape, arch, "", false);
  if (!model.ok()) return state.SkipWithError(model.status().to_string().c_str());
  bert::TrainerOptions o;
  o.max_batch = batch, o.max_seq = seq, o.num_threads = all_threads(), o.optimizer = opt;
  if (mixed) o.precision = bert::TrainPrecision::kBF16;
  auto trainer = bert::Trainer::Create(*model, o);
  if (!trainer.ok()) {
    if (mixed) return needs(state, "bf16 training on this CPU: " + trainer.status().to_string());
    return state.SkipWithError(trainer.status().to_string().c_str());
  }
  std::mt19937 rng(42);
  std::uniform_int_distribution<int32_t> id(1000, static_cast<int32_t>((*model)->info().vocab_size - 1));
  std::vector<int32_t> ids(size_t(batch) * seq), mask(ids.size(), 1), types(ids.size(), 0);
  for (auto& x : ids) x = id(rng);
  for (size_t i = 0; i < ids.size(); ++i) types[i] = (i % seq) >= size_t(seq) / 2;
  bert::TrainLabels y;
  auto keep = make_labels(ids, rng, y);  // owns the label arrays y points into
  const bert::BatchInput in{batch, seq, ids.data(), mask.data(), types.data()};
  const int steps = by_scale(1, 1, 3);
  double total = 0;
  for (auto _ : state) {
    Progress progress(shape + " steps", steps + 1);
    for (int s = 0; s <= steps; ++s) {  // step 0: warm-up
      const auto t0 = std::chrono::steady_clock::now();
      auto l = (*trainer)->ForwardBackward(in, y);
      if (!l.ok()) return state.SkipWithError(l.status().to_string().c_str());
      if (auto g = (*trainer)->Step(opt.lr); !g.ok()) return state.SkipWithError(g.status().to_string().c_str());
      if (s > 0) total += seconds_since(t0);
      progress.add();
    }
  }
  const bert::TrainerMemory mem = (*trainer)->Memory();
  state.counters["batch"] = batch;
  state.counters["seq"] = seq;
  state.counters["threads"] = all_threads();
  state.counters["steps"] = steps;
  state.counters["seconds_per_step"] = total / steps;
  state.counters["sequences_per_s"] = double(batch) * steps / total;
  state.counters["params_M"] = double(mem.parameters) / 4 / 1e6;
  state.counters["engine_total_MiB"] = mem.total() / 1048576.0;
}

const char* const kPretrainShapes[] = {"bert-base", "bert-large"};

void Pretrain(benchmark::State& state) {
  const int m = static_cast<int>(state.range(0)), phase = static_cast<int>(state.range(1));
  const bool mixed = state.range(2) == 1;
  const std::string shape = scale() == Scale::kSmoke ? "bert-tiny" : kPretrainShapes[m];
  const int seq = phase == 1 ? by_scale(32, 128, 128) : by_scale(64, 512, 512);
  const int batch = phase == 1 ? by_scale(2, 2, 16) : by_scale(1, 1, 4);
  state.SetLabel(shape + " phase " + std::to_string(phase) + (mixed ? " mixed precision (bf16)" : " fp32") +
                 " MLM+NSP LAMB");
  bert::OptimizerOptions opt;
  opt.kind = bert::OptimizerKind::kLamb;
  opt.lr = phase == 1 ? 6e-3f : 4e-3f, opt.eps = 1e-6f, opt.weight_decay = 0.01f;
  struct Labels {
    std::vector<int32_t> mlm, nsp;
  };
  train_steps(state, shape, "BertForPreTraining", batch, seq, opt, mixed,
              [&](const std::vector<int32_t>& ids, std::mt19937& rng, bert::TrainLabels& y) {
                auto l = std::make_shared<Labels>();
                std::bernoulli_distribution pick(0.15);
                l->mlm.resize(ids.size());
                for (size_t i = 0; i < ids.size(); ++i) l->mlm[i] = pick(rng) ? ids[i] : -100;
                for (int b = 0; b < batch; ++b) l->nsp.push_back(b % 2);
                y.labels = l->mlm.data(), y.sentence_labels = l->nsp.data();
                return l;
              });
}

void Squad(benchmark::State& state) {
  const int m = static_cast<int>(state.range(0));
  const bool mixed = state.range(1) == 1;
  const std::string shape = scale() == Scale::kSmoke ? "bert-tiny" : kPretrainShapes[m];
  const int seq = by_scale(64, 384, 384), batch = by_scale(2, 2, 32);
  state.SetLabel(shape + " SQuAD-style QA" + (mixed ? " mixed precision (bf16)" : " fp32") + " AdamW");
  bert::OptimizerOptions opt;
  opt.lr = 3e-5f;
  struct Labels {
    std::vector<int32_t> start, end;
  };
  train_steps(state, shape, "BertForQuestionAnswering", batch, seq, opt, mixed,
              [&](const std::vector<int32_t>&, std::mt19937& rng, bert::TrainLabels& y) {
                auto l = std::make_shared<Labels>();
                std::uniform_int_distribution<int32_t> pos(seq / 2, seq - 8);
                for (int b = 0; b < batch; ++b) {
                  const int s = pos(rng);
                  l->start.push_back(s), l->end.push_back(s + 3);
                }
                y.start_positions = l->start.data(), y.end_positions = l->end.data();
                return l;
              });
}

}  // namespace

void register_training() {
  auto* f = benchmark::RegisterBenchmark("FinetuneBatchSize", FinetuneBatchSize)->ArgNames({"batch"});
  for (int b : scale() == Scale::kSmoke ? std::vector<int>{8, 32} : std::vector<int>{8, 16, 32, 64}) f->Arg(b);
  f->Iterations(1)->UseRealTime()->Unit(benchmark::kSecond);

  benchmark::RegisterBenchmark("FinetuneMemory", FinetuneMemory)
      ->ArgNames({"config"})
      ->DenseRange(0, 5)
      ->Iterations(1)->UseRealTime()->Unit(benchmark::kSecond);

  auto* p = benchmark::RegisterBenchmark("Pretrain", Pretrain)->ArgNames({"model", "phase", "mixed"});
  for (int mixed : {0, 1}) {
    if (scale() == Scale::kSmoke) {
      p->Args({0, 1, mixed})->Args({0, 2, mixed});
    } else {
      p->Args({0, 1, mixed})->Args({0, 2, mixed})->Args({1, 1, mixed});
      if (scale() == Scale::kFull) p->Args({1, 2, mixed});
    }
  }
  p->Iterations(1)->UseRealTime()->Unit(benchmark::kSecond);

  auto* s = benchmark::RegisterBenchmark("Squad", Squad)->ArgNames({"model", "mixed"});
  s->Args({0, 0})->Args({0, 1});
  if (scale() == Scale::kFull) s->Args({1, 0})->Args({1, 1});
  s->Iterations(1)->UseRealTime()->Unit(benchmark::kSecond);
}

}  // namespace studies
