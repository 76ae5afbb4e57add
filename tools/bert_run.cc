// bert_run: run a model on a batch from a safetensors file, or on text, from the command line.
//
//   bert_run --model F --inputs in.safetensors --outputs out.safetensors [--threads N] [--batch ROWS]
//   mpirun -np N bert_run --model F --inputs in.safetensors --outputs out.safetensors [--batch ROWS]
//     (data-parallel: each rank runs its share of the rows, --batch rows at a time; rank 0 writes
//     the outputs in input order and prints the load and inference times as JSON on stderr)
//       reads input_ids, attention_mask, token_type_ids (int32 or int64, [batch, seq]) and writes every
//       output the model has, under HuggingFace's names (hidden_states.0..L included).
//   bert_run --model F --text "..." [--text-pair "..."] [--max-length N] [--threads N]
//       tokenizes with the model's vocab and prints the prediction as one JSON line.
//   bert_run --model F --text-file F|- : one input per line (text[<TAB>pair] or a JSON object),
//       one JSON line out per input, the model loaded once.
//   bert_run --model F --inputs in.safetensors --outputs out.safetensors --grads
//       also reads the labels (label.labels, label.next_sentence_label / label.sentence_order_label,
//       label.start_positions + label.end_positions) and writes `loss` and `grad.<HF parameter name>`
//       for every parameter (eval mode: no dropout), the engine's backward pass as transformers names it.
//   Either mode: --pooling cls|mean|max [--normalize] adds sentence_embedding [batch, hidden]
//       (mean and max over the tokens the attention mask keeps; --normalize: unit L2 norm).
//   --precision fp32|bf16|int8 on the CPU: the encoder's linear layers in bf16 (AVX-512 CPUs) or int8
//       (activations quantised per GEMM with a dynamic scale, or with ranges calibrated on
//       --calibration in.safetensors); --drift also runs the model in fp32 and prints each output's
//       cosine, relative L2 and max abs difference. docs/PRECISION.md.
//   --device cuda [--precision fp32|fp16|bf16] [--tf32] runs on the GPU (fp16/bf16: tensor-core GEMMs
//       on fp32 storage; int8 is CPU only). --remove-padding (any device) runs the encoder on the
//       real tokens only. --profile prints each op's wall time on stderr (GEMM ops with the implementation
//       that ran them, e.g. "gemm.qkv [brg:avx512_core]").
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "bert/comm.h"
#include "bert/engine.h"
#include "bert/predict.h"
#include "bert/tensors_file.h"
#include "bert/tokenizer.h"
#include "bert/train.h"
#include "engine/serve/prediction_json.h"
#include "tools/common/cli.h"
#include "tools/common/ranks.h"
#include "tools/common/text_request.h"
#include "weights/mapped_file.h"  // check_regular_file

