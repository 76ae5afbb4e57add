// bert_train: fine-tune a sequence classifier on GLUE-style TSV, or pre-train a masked LM on raw text.
//
//   bert_train --train train.tsv [--dev dev.tsv] --out model.bert
//              (--model F | --synthetic SHAPE [--architecture A] --vocab V | --config config.json --vocab V)
//              [--task classify|mlm|pretrain] [--epochs 3] [--batch 32] [--lr 5e-5] [--warmup 0.1]
//              [--weight-decay 0.01] [--optimizer adamw|lamb] [--accumulate 1] [--max-grad-norm 1.0]
//              [--dropout 0.1] [--max-seq 128] [--seed 42] [--threads N] [--log run.jsonl]
//              [--checkpoint ckpt.bert [--checkpoint-every STEPS]] [--resume ckpt.bert]
//              [--max-steps N] [--limit-train N] [--limit-dev N] [--device cpu|cuda]
//              [--precision fp32|tf32|fp16|bf16] [--attention matmul|fused] [--recompute no|yes]
//              [--zero 0|1|2] [--bucket-mb 25] [--check-every K] [--log-steps yes|no]
//
// Under `mpirun -np N` (no flag needed) it trains data-parallel: --batch stays the global batch (each
// rank takes its share of every batch, the sizes differing by at most one), every rank reads a
// disjoint share of each epoch's shuffled data and runs the same steps, gradients are summed across
// ranks in --bucket-mb buckets while the backward runs, dev metrics are reduced over the ranks, and
// only rank 0 prints, logs and writes. --zero 1 shards the optimizer moments, --zero 2 also keeps only
// the local gradient shard between steps. --check-every K compares the parameters' checksums across
// ranks every K steps. The same command trains the same model on any number of ranks (dropout 0:
// the same loss curve within float rounding; dropout masks are drawn per rank).
//
// classify: TSV, `sentence[<TAB>sentence2]<TAB>label` (integer labels; float for a one-label
//   regression model) after a header line (--header auto|yes|no; auto detects it). mlm: one text per line; each epoch re-masks 15% of the tokens
//   (80% [MASK], 10% random, 10% kept). pretrain (BERT / ALBERT *ForPreTraining): one sentence per
//   line, documents separated by blank lines; each epoch pairs every sentence with the next one of
//   its document or (half the time) with a random sentence (NSP), or for ALBERT with the next one in
//   order or swapped (SOP), then masks as mlm does. Each epoch reports train loss, dev loss, accuracy and F1 (a
//   progress bar on a terminal, JSON lines in --log). Checkpoints are engine files plus optimizer
//   state, written atomically; --resume continues bit-identically. --max-steps stops early without
//   changing the schedule (which spans all epochs). --device cuda trains on the GPU (the same dropout
//   streams as the CPU; dev evaluation runs there too) with fp32 master weights; --precision picks
//   how GEMMs compute (CPU: fp32 or bf16 on fp32 master weights; CUDA also tf32, and fp16 with dynamic
//   loss scaling) and --attention fused keeps O(seq) memory
//   per attention head instead of the [seq, seq] probabilities. --recompute yes (any device) keeps one
//   layer's activations and recomputes each layer in the backward (the same gradients, less memory).
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "bert/comm.h"
#include "bert/data.h"
#include "bert/engine.h"
#include "bert/model_builder.h"
#include "bert/tokenizer.h"
#include "bert/train.h"
#include "tools/common/cli.h"
#include "tools/common/ranks.h"
#include "tools/common/training_state.h"
#include "weights/mapped_file.h"  // check_regular_file
#include "weights/synthetic.h"    // synthetic_config_json (--labels with --synthetic)

