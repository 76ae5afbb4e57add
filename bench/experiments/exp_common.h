// Shared pieces of the study experiments (bench/experiments/*.cc, docs/EXPERIMENTS.md): the scale
// (BERT_EXP_SCALE = smoke | default | full), SST-2 text, synthetic models of the zoo's shapes, the
// process memory probe (resident set, peak reset through /proc/self/clear_refs) and a progress bar.
#pragma once

#include <benchmark/benchmark.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "bert/data.h"
#include "bert/engine.h"
#include "bert/tokenizer.h"

namespace studies {

enum class Scale { kSmoke, kDefault, kFull };
Scale scale();                 // from $BERT_EXP_SCALE (default: kDefault)
const char* scale_name();      // "smoke", "default", "full"
// Pick by scale.
template <typename T>
T by_scale(T smoke, T dflt, T full) {
  return scale() == Scale::kSmoke ? smoke : scale() == Scale::kFull ? full : dflt;
}
int all_threads();  // the machine's hardware threads (1 at smoke scale)

// ../shared (or $BERT_SHARED_DIR).
std::string shared_dir();

// SST-2 (../shared/data/glue-sst2) tokenized with bert-base-uncased's vocab, loaded once.
struct Sst2 {
  bert::Tokenizer tok;
  std::vector<bert::data::Example> train, dev;
};
// Null with *error set when the data or vocab is absent. train_limit 0 = all of train.
const Sst2* sst2(int64_t train_limit, std::string* error);
// The raw sentences (dev first, then train), n of them.
std::vector<std::string> sst2_sentences(int n, std::string* error);

// A synthetic model (seed 1234) of a named shape with a head; `edit` changes its config.json first
// (e.g. {"max_position_embeddings": 1024}); empty for none.
bert::Result<std::shared_ptr<const bert::Model>> synthetic(const std::string& shape, const std::string& architecture,
                                                           const std::string& config_patch_json = "",
                                                           bool pack_weights = true);
// The same written once per process to a temporary engine file (removed at exit); "" on error.
std::string synthetic_file(const std::string& shape, const std::string& architecture, std::string* error);

// Process memory from /proc/self/status (bytes).
int64_t rss_bytes();
int64_t peak_rss_bytes();  // VmHWM
// Returns the freed heap to the system (so resident figures before / after mean something) and
// resets the peak resident set to the current one; false when the kernel does not allow the reset
// (the peak is then the process's lifetime peak).
bool reset_peak_rss();

// pre / peak / post resident memory around a region, as counters (MiB).
struct MemoryProbe {
  int64_t pre = 0, peak = 0, post = 0;
  bool peak_reset = false;
  void start();       // trims the heap, resets the peak, reads pre
  void stop_peak();   // reads the peak so far
  void finish();      // trims the heap, reads post
  void counters(benchmark::State& state) const;
};

// A progress bar on stderr when it is a terminal (and $BERT_EXP_PROGRESS is not 0).
class Progress {
 public:
  Progress(std::string label, int64_t total);
  ~Progress();
  void add(int64_t n = 1);

 private:
  std::string label_;
  int64_t total_, done_ = 0;
  bool on_;
  std::chrono::steady_clock::time_point last_{}, start_;
};

double seconds_since(std::chrono::steady_clock::time_point t0);

// Common context counters: threads and a precision label.
void set_label(benchmark::State& state, const std::string& label);
// A row that cannot run here: the error row the report prints as "needs ...".
void needs(benchmark::State& state, const std::string& what);

// Bytes every op of one forward pass must read at least once (weights + activations), from the
// shapes: the basis of study 000's "memory bandwidth utilization". A model-level count, not a
// hardware counter.
double forward_bytes_read(const bert::ModelInfo& info, int64_t weight_bytes, int64_t batch, int64_t seq);

// Accuracy, F1 (class 1 positive), mean cross-entropy and the time of the Runs of a classifier over
// `examples` in batches (padded to pad_to, or to each batch's longest when 0). exp_training.cc.
struct Eval {
  double accuracy = 0, f1 = 0, loss = 0, seconds = 0;
  int64_t n = 0, batches = 0;
};
bert::Result<Eval> evaluate(const std::shared_ptr<const bert::Model>& model,
                            const std::vector<bert::data::Example>& examples, int batch, int threads,
                            bool remove_padding, int pad_to);
// An SST-2 classifier of `shape` fine-tuned in this process from random weights, as a temporary
// engine file; *note says how it was trained. exp_training.cc.
bert::Result<std::string> trained_sst2_file(const std::string& shape, std::string* note);

// Registration of each group (exp_inference.cc, exp_training.cc).
void register_inference();
void register_training();

}  // namespace studies