namespace {

using bert::Result;
using bert::Status;

// The options, their help and the usage lines: tools/common/cli.h prints them for --help and errors.
const char kSynopsis[] =
    "bert_run --model F --inputs in.safetensors --outputs out.safetensors [--threads N] [--batch ROWS]\n"
    "mpirun -np N bert_run --model F --inputs in.safetensors --outputs out.safetensors [--batch ROWS]\n"
    "bert_run --model F --text \"...\" [--text-pair \"...\"] [--max-length N] [--threads N]\n"
    "bert_run --model F --text-file F|- [--max-length N] [--threads N]\n"
    "bert_run --model F --inputs in.safetensors --outputs out.safetensors --grads";
const char kDescription[] =
    "Either mode: --pooling cls|mean|max [--normalize] adds sentence_embedding. --precision: fp32, bf16\n"
    "(CPU with AVX-512) and int8 on the CPU; fp32, fp16 and bf16 with --device cuda. F is an engine model\n"
    "file (tools/convert_weights) or an HF directory.\n"
    "Under mpirun each rank runs its share of --inputs' rows (or --text-file's lines); rank 0 writes the\n"
    "outputs in input order.";

std::shared_ptr<bert::Communicator> g_comm;  // the job's ranks (one, or mpirun's)

int fail(const Status& st) { return cli::FailOnRanks("bert_run", st, g_comm.get()); }

// --profile: the session's per-op wall time on stderr, GEMM ops with the implementation that ran them.
void print_profile(const bert::Session& session) {
  if (!session.options().profile) return;
  const std::vector<bert::OpProfile> ops = session.Profile();
  double total = 0;
  for (const bert::OpProfile& p : ops) total += p.seconds;
  std::fprintf(stderr, "profile: %-48s %10s %7s %6s\n", "op [implementation]", "ms", "calls", "share");
  for (const bert::OpProfile& p : ops)
    std::fprintf(stderr, "profile: %-48s %10.3f %7lld %5.1f%%\n", p.display_name().c_str(), p.seconds * 1e3,
                 static_cast<long long>(p.calls), total > 0 ? 100.0 * p.seconds / total : 0.0);
}

// An int32 [batch, seq] input read from an int32 or int64 tensor.
struct IntInput {
  std::vector<int32_t> values;
  std::vector<int64_t> shape;
};

Result<std::optional<IntInput>> read_int_input(const bert::TensorsFile& f, const std::string& name, bool required) {
  const bert::HostTensor* t = f.find(name);
  if (!t) {
    if (required) return bert::not_found(f.path + ": no tensor '" + name + "'");
    return std::optional<IntInput>();
  }
  if (t->shape.size() != 2 || t->shape[0] < 1 || t->shape[1] < 1)
    return bert::invalid_argument(f.path + ": tensor '" + name + "' has shape " + bert::ShapeString(t->shape) +
                                  "; expected [batch, seq]");
  IntInput in;
  in.shape = t->shape;
  BERT_ASSIGN_OR_RETURN(in.values, bert::TensorToInt32(*t, f.path + ": tensor '" + name + "'"));
  return std::optional<IntInput>(std::move(in));
}

// input_ids, and attention_mask / token_type_ids when present, all of one [batch, seq] shape.
struct BatchTensors {
  IntInput ids;
  std::optional<IntInput> mask, types;
  bert::BatchInput input() const {
    return {static_cast<int>(ids.shape[0]), static_cast<int>(ids.shape[1]), ids.values.data(),
            mask ? mask->values.data() : nullptr, types ? types->values.data() : nullptr};
  }
};

Result<BatchTensors> read_batch(const bert::TensorsFile& file) {
  BatchTensors b;
  BERT_ASSIGN_OR_RETURN(auto ids, read_int_input(file, "input_ids", true));
  BERT_ASSIGN_OR_RETURN(b.mask, read_int_input(file, "attention_mask", false));
  BERT_ASSIGN_OR_RETURN(b.types, read_int_input(file, "token_type_ids", false));
  b.ids = std::move(*ids);
  for (const auto* opt : {&b.mask, &b.types})
    if (opt->has_value() && (*opt)->shape != b.ids.shape)
      return bert::invalid_argument(file.path + ": attention_mask/token_type_ids shape " +
                                    bert::ShapeString((*opt)->shape) + " differs from input_ids " +
                                    bert::ShapeString(b.ids.shape));
  return b;
}

// What a low-precision run adds: int8 calibration data and the fp32 model to measure drift against.
struct DeviceRun {
  std::string calibration;                        // inputs file for Calibrate (empty: the run's own batch)
  std::shared_ptr<const bert::Model> reference;   // --drift: the same model in fp32, or null
};

// Cosine similarity, relative L2 and max abs difference of `got` against `want`.
void print_drift(const std::string& name, const float* got, const float* want, int64_t n) {
  double dot = 0, gg = 0, ww = 0, dd = 0, mx = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double g = got[i], w = want[i];
    dot += g * w, gg += g * g, ww += w * w, dd += (g - w) * (g - w);
    mx = std::max(mx, std::abs(g - w));
  }
  const double cosine = gg > 0 && ww > 0 ? dot / std::sqrt(gg * ww) : (gg == ww ? 1.0 : 0.0);
  std::fprintf(stderr, "drift %-26s cosine %.6f  relative_l2 %.3e  max_abs %.3e\n", name.c_str(), cosine,
               ww > 0 ? std::sqrt(dd / ww) : std::sqrt(dd), mx);
}

Status calibrate(bert::Session& session, const bert::Model& model, const DeviceRun& device,
                 const bert::BatchInput& own_batch);