namespace {

using bert::Result;
using bert::Status;
using json = nlohmann::json;

// The usage lines; tools/common/cli.h prints them with every option's help and default.
const char kSynopsis[] =
    "bert_train --train FILE --out model.bert (--model F | --synthetic SHAPE [--architecture A]\n"
    "           --vocab V | --config config.json --vocab V) [--dev FILE] [--task classify|mlm|pretrain] [options]";
const char kDescription[] =
    "classify: TSV lines sentence[<TAB>sentence2]<TAB>label (integer labels; float for a one-label\n"
    "regression model) after a header line (--header auto detects one). mlm: one text per line. pretrain: one sentence per line, documents\n"
    "separated by blank lines (NSP, or SOP for ALBERT).\n"
    "Under mpirun -np N: data-parallel over N ranks (see the top of tools/bert_train.cc).";

std::shared_ptr<bert::Communicator> g_comm;  // the job's ranks (one, or mpirun's)

int fail(const Status& st) { return cli::FailOnRanks("bert_train", st, g_comm.get()); }

// Peak resident set of this process (bytes).
int64_t peak_rss() {
  struct rusage u;
  getrusage(RUSAGE_SELF, &u);
  return static_cast<int64_t>(u.ru_maxrss) * 1024;
}

using bert::data::Batch;
using bert::data::Example;

struct Eval {
  double loss = 0, accuracy = 0, f1 = 0;
  int64_t n = 0;
};

// Dev metrics with the inference engine: loss, accuracy and F1 (binary: class 1; else macro). Each
// rank evaluates its share of the rows; the sums are reduced over the ranks before the metrics.
Result<Eval> evaluate(const std::shared_ptr<const bert::Model>& model, const std::vector<Example>& dev, int batch,
                      int max_seq, int threads, int32_t pad_id, bert::Communicator& comm) {
  bert::SessionOptions so;
  so.max_batch = batch, so.max_seq = max_seq, so.num_threads = threads;
  BERT_ASSIGN_OR_RETURN(auto session, bert::Session::Create(model, so));
  const int64_t L = model->info().num_labels;
  const bool types = model->info().type_vocab_size > 0;
  std::vector<int64_t> order(dev.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = static_cast<int64_t>(i);
  // sums: loss, correct, rows, then tp, fp, fn per class
  std::vector<double> sums(3 + 3 * static_cast<size_t>(std::max<int64_t>(L, 1)), 0.0);
  double *tp = sums.data() + 3, *fp = tp + L, *fn = fp + L;
  const auto [from, to] = cli::RankShare(0, dev.size(), comm.rank(), comm.world_size());
  for (size_t begin = from; begin < to; begin += batch) {
    const size_t end = std::min(to, begin + batch);
    BERT_ASSIGN_OR_RETURN(Batch b, bert::data::MakeBatch(dev, order, begin, end, pad_id));
    BERT_RETURN_IF_ERROR(session->Run(b.input(types)));
    BERT_ASSIGN_OR_RETURN(bert::OutputView logits, session->Output("logits"));
    for (int r = 0; r < b.batch; ++r) {
      const float* x = logits.data + r * L;
      if (L == 1) {  // regression: MSE, no accuracy
        sums[0] += (x[0] - b.targets[r]) * (x[0] - b.targets[r]);
        continue;
      }
      const float mx = *std::max_element(x, x + L);
      double z = 0;
      for (int64_t k = 0; k < L; ++k) z += std::exp(double(x[k]) - mx);
      sums[0] += std::log(z) + mx - x[b.labels[r]];
      const int64_t pred = std::max_element(x, x + L) - x, gold = b.labels[r];
      sums[1] += pred == gold;
      if (pred == gold) ++tp[gold];
      else ++fp[pred], ++fn[gold];
    }
    sums[2] += b.batch;
  }
  BERT_RETURN_IF_ERROR(comm.AllReduceSync(sums.data(), static_cast<int64_t>(sums.size())));
  Eval e;
  e.n = static_cast<int64_t>(sums[2]);
  e.loss = sums[0] / sums[2];
  e.accuracy = sums[1] / sums[2];
  auto f1_of = [&](int64_t k) {
    const double d = 2.0 * tp[k] + fp[k] + fn[k];
    return d > 0 ? 2.0 * tp[k] / d : 0.0;
  };
  if (L == 2) {
    e.f1 = f1_of(1);
  } else if (L > 2) {
    for (int64_t k = 0; k < L; ++k) e.f1 += f1_of(k) / double(L);
  }
  return e;
}

// --labels NEG,POS: the class names become the config's id2label (and num_labels), so the trained
// model's predictions carry them.
Status apply_labels(const std::string& list, bert::SyntheticSpec& spec) {
  std::vector<std::string> names;
  for (size_t start = 0;;) {
    const size_t comma = list.find(',', start);
    names.push_back(list.substr(start, comma == std::string::npos ? std::string::npos : comma - start));
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  for (size_t i = 0; i < names.size(); ++i) {
    if (names[i].empty()) return bert::invalid_argument("--labels '" + list + "': label " + std::to_string(i) + " is empty");
    for (size_t k = 0; k < i; ++k)
      if (names[k] == names[i]) return bert::invalid_argument("--labels '" + list + "': '" + names[i] + "' appears twice");
  }
  std::string text = spec.config_json;
  if (!spec.preset.empty()) {  // the named shape's config, so that it can carry the labels
    BERT_ASSIGN_OR_RETURN(text, bert::synthetic_config_json(spec.preset, spec.architecture));
    spec.preset.clear(), spec.architecture.clear();
  }
  json config = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (config.is_discarded() || !config.is_object()) return bert::format_error(spec.origin + ": not a JSON object");
  json id2label = json::object();
  for (size_t i = 0; i < names.size(); ++i) id2label[std::to_string(i)] = names[i];
  config["id2label"] = id2label;
  config["num_labels"] = names.size();
  config.erase("label2id");
  spec.config_json = config.dump();
  return Status();
}

double g_progress_seconds = 10;  // --progress-every: plain progress lines when stderr is not a terminal

void progress(int epoch, int epochs, size_t done, size_t total, double loss, double rate) {
  if (!isatty(fileno(stderr))) {  // a log file or a pipe: one plain line every g_progress_seconds
    static auto last = std::chrono::steady_clock::now();
    const auto now = std::chrono::steady_clock::now();
    if (done == total || std::chrono::duration<double>(now - last).count() < g_progress_seconds) return;
    last = now;
    std::fprintf(stderr, "epoch %d/%d batch %zu/%zu loss %.4f %.1f samples/s\n", epoch, epochs, done, total, loss,
                 rate);
    return;
  }
  const int width = 30, filled = total ? static_cast<int>(width * done / total) : width;
  std::fprintf(stderr, "\repoch %d/%d [%s%s] %zu/%zu loss %.4f %.1f samples/s ", epoch, epochs,
               std::string(filled, '=').c_str(), std::string(width - filled, ' ').c_str(), done, total, loss, rate);
  if (done == total) std::fprintf(stderr, "\n");
}

}  // namespace

int main(int argc, char** argv) {
  std::string train_path, dev_path, out_path, model_path, synthetic, architecture, config_path, vocab_path;
  std::string task = "classify", optimizer = "adamw", log_path, checkpoint_path, resume_path, device = "cpu";
  std::string precision = "fp32", attention = "matmul", recompute = "no", log_steps = "no";
  int epochs = 3, batch = 32, accumulate = 1, max_seq = 128, threads = 0, zero = 0;
  int64_t checkpoint_every = 0, max_steps = 0, limit_train = 0, limit_dev = 0, check_every = 0;
  double lr = 5e-5, warmup = 0.1, weight_decay = 0.01, max_grad_norm = 1.0, dropout = 0.1, bucket_mb = 25;
  uint64_t seed = 42;
  cli::Parser p("bert_train", kSynopsis, kDescription);
  p.string("--train", &train_path, "FILE", "training data (required)");
  p.string("--dev", &dev_path, "FILE", "dev TSV evaluated after each epoch (--task classify)");
  p.string("--out", &out_path, "FILE", "the trained engine model file (required)");
  p.string("--model", &model_path, "F", "engine model file or HF directory to fine-tune");
  p.string("--synthetic", &synthetic, "SHAPE", "start from seeded random weights of a named shape (bert-tiny, ...)");
  p.string("--architecture", &architecture, "A", "head for --synthetic (e.g. BertForMaskedLM)", "the family's base");
  p.string("--config", &config_path, "FILE", "start from seeded random weights of this config.json");
  p.string("--vocab", &vocab_path, "FILE", "vocab.txt for --synthetic and --config");
  p.choice("--task", &task, {"classify", "mlm", "pretrain"}, "what to train");
  p.integer("--epochs", &epochs, 1, 1000, "epochs");
  p.integer("--batch", &batch, 1, 4096, "examples per batch");
  p.real("--lr", &lr, 0, 10, "peak learning rate");
  p.real("--warmup", &warmup, 0, 1, "fraction of the steps with a linear warm-up");
  p.real("--weight-decay", &weight_decay, 0, 10, "decoupled weight decay");
  p.choice("--optimizer", &optimizer, {"adamw", "lamb"}, "optimizer");
  p.integer("--accumulate", &accumulate, 1, 1024, "batches per optimizer step");
  p.real("--max-grad-norm", &max_grad_norm, 0, 1e9, "clip the global gradient norm to F (0: no clipping)");
  p.real("--dropout", &dropout, 0, 0.99, "dropout probability");
  p.integer("--max-seq", &max_seq, 2, 1 << 16, "longest sequence (capped by the model)");
  p.integer("--seed", &seed, 0, INT64_MAX, "seed for shuffling, masking, dropout and random weights");
  p.integer("--threads", &threads, 0, bert::kMaxThreads, "OpenMP threads (0: the OpenMP default)");
  p.string("--log", &log_path, "FILE", "append one JSON line per epoch");
  p.string("--checkpoint", &checkpoint_path, "FILE", "write a checkpoint after each epoch (atomically)");
  p.integer("--checkpoint-every", &checkpoint_every, 1, INT64_MAX, "also checkpoint every N optimizer steps",
            "each epoch only");
  p.string("--resume", &resume_path, "FILE", "continue from a checkpoint (bit-identical)");
  p.integer("--max-steps", &max_steps, 1, INT64_MAX, "stop after N optimizer steps", "no limit");
  p.integer("--limit-train", &limit_train, 1, INT64_MAX, "read at most N training examples", "all");
  p.integer("--limit-dev", &limit_dev, 1, INT64_MAX, "read at most N dev examples", "all");
  p.choice("--device", &device, {"cpu", "cuda"}, "where to train");
  p.choice("--precision", &precision, {"fp32", "tf32", "fp16", "bf16"},
           "GEMM precision: fp32 or bf16 on the CPU (bf16: AVX-512; fp32 master weights), all four on CUDA");
  p.choice("--attention", &attention, {"matmul", "fused"}, "training attention (fused needs --device cuda)");
  p.choice("--recompute", &recompute, {"no", "yes"}, "recompute each layer's activations in the backward");
  p.choice("--log-steps", &log_steps, {"no", "yes"}, "also log one JSON line per optimizer step (global loss)");
  p.integer("--zero", &zero, 0, 2, "ZeRO stage under mpirun: 1 shards the optimizer moments, 2 also the gradients");
  p.real("--bucket-mb", &bucket_mb, 0.01, 4096, "MiB of gradients per all-reduce bucket under mpirun");
  p.integer("--check-every", &check_every, 1, INT64_MAX, "under mpirun, compare parameter checksums every K steps",
            "never");
  std::string header = "auto", labels;
  p.real("--progress-every", &g_progress_seconds, 0, 86400,
         "seconds between progress lines on stderr when it is not a terminal (0: every batch)");
  p.choice("--header", &header, {"auto", "yes", "no"},
           "classify TSVs: is the first line a header? auto: yes unless its last field is a valid label");
  p.string("--labels", &labels, "NEG,POS", "class names in id order (sets num_labels; id2label in the model); "
           "with --synthetic or --config");
  if (auto code = p.parse(argc, argv)) return *code;
  auto usage = [&](const std::string& msg) { return p.usage_error(msg); };
  if (train_path.empty() || out_path.empty()) return usage("--train and --out are required");
  if ((!model_path.empty()) + (!synthetic.empty()) + (!config_path.empty()) != 1)
    return usage("give exactly one of --model, --synthetic, --config");
  if (model_path.empty() && vocab_path.empty()) return usage("--synthetic and --config need --vocab");
  if (!labels.empty() && !model_path.empty())
    return usage("--labels goes with --synthetic or --config (a model file keeps its own labels)");
  if (device == "cpu" && ((precision != "fp32" && precision != "bf16") || attention != "matmul"))
    return usage("--precision tf32 / fp16 and --attention fused need --device cuda (the CPU trains with fp32 or bf16 "
                 "GEMMs and has no fused training attention)");
  // The ranks: mpirun's (found in the environment), or this process alone.
  auto comm_or = bert::Communicator::FromEnvironment();
  if (!comm_or.ok()) return fail(comm_or.status());
  g_comm = *comm_or;
  bert::Communicator& comm = *g_comm;
  const int ranks = comm.world_size(), rank = comm.rank();
  const bool root = rank == 0;  // prints, logs and writes
  if (zero > 0 && ranks == 1 && root)
    std::fprintf(stderr, "bert_train: --zero %d on one rank shards nothing (launch with mpirun -np N)\n", zero);
  bert::LoadOptions load;  // fp32 (training computes in fp32 on either device)
  load.device = device == "cuda" ? bert::Device::kCuda : bert::Device::kCpu;
  load.pack_weights = false;  // the trainer keeps its own copies

  // The model: a file to fine-tune, or a config with seeded random weights.
  std::shared_ptr<const bert::Model> model;
  if (!model_path.empty()) {
    auto m = bert::Model::Load(model_path, load);
    if (!m.ok()) return fail(m.status());
    model = *m;
  } else {
    bert::SyntheticSpec spec;  // seeded random weights of a named shape or a config.json
    if (!synthetic.empty()) {
      spec.preset = synthetic, spec.architecture = architecture, spec.origin = "--synthetic " + synthetic;
    } else {
      if (Status st = bert::check_regular_file(config_path, "config.json"); !st.ok()) return fail(st);
      std::ifstream f(config_path);
      if (!f) return fail(bert::not_found(config_path + ": cannot open"));
      spec.config_json.assign(std::istreambuf_iterator<char>(f), {});
      spec.origin = config_path;
    }
    if (!labels.empty())
      if (Status st = apply_labels(labels, spec); !st.ok()) return fail(st);
    spec.seed = static_cast<uint32_t>(seed);
    spec.vocab_path = vocab_path;
    spec.vocab_must_match = true;  // masking and training draw from every id
    auto m = bert::LoadSynthetic(spec, load);
    if (!m.ok()) return fail(m.status());
    model = *m;
  }
  const bert::ModelInfo& info = model->info();
  if (task == "classify" && info.head != "sequence_classification")
    return fail(bert::invalid_argument("--task classify needs a sequence classification model; this one is " +
                                       (info.architecture.empty() ? info.head : info.architecture)));
  if (task == "mlm" && info.head != "masked_lm")
    return fail(bert::invalid_argument("--task mlm needs a masked LM model (e.g. --architecture BertForMaskedLM); "
                                       "this one is " + (info.architecture.empty() ? info.head : info.architecture)));
  if (task == "pretrain" && info.head != "pretraining")
    return fail(bert::invalid_argument("--task pretrain needs a pre-training model (BertForPreTraining, "
                                       "AlbertForPreTraining); this one is " +
                                       (info.architecture.empty() ? info.head : info.architecture)));
  if (model->vocab().empty()) return fail(bert::invalid_argument("the model has no WordPiece vocab to tokenize with"));
  max_seq = static_cast<int>(std::min<int64_t>(max_seq, info.max_seq));
  bert::TokenizerOptions topts;
  topts.lower_case = model->lower_case();
  auto tok = bert::Tokenizer::FromVocab(model->vocab(), topts);
  if (!tok.ok()) return fail(tok.status());
  const bool masked = task != "classify";
  if (masked && tok->mask_id() < 0) return fail(bert::invalid_argument("the vocab has no [MASK] token"));

  const bool regression = task == "classify" && info.num_labels == 1;
  std::vector<bert::data::TextLine> lines;
  if (masked) {
    auto l = bert::data::ReadTextLines(train_path, limit_train);
    if (!l.ok()) return fail(l.status());
    lines = std::move(*l);
  }
  const bert::data::SentenceTask sentence_task =
      info.family == "albert" ? bert::data::SentenceTask::kSentenceOrder : bert::data::SentenceTask::kNextSentence;
  auto tsv = [&](int64_t limit) {  // header line, then sentence[<TAB>sentence2]<TAB>label
    return bert::data::TsvOptions{.max_seq = max_seq, .regression = regression, .num_labels = info.num_labels,
                                  .limit = limit, .header = header != "no", .detect_header = header == "auto"};
  };
  auto train = task == "classify" ? bert::data::ReadTsv(train_path, *tok, tsv(limit_train))
               : task == "mlm"    ? bert::data::EncodeLines(lines, *tok, max_seq)
                                  : bert::data::MakeSentencePairs(lines, *tok, max_seq, sentence_task, seed, 0);
  if (!train.ok()) return fail(train.status().with_context(train_path));
  std::vector<Example> dev;
  if (!dev_path.empty()) {
    if (masked) return usage("--dev is for --task classify");
    auto d = bert::data::ReadTsv(dev_path, *tok, tsv(limit_dev));
    if (!d.ok()) return fail(d.status());
    dev = std::move(*d);
  }

  bert::TrainerOptions to;
  to.max_batch = batch, to.max_seq = max_seq, to.num_threads = threads, to.dropout = static_cast<float>(dropout);
  to.seed = seed;
  to.optimizer.kind = optimizer == "lamb" ? bert::OptimizerKind::kLamb : bert::OptimizerKind::kAdamW;
  to.optimizer.weight_decay = static_cast<float>(weight_decay);
  to.optimizer.max_grad_norm = static_cast<float>(max_grad_norm);
  if (optimizer == "lamb") to.optimizer.eps = 1e-6f;
  to.precision = precision == "tf32"   ? bert::TrainPrecision::kTF32
                 : precision == "fp16" ? bert::TrainPrecision::kF16
                 : precision == "bf16" ? bert::TrainPrecision::kBF16
                                       : bert::TrainPrecision::kF32;
  to.fused_attention = attention == "fused";
  to.recompute_activations = recompute == "yes";
  to.max_batch = (batch + ranks - 1) / ranks;  // this rank's share of a global batch
  to.communicator = g_comm, to.zero_stage = zero, to.bucket_bytes = static_cast<int64_t>(bucket_mb * (1 << 20));
  auto trainer = bert::Trainer::Create(model, to);
  if (!trainer.ok()) return fail(trainer.status());

  const size_t batches_per_epoch = (train->size() + batch - 1) / batch;
  const int64_t total_steps = static_cast<int64_t>((batches_per_epoch + accumulate - 1) / accumulate) * epochs;
  const int64_t warmup_steps = static_cast<int64_t>(warmup * total_steps);
  int start_epoch = 0;
  size_t start_batch = 0;
  if (!resume_path.empty()) {
    auto state = (*trainer)->LoadCheckpoint(resume_path);
    if (!state.ok()) return fail(state.status());
    auto parsed = cli::parse_training_state(*state, resume_path, {epochs, batches_per_epoch, accumulate, total_steps},
                                       (*trainer)->steps());
    if (!parsed.ok()) return fail(parsed.status());
    start_epoch = parsed->epoch;
    start_batch = parsed->next_batch;
    std::fprintf(stderr, "bert_train: resumed %s at epoch %d, batch %zu (step %lld)\n", resume_path.c_str(),
                 start_epoch + 1, start_batch, static_cast<long long>((*trainer)->steps()));
  }
  std::ofstream log;
  if (!log_path.empty() && root) {
    log.open(log_path, resume_path.empty() ? std::ios::trunc : std::ios::app);
    if (!log) return fail(bert::io_error(log_path + ": cannot open for writing"));
  }
  auto save_checkpoint = [&](int epoch, size_t next_batch) -> Status {
    json state = {{"epoch", epoch}, {"next_batch", next_batch}, {"total_steps", total_steps}};
    return (*trainer)->SaveCheckpoint(checkpoint_path, state.dump());
  };

  const bool types = info.type_vocab_size > 0;
  const int32_t pad_id = static_cast<int32_t>(tok->pad_id());
  if (root)
    std::printf("training %s: %zu examples, %d epochs x %zu batches of %d, %lld optimizer steps (warmup %lld), %s%s\n",
                info.architecture.c_str(), train->size(), epochs, batches_per_epoch, batch,
                static_cast<long long>(total_steps), static_cast<long long>(warmup_steps), optimizer.c_str(),
                ranks > 1 ? (", " + std::to_string(ranks) + " ranks (ZeRO stage " + std::to_string(zero) + ")").c_str()
                          : "");
  auto memory_record = [&](json& rec) {
    const bert::TrainerMemory m = (*trainer)->Memory();
    rec["world_size"] = ranks, rec["zero_stage"] = zero;
    rec["memory_mib"] = {{"parameters", m.parameters / 1048576.0}, {"gradients", m.gradients / 1048576.0},
                         {"optimizer_state", m.optimizer_state / 1048576.0},
                         {"activations", m.activations / 1048576.0}, {"peak_rss", peak_rss() / 1048576.0}};
  };
  double step_loss = 0;  // this rank's share of the current step's loss
  const auto run_start = std::chrono::steady_clock::now();
  bool stopped = false;
  for (int epoch = start_epoch; epoch < epochs && !stopped; ++epoch) {
    if (task == "pretrain" && epoch > 0) {  // fresh pairs each epoch (the count stays the same)
      auto pairs = bert::data::MakeSentencePairs(lines, *tok, max_seq, sentence_task, seed, epoch);
      if (!pairs.ok()) return fail(pairs.status());
      *train = std::move(*pairs);
    }
    const std::vector<int64_t> order = bert::data::ShuffledOrder(train->size(), seed, epoch);
    const auto epoch_start = std::chrono::steady_clock::now();
    double loss_sum = 0;
    int64_t loss_batches = 0, samples = 0;
    size_t b = epoch == start_epoch ? start_batch : 0;
    // Forward and backward over rows [begin, end) of this epoch's order (this rank's share of a batch).
    auto train_rows = [&](size_t begin, size_t end, float loss_scale, bool sync) -> Result<double> {
      BERT_ASSIGN_OR_RETURN(Batch bt, bert::data::MakeBatch(*train, order, begin, end, pad_id));
      const std::vector<int32_t> sentence_labels = bt.labels;  // pretrain: NSP / SOP
      if (masked) {
        bert::data::MaskingOptions mo;
        mo.seed = seed, mo.epoch = epoch, mo.vocab_size = info.vocab_size;
        BERT_ASSIGN_OR_RETURN(bt.labels, bert::data::MaskTokens(bt, order, begin, *tok, mo));
      }
      bert::TrainLabels labels;
      if (regression) labels.regression = bt.targets.data();
      else labels.labels = bt.labels.data();
      if (task == "pretrain") labels.sentence_labels = sentence_labels.data();
      return (*trainer)->ForwardBackward(bt.input(types), labels, loss_scale, sync);
    };
    for (; b < batches_per_epoch; ++b) {
      const size_t global_begin = b * batch, global_end = std::min(train->size(), global_begin + batch);
      const auto [begin, end] = cli::RankShare(global_begin, global_end, rank, ranks);
      const bool step_now = (b + 1) % accumulate == 0 || b + 1 == batches_per_epoch;
      // This rank's share of the batch's loss: its rows / the batch's rows.
      const double share = double(end - begin) / double(global_end - global_begin);
      double loss_value = 0;
      if (begin == end) {  // no rows here in this batch (fewer rows than ranks): join the reduction only
        if (step_now)
          if (Status st = (*trainer)->SyncGradients(); !st.ok()) return fail(st);
      } else {
        auto loss = train_rows(begin, end, static_cast<float>(share / accumulate), step_now);
        if (!loss.ok()) return fail(loss.status().with_context("epoch " + std::to_string(epoch + 1) + ", batch " +
                                                              std::to_string(b)));
        loss_value = *loss * share;
      }
      loss_sum += loss_value, ++loss_batches, samples += global_end - global_begin;
      step_loss += loss_value / accumulate;
      if (step_now) {
        bert::LinearSchedule schedule{warmup_steps, total_steps};
        const float step_lr = static_cast<float>(lr * schedule.lr_factor((*trainer)->steps()));
        auto norm = (*trainer)->Step(step_lr);
        if (!norm.ok()) return fail(norm.status().with_context("epoch " + std::to_string(epoch + 1)));
        const int64_t step = (*trainer)->steps();
        if (log_steps == "yes") {  // the global batch's loss: every rank's share, summed
          if (ranks > 1)
            if (Status st = comm.AllReduceSync(&step_loss, 1); !st.ok()) return fail(st);
          json rec = {{"step", step}, {"loss", step_loss}, {"grad_norm", *norm}, {"lr", step_lr},
                      {"world_size", ranks}, {"zero_stage", zero}};
          if (log) log << rec.dump() << "\n" << std::flush;
        }
        step_loss = 0;
        if (check_every > 0 && step % check_every == 0 && ranks > 1) {  // every rank holds the same bits?
          const int64_t mine = static_cast<int64_t>((*trainer)->ParameterChecksum() >> 1);
          std::vector<int64_t> all(ranks);
          if (Status st = comm.AllGather(&mine, all.data(), 1, bert::CommType::kI64).Wait(); !st.ok()) return fail(st);
          for (int r = 1; r < ranks; ++r)
            if (all[r] != all[0])
              return fail(bert::internal_error("after step " + std::to_string(step) + " rank " + std::to_string(r) +
                                               "'s parameters differ from rank 0's (checksums " +
                                               std::to_string(all[r]) + " vs " + std::to_string(all[0]) + ")"));
        }
        if (!checkpoint_path.empty() && checkpoint_every > 0 && step % checkpoint_every == 0)
          if (Status st = save_checkpoint(epoch, b + 1); !st.ok()) return fail(st);
        if (max_steps > 0 && step >= max_steps) {
          stopped = true;
          ++b;
          break;
        }
      }
      const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - epoch_start).count();
      if (root)
        progress(epoch + 1, epochs, b + 1, batches_per_epoch, loss_sum * ranks / loss_batches,
                 samples / std::max(secs, 1e-9));
    }
    if (ranks > 1)  // the epoch's loss: every rank's shares, summed
      if (Status st = comm.AllReduceSync(&loss_sum, 1); !st.ok()) return fail(st);
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - epoch_start).count();
    json rec = {{"epoch", epoch + 1},
                {"step", (*trainer)->steps()},
                {"train_loss", loss_batches ? loss_sum / loss_batches : 0.0},
                {"samples_per_s", samples / std::max(secs, 1e-9)},
                {"seconds", secs},
                {"device", device},
                {"precision", precision}};
    memory_record(rec);
    if (ranks > 1) {
      const bert::TrainerCommStats cs = (*trainer)->CommStats();
      rec["comm"] = {{"bytes_per_step", cs.bytes_per_step}, {"wait_seconds", cs.wait_seconds},
                     {"synced_steps", cs.synced_steps}};
    }
    if (precision == "fp16") rec["loss_scale"] = (*trainer)->loss_scale();
    if (!dev.empty()) {
      auto snapshot = (*trainer)->Snapshot();
      if (!snapshot.ok()) return fail(snapshot.status());
      auto e = evaluate(*snapshot, dev, batch, max_seq, threads, pad_id, comm);
      if (!e.ok()) return fail(e.status());
      rec["dev_loss"] = e->loss;
      if (!regression) rec["dev_accuracy"] = e->accuracy, rec["dev_f1"] = e->f1;
    }
    if (stopped) rec["stopped_early"] = true;
    if (root) std::printf("%s\n", rec.dump().c_str());
    std::fflush(stdout);
    if (log) log << rec.dump() << "\n" << std::flush;
    if (!checkpoint_path.empty() && !stopped)
      if (Status st = save_checkpoint(epoch + 1, 0); !st.ok()) return fail(st);
  }
  if (Status st = (*trainer)->Save(out_path); !st.ok()) return fail(st);
  const double total = std::chrono::duration<double>(std::chrono::steady_clock::now() - run_start).count();
  if (root)
    std::printf("wrote %s after %lld steps in %.1f s\n", out_path.c_str(),
                static_cast<long long>((*trainer)->steps()), total);
  return 0;
}