// A session's outputs over several runs, concatenated along the batch (every output's first dim).
struct Outputs {
  std::vector<std::string> names;
  std::vector<std::vector<int64_t>> shapes;  // shape[0] = rows so far
  std::vector<std::vector<float>> values;
  Status append(bert::Session& session, int rows) {
    const std::vector<std::string> run_names = session.OutputNames();
    if (names.empty()) names = run_names, shapes.resize(names.size()), values.resize(names.size());
    for (size_t i = 0; i < names.size(); ++i) {
      BERT_ASSIGN_OR_RETURN(bert::OutputView v, session.Output(names[i]));
      if (v.shape.empty() || v.shape[0] != rows)
        return bert::internal_error("output '" + names[i] + "' " + bert::ShapeString(v.shape) + " is not per row");
      if (shapes[i].empty()) shapes[i] = v.shape, shapes[i][0] = 0;
      shapes[i][0] += rows;
      values[i].insert(values[i].end(), v.data, v.data + v.numel());
    }
    return Status::Ok();
  }
};

// Tensors in, tensors out, in runs of `rows_per_run` rows (0: all at once). Under mpirun each rank
// runs its share of the rows (contiguous, sizes differing by at most one) and rank 0 gathers the
// outputs and writes them in input order. Prints the load and inference times (JSON on stderr).
int run_tensors(const std::shared_ptr<const bert::Model>& model, const std::string& inputs_path,
                const std::string& outputs_path, bert::SessionOptions opts, const DeviceRun& device, int rows_per_run,
                bert::Communicator& comm, double load_seconds) {
  auto file = bert::ReadTensorsFile(inputs_path);
  if (!file.ok()) return fail(file.status());
  auto batch = read_batch(*file);
  if (!batch.ok()) return fail(batch.status());
  const std::vector<int64_t>& shape = batch->ids.shape;
  if (shape[1] > model->info().max_seq)
    return fail(bert::out_of_range(inputs_path + ": sequence length " + std::to_string(shape[1]) +
                                   " exceeds the model's limit of " + std::to_string(model->info().max_seq) +
                                   " tokens (max_position_embeddings " +
                                   std::to_string(model->info().max_position_embeddings) + ")"));
  const int64_t rows = shape[0], seq = shape[1];
  const int ranks = comm.world_size(), me = comm.rank();
  if (rows < ranks)
    return fail(bert::invalid_argument(inputs_path + ": " + std::to_string(rows) + " rows cannot be shared by " +
                                       std::to_string(ranks) + " ranks"));
  const int64_t per = rows / ranks, extra = rows % ranks;
  const auto share = cli::RankShare(0, static_cast<size_t>(rows), me, ranks);
  const int64_t lo = static_cast<int64_t>(share.first), hi = static_cast<int64_t>(share.second);
  const int64_t chunk = rows_per_run > 0 ? std::min<int64_t>(rows_per_run, hi - lo) : hi - lo;
  auto slice = [&](int64_t r0, int64_t n) {
    bert::BatchInput in = batch->input();
    in.batch = static_cast<int>(n);
    in.input_ids += r0 * seq;
    if (in.attention_mask) in.attention_mask += r0 * seq;
    if (in.token_type_ids) in.token_type_ids += r0 * seq;
    return in;
  };

  opts.max_batch = static_cast<int>(chunk);
  opts.max_seq = static_cast<int>(seq);
  opts.keep_hidden_states = true;
  auto session = bert::Session::Create(model, opts);
  if (!session.ok()) return fail(session.status());
  if (Status st = calibrate(**session, *model, device, slice(lo, chunk)); !st.ok()) return fail(st);
  std::unique_ptr<bert::Session> ref;
  if (device.reference) {  // the same rows in fp32: each output's drift
    auto r = bert::Session::Create(device.reference, opts);
    if (!r.ok()) return fail(r.status());
    ref = std::move(*r);
  }
  Outputs mine, reference;
  const auto t0 = std::chrono::steady_clock::now();
  for (int64_t r0 = lo; r0 < hi; r0 += chunk) {
    const int n = static_cast<int>(std::min(chunk, hi - r0));
    if (Status st = (*session)->Run(slice(r0, n)); !st.ok()) return fail(st.with_context(inputs_path));
    if (Status st = mine.append(**session, n); !st.ok()) return fail(st);
    if (ref) {
      if (Status st = ref->Run(slice(r0, n)); !st.ok()) return fail(st.with_context("fp32 reference"));
      if (Status st = reference.append(*ref, n); !st.ok()) return fail(st);
    }
  }
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  for (size_t i = 0; ref && i < mine.names.size(); ++i)
    print_drift(mine.names[i], mine.values[i].data(), reference.values[i].data(),
                static_cast<int64_t>(mine.values[i].size()));

  // Rank 0 gathers every rank's rows (blocks padded to the largest share) and writes them in order.
  Outputs all = std::move(mine);
  if (ranks > 1) {
    const int64_t block_rows = per + (extra ? 1 : 0);
    for (size_t i = 0; i < all.names.size(); ++i) {
      const int64_t row_elems = static_cast<int64_t>(all.values[i].size()) / (hi - lo);
      std::vector<float> padded(block_rows * row_elems, 0.f), gathered(ranks * block_rows * row_elems);
      std::copy(all.values[i].begin(), all.values[i].end(), padded.begin());
      if (Status st = comm.AllGather(padded.data(), gathered.data(), block_rows * row_elems, bert::CommType::kF32)
                          .Wait();
          !st.ok())
        return fail(st);
      all.values[i].clear();
      for (int r = 0; r < ranks; ++r) {
        const int64_t n = per + (r < extra ? 1 : 0);
        const float* from = gathered.data() + r * block_rows * row_elems;
        all.values[i].insert(all.values[i].end(), from, from + n * row_elems);
      }
      all.shapes[i][0] = rows;
    }
    double times[2] = {load_seconds, seconds};  // the slowest rank's
    std::vector<double> every(2 * ranks);
    if (Status st = comm.AllGather(times, every.data(), 2, bert::CommType::kF64).Wait(); !st.ok()) return fail(st);
    for (int r = 0; r < ranks; ++r) load_seconds = std::max(load_seconds, every[2 * r]), seconds = std::max(seconds, every[2 * r + 1]);
  }
  if (me != 0) return 0;
  print_profile(**session);
  std::vector<std::pair<std::string, bert::HostTensor>> out;
  for (size_t i = 0; i < all.names.size(); ++i) out.emplace_back(all.names[i], bert::FloatView(all.values[i].data(), all.shapes[i]));
  if (Status st = bert::WriteTensorsFile(outputs_path, out, {{"producer", "bert_run"}}); !st.ok()) return fail(st);
  const nlohmann::json timing = {{"ranks", ranks}, {"rows", rows}, {"load_seconds", load_seconds},
                                 {"inference_seconds", seconds}, {"rows_per_second", rows / std::max(seconds, 1e-9)}};
  std::fprintf(stderr, "%s\n", timing.dump().c_str());
  return 0;
}

// int8 sessions given --calibration record their activation ranges on its batch first (static scales);
// without it they measure each GEMM's input as they go (dynamic scales). Other sessions need nothing.
Status calibrate(bert::Session& session, const bert::Model& model, const DeviceRun& device,
                 const bert::BatchInput& own_batch) {
  if (model.info().precision != "int8" || device.calibration.empty()) return Status();
  auto file = bert::ReadTensorsFile(device.calibration);
  if (!file.ok()) return file.status();
  auto batch = read_batch(*file);
  if (!batch.ok()) return batch.status();
  const bert::BatchInput in = batch->input();
  if (in.batch > session.options().max_batch || in.seq > session.options().max_seq)
    return bert::out_of_range(device.calibration + ": calibration batch " + std::to_string(in.batch) + "x" +
                              std::to_string(in.seq) + " is larger than the run's " +
                              std::to_string(session.options().max_batch) + "x" +
                              std::to_string(session.options().max_seq));
  return session.Calibrate(in).with_context(device.calibration);
}

// --grads: loss and every parameter's gradient for the labels in the inputs file.
int run_grads(const std::shared_ptr<const bert::Model>& model, const std::string& inputs_path,
              const std::string& outputs_path, int threads) {
  auto file = bert::ReadTensorsFile(inputs_path);
  if (!file.ok()) return fail(file.status());
  auto batch = read_batch(*file);
  if (!batch.ok()) return fail(batch.status());
  const int64_t B = batch->ids.shape[0], S = batch->ids.shape[1];
  // A label tensor: int32/int64 of the given shape ([batch] or [batch, seq]).
  std::vector<std::vector<int32_t>> keep;
  auto int_label = [&](const std::string& name, bool per_token) -> bert::Result<const int32_t*> {
    const bert::HostTensor* t = file->find("label." + name);
    if (!t) return static_cast<const int32_t*>(nullptr);
    std::vector<int64_t> want = per_token ? std::vector<int64_t>{B, S} : std::vector<int64_t>{B};
    if (t->shape != want)
      return bert::invalid_argument(inputs_path + ": tensor 'label." + name + "' has shape " +
                                    bert::ShapeString(t->shape) + "; expected " + bert::ShapeString(want));
    BERT_ASSIGN_OR_RETURN(std::vector<int32_t> v, bert::TensorToInt32(*t, inputs_path + ": tensor 'label." + name + "'"));
    keep.push_back(std::move(v));
    return keep.back().data();
  };
  const bert::ModelInfo& info = model->info();
  const bool per_token = info.head == "token_classification" || info.head == "masked_lm" ||
                         info.head == "pretraining" || info.head == "discriminator";
  bert::TrainLabels labels;
  std::vector<float> regression;
  if (info.head == "sequence_classification" && info.num_labels == 1) {
    const bert::HostTensor* t = file->find("label.labels");
    if (!t || t->dtype != bert::DType::kF32 || t->shape != std::vector<int64_t>{B})
      return fail(bert::invalid_argument(inputs_path + ": a regression model (num_labels 1) needs F32 'label.labels' [batch]"));
    regression.assign(t->as<float>(), t->as<float>() + B);
    labels.regression = regression.data();
  } else {
    auto l = int_label("labels", per_token);
    if (!l.ok()) return fail(l.status());
    labels.labels = *l;
  }
  for (const char* name : {"next_sentence_label", "sentence_order_label"}) {
    auto l = int_label(name, false);
    if (!l.ok()) return fail(l.status());
    if (*l) labels.sentence_labels = *l;
  }
  auto st = int_label("start_positions", false), en = int_label("end_positions", false);
  if (!st.ok()) return fail(st.status());
  if (!en.ok()) return fail(en.status());
  labels.start_positions = *st, labels.end_positions = *en;

  bert::TrainerOptions opts;
  opts.max_batch = static_cast<int>(B), opts.max_seq = static_cast<int>(S), opts.num_threads = threads;
  opts.dropout = 0.f;  // eval mode, as the gradients of transformers' fixtures
  auto trainer = bert::Trainer::Create(model, opts);
  if (!trainer.ok()) return fail(trainer.status());
  auto loss = (*trainer)->ForwardBackward(batch->input(), labels);
  if (!loss.ok()) return fail(loss.status().with_context(inputs_path));
  const float loss_value = static_cast<float>(*loss);
  std::vector<bert::NamedArray> grads = (*trainer)->Gradients();
  std::vector<std::pair<std::string, bert::HostTensor>> out;
  out.emplace_back("loss", bert::FloatView(&loss_value, {1}));
  for (const bert::NamedArray& g : grads) out.emplace_back("grad." + g.name, bert::FloatView(g.values.data(), g.shape));
  if (Status s = bert::WriteTensorsFile(outputs_path, out, {{"producer", "bert_run --grads"}}); !s.ok()) return fail(s);
  return 0;
}

int run_text(const std::shared_ptr<const bert::Model>& model, const std::string& text,
             const std::optional<std::string>& pair, int max_length, bert::SessionOptions opts,
             const DeviceRun& device) {
  if (model->vocab().empty())
    return fail(bert::invalid_argument(
        "the model file has no WordPiece vocab: convert it from a directory with vocab.txt (RoBERTa's BPE and "
        "ALBERT's SentencePiece tokenizers are not built in; tokenize elsewhere and use --inputs)"));
  bert::TokenizerOptions topts;
  topts.lower_case = model->lower_case();
  auto tok = bert::Tokenizer::FromVocab(model->vocab(), topts);
  if (!tok.ok()) return fail(tok.status());
  const int limit = static_cast<int>(model->info().max_seq);
  auto enc = tok->Encode(text, pair ? std::optional<std::string_view>(*pair) : std::nullopt,
                         max_length > 0 ? std::min(max_length, limit) : limit);
  if (!enc.ok()) return fail(enc.status());
  const int seq = static_cast<int>(enc->input_ids.size());

  opts.max_batch = 1;
  opts.max_seq = seq;
  auto session = bert::Session::Create(model, opts);
  if (!session.ok()) return fail(session.status());
  const bool types = model->info().type_vocab_size > 0;  // DistilBERT has none
  bert::BatchInput in{1, seq, enc->input_ids.data(), enc->attention_mask.data(),
                      types ? enc->token_type_ids.data() : nullptr};
  if (device.reference || !device.calibration.empty())
    return fail(bert::invalid_argument("--drift and --calibration go with --inputs and --outputs"));
  if (Status st = calibrate(**session, *model, device, in); !st.ok()) return fail(st);
  if (Status st = (*session)->Run(in); !st.ok()) return fail(st);
  print_profile(**session);

  auto prediction = bert::Predict(**session, *model, *tok, *enc);  // top 5 per [MASK], answers <= 30 tokens
  if (!prediction.ok()) return fail(prediction.status());
  nlohmann::json j = bert::serve::PredictionJson(*prediction);
  bert::serve::AddAnswerOffsets(j, *prediction, *enc, text, pair, model->lower_case());
  std::printf("%s\n", j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
  return 0;
}

// --text-file F (or - for stdin): the model and tokenizer load once; each non-blank line is one
// input (text, text<TAB>pair, or a JSON object {"text", "text_pair"?, "id"?}) and prints one JSON
// line (with "id" when the input had one). A bad line stops the run naming its number.
int run_text_lines(const std::shared_ptr<const bert::Model>& model, const std::string& path, int max_length,
                   bert::SessionOptions opts) {
  if (model->vocab().empty())
    return fail(bert::invalid_argument("the model file has no WordPiece vocab: convert it from a directory with "
                                       "vocab.txt, or tokenize elsewhere and use --inputs"));
  std::ifstream file;
  if (path != "-") {
    if (Status st = bert::check_regular_file(path, "text file"); !st.ok()) return fail(st);
    file.open(path);
    if (!file) return fail(bert::not_found(path + ": cannot open"));
  }
  std::istream& in = path == "-" ? std::cin : file;
  const std::string name = path == "-" ? "stdin" : path;
  bert::TokenizerOptions topts;
  topts.lower_case = model->lower_case();
  auto tok = bert::Tokenizer::FromVocab(model->vocab(), topts);
  if (!tok.ok()) return fail(tok.status());
  const int limit = static_cast<int>(model->info().max_seq);
  opts.max_batch = 1;
  opts.max_seq = limit;
  auto session = bert::Session::Create(model, opts);
  if (!session.ok()) return fail(session.status());
  const bool types = model->info().type_vocab_size > 0;
  // One input line -> its JSON line.
  auto predict_line = [&](size_t line_no, const std::string& line) -> Result<std::string> {
    const std::string where = name + ":" + std::to_string(line_no);
    auto req = line[0] == '{' ? cli::ParseJsonRequest(line) : cli::ParsePlainRequest(line);
    if (!req.ok()) return req.status().with_context(where);
    auto enc = tok->Encode(req->text, req->pair ? std::optional<std::string_view>(*req->pair) : std::nullopt,
                           max_length > 0 ? std::min(max_length, limit) : limit);
    if (!enc.ok()) return enc.status().with_context(where);
    const int seq = static_cast<int>(enc->input_ids.size());
    bert::BatchInput batch{1, seq, enc->input_ids.data(), enc->attention_mask.data(),
                           types ? enc->token_type_ids.data() : nullptr};
    BERT_RETURN_IF_ERROR((*session)->Run(batch).with_context(where));
    auto prediction = bert::Predict(**session, *model, *tok, *enc);
    if (!prediction.ok()) return prediction.status().with_context(where);
    nlohmann::json j = bert::serve::PredictionJson(*prediction);
    bert::serve::AddAnswerOffsets(j, *prediction, *enc, req->text, req->pair, model->lower_case());
    if (!req->id.is_null()) j["id"] = req->id;
    return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  };
  std::string line;
  if (g_comm->world_size() == 1) {  // one process: stream, a line out per line in
    for (size_t line_no = 1; std::getline(in, line); ++line_no) {
      if (cli::IsBlankLine(line)) continue;
      auto out = predict_line(line_no, line);
      if (!out.ok()) return fail(out.status());
      std::printf("%s\n", out->c_str());
      std::fflush(stdout);
    }
    print_profile(**session);
    return 0;
  }
  // Under mpirun every rank reads the file, predicts its share of the lines (contiguous, sizes
  // differing by at most one), and rank 0 prints every rank's lines in input order.
  std::vector<std::pair<size_t, std::string>> lines;
  for (size_t line_no = 1; std::getline(in, line); ++line_no)
    if (!cli::IsBlankLine(line)) lines.emplace_back(line_no, line);
  bert::Communicator& comm = *g_comm;
  const size_t ranks = static_cast<size_t>(comm.world_size()), me = static_cast<size_t>(comm.rank());
  const auto [lo, hi] = cli::RankShare(0, lines.size(), static_cast<int>(me), static_cast<int>(ranks));
  std::string mine;
  for (size_t i = lo; i < hi; ++i) {
    auto out = predict_line(lines[i].first, lines[i].second);
    if (!out.ok()) return fail(out.status());
    mine += *out + "\n";
  }
  std::vector<int64_t> sizes(ranks);
  const int64_t my_size = static_cast<int64_t>(mine.size());
  if (Status st = comm.AllGather(&my_size, sizes.data(), 1, bert::CommType::kI64).Wait(); !st.ok()) return fail(st);
  for (size_t r = 0; r < ranks; ++r) {
    std::string blob = r == me ? mine : std::string(static_cast<size_t>(sizes[r]), '\0');
    if (Status st = comm.Broadcast(blob.data(), sizes[r], static_cast<int>(r)).Wait(); !st.ok()) return fail(st);
    if (me == 0) std::fwrite(blob.data(), 1, blob.size(), stdout);
  }
  std::fflush(stdout);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::string model_path, inputs, outputs, calibration;
  std::optional<std::string> text, pair;
  std::string pooling = "none", device_name = "cpu", precision = "fp32";
  int threads = 0, max_length = 0, rows_per_run = 0;
  bert::SessionOptions opts;
  bert::LoadOptions load;
  DeviceRun device;
  bool grads = false, drift = false, normalize = false, tf32 = false, remove_padding = false;
  cli::Parser p("bert_run", kSynopsis, kDescription);
  p.string("--model", &model_path, "F", "engine model file or HF directory (required)");
  p.string("--inputs", &inputs, "FILE", "safetensors with input_ids [batch, seq] (+ attention_mask, token_type_ids)");
  p.string("--outputs", &outputs, "FILE", "safetensors to write every output to");
  p.string("--text", &text, "TEXT", "text to tokenize and predict on (prints JSON)");
  p.string("--text-pair", &pair, "TEXT", "second segment for --text");
  std::string text_file;
  p.string("--text-file", &text_file, "F",
           "one input per line (text, text<TAB>pair, or {\"text\", \"text_pair\", \"id\"}); - reads stdin; "
           "prints one JSON line each");
  p.integer("--threads", &threads, 0, bert::kMaxThreads, "OpenMP threads (0: the OpenMP default)");
  p.integer("--batch", &rows_per_run, 1, 1 << 20, "with --inputs: rows per run", "all rows at once");
  p.integer("--max-length", &max_length, 0, 1 << 20, "truncate --text to N tokens (0: the model's limit)");
  p.choice("--pooling", &pooling, {"none", "cls", "mean", "max"}, "add sentence_embedding [batch, hidden]");
  p.flag("--normalize", &normalize, "unit L2 norm for sentence_embedding (needs --pooling)");
  p.flag("--grads", &grads, "with --inputs: read label.* and write loss and grad.<parameter> (eval mode)");
  p.choice("--device", &device_name, {"cpu", "cuda"}, "where to run");
  p.choice("--precision", &precision, {"fp32", "bf16", "int8", "fp16"},
           "the encoder's linear layers: fp32, bf16 (CPU: AVX-512), int8 (CPU), fp16 (CUDA)");
  p.flag("--tf32", &tf32, "allow TF32 tensor-core GEMMs (CUDA)");
  p.flag("--remove-padding", &remove_padding, "run the encoder on the real tokens only");
  p.flag("--profile", &opts.profile, "print per-op milliseconds (GEMMs with their oneDNN implementation) on stderr");
  p.string("--calibration", &calibration, "FILE", "int8: inputs file to calibrate activation ranges on");
  p.flag("--drift", &drift, "also run the model in fp32 and print each output's drift (cosine, max abs)");
  p.flag("--allow-non-finite", &load.allow_non_finite, "load a model whose weights hold NaN or Inf");
  if (auto code = p.parse(argc, argv)) return *code;
  auto usage = [&](const std::string& msg) { return p.usage_error(msg); };
  opts.pooling = pooling == "cls" ? bert::Pooling::kCls : pooling == "mean" ? bert::Pooling::kMean
                 : pooling == "max" ? bert::Pooling::kMax : bert::Pooling::kNone;
  opts.normalize = normalize;
  opts.remove_padding = remove_padding;
  load.device = device_name == "cuda" ? bert::Device::kCuda : bert::Device::kCpu;
  load.precision = precision == "fp16"   ? bert::Precision::kF16
                   : precision == "int8" ? bert::Precision::kInt8
                   : precision == "bf16" ? bert::Precision::kBF16
                                         : bert::Precision::kF32;
  load.allow_tf32 = tf32;
  device.calibration = calibration;
  if (model_path.empty()) return usage("--model is required");
  // Under mpirun (the environment says so; no flag) --inputs' rows and --text-file's lines are shared
  // by the ranks; rank 0 writes the outputs in input order.
  auto comm = bert::Communicator::FromEnvironment();
  if (!comm.ok()) return fail(comm.status());
  g_comm = *comm;
  const bool ranks = g_comm->world_size() > 1;
  if (!text_file.empty()) {  // its own mode: many texts, one model load
    if (text || !inputs.empty() || !outputs.empty() || grads || drift || !device.calibration.empty())
      return usage("--text-file goes without --text, --inputs/--outputs, --grads, --drift and --calibration");
    if (ranks && text_file == "-") return usage("under mpirun, --text-file needs a file (stdin reaches rank 0 only)");
    opts.num_threads = threads;
    auto model = bert::Model::Load(model_path, load);
    if (!model.ok()) return fail(model.status());
    return run_text_lines(*model, text_file, max_length, opts);
  }
  const bool tensor_mode = !inputs.empty() || !outputs.empty();
  if (tensor_mode == text.has_value()) return usage("give either --inputs and --outputs, --text, or --text-file");
  if (tensor_mode && (inputs.empty() || outputs.empty())) return usage("--inputs and --outputs go together");
  if (pair && !text) return usage("--text-pair needs --text");
  if (opts.normalize && opts.pooling == bert::Pooling::kNone) return usage("--normalize needs --pooling");
  if (grads && (!tensor_mode || opts.pooling != bert::Pooling::kNone))
    return usage("--grads goes with --inputs and --outputs (and without --pooling)");
  if (grads && load.precision != bert::Precision::kF32)
    return usage("--grads computes in fp32 (on the CPU or with --device cuda)");
  if (!device.calibration.empty() && load.precision != bert::Precision::kInt8)
    return usage("--calibration goes with --precision int8");
  if (drift && load.precision == bert::Precision::kF32 && !tf32)
    return usage("--drift compares a low-precision run (--precision bf16|int8|fp16, or --tf32) with fp32");
  opts.num_threads = threads;

  if (ranks && !tensor_mode)
    return usage("under mpirun, bert_run shares the rows of --inputs or the lines of --text-file; --text runs on one rank");
  if (ranks && grads) return usage("--grads runs on one rank");
  const auto load_start = std::chrono::steady_clock::now();
  auto model = bert::Model::Load(model_path, load);
  if (!model.ok()) return fail(model.status());
  const double load_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - load_start).count();
  if (drift) {
    bert::LoadOptions ref = load;
    ref.precision = bert::Precision::kF32;
    ref.allow_tf32 = false;
    auto reference = bert::Model::Load(model_path, ref);
    if (!reference.ok()) return fail(reference.status().with_context("the fp32 reference for --drift"));
    device.reference = *reference;
  }
  if (grads) return run_grads(*model, inputs, outputs, threads);
  return tensor_mode ? run_tensors(*model, inputs, outputs, opts, device, rows_per_run, *g_comm, load_seconds)
                     : run_text(*model, *text, pair, max_length, opts, device);
}
