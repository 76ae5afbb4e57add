// The serving core below the HTTP layer: served models (a loaded Model + its tokenizer), the
// registry that names them, per-model metrics, and the compute pool that runs dynamic batches.
//
// One ComputePool per server holds a fixed number of workers (sized to the cores, one OpenMP thread
// each, so the pool never oversubscribes the machine). Requests to any model go into one FIFO queue
// of items (one item = one input sequence). A free worker takes the oldest item and gathers the
// items behind it that are for the same model and output kind, up to a token budget (padded
// tokens, rows x longest row rounded up to a power of two), a row cap and its share of those items
// among the idle workers (so one large request is split over them); with max_wait > 0 it
// first waits up to max_wait after the oldest item arrived for the batch to fill. Each worker keeps
// its own sessions per (model, kind, sequence bucket), created on first use with padding removal
// when the backend has it. A request holds its model by shared_ptr, so a model replaced or unloaded
// while requests are queued finishes them on the old model.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "bert/engine.h"
#include "bert/predict.h"
#include "bert/tokenizer.h"

namespace bert::serve {

using Clock = std::chrono::steady_clock;

// A Prometheus-style histogram with fixed upper bounds (cumulative buckets when printed).
class Histogram {
 public:
  explicit Histogram(std::vector<double> bounds);
  void Observe(double v);
  // name{labels,le="..."} lines plus _sum and _count; `labels` is e.g. model="tiny" (may be empty).
  std::string Prometheus(const std::string& name, const std::string& labels) const;

 private:
  mutable std::mutex mu_;
  std::vector<double> bounds_;
  std::vector<uint64_t> counts_;  // per bound, plus +Inf
  double sum_ = 0;
  uint64_t count_ = 0;
};

// What one model name has done (kept across reloads of that name).
struct ModelMetrics {
  ModelMetrics();
  std::atomic<uint64_t> requests{0}, inputs{0}, batches{0}, tokens{0}, padded_tokens{0};
  Histogram batch_rows;        // rows per batch run
  Histogram request_latency;   // seconds, request received -> response ready
  Histogram compute_seconds;   // seconds per batch run
};

// A loaded model under a name.
struct ServedModel {
  std::string name, path;
  std::shared_ptr<const Model> model;
  std::optional<Tokenizer> tokenizer;  // empty when the model file has no WordPiece vocab
  LoadOptions load;
  std::string loaded_at;               // UTC, ISO 8601
  std::atomic<int> queued{0};          // inputs waiting in the pool's queue
  std::shared_ptr<ModelMetrics> metrics;
  nlohmann::json Info() const;         // what GET /v1/models says about it
};

// The names and the models they stand for. Replacing a name never waits for its requests.
class ModelRegistry {
 public:
  std::shared_ptr<ServedModel> Get(const std::string& name) const;
  // Puts `m` under m->name; returns the model it replaced (or null).
  std::shared_ptr<ServedModel> Put(std::shared_ptr<ServedModel> m);
  std::shared_ptr<ServedModel> Remove(const std::string& name);
  std::vector<std::shared_ptr<ServedModel>> List() const;
  // The metrics of a name, created on first use and kept when the model is replaced.
  std::shared_ptr<ModelMetrics> MetricsFor(const std::string& name);
  std::map<std::string, std::shared_ptr<ModelMetrics>> AllMetrics() const;

 private:
  mutable std::mutex mu_;
  std::map<std::string, std::shared_ptr<ServedModel>> models_;
  std::map<std::string, std::shared_ptr<ModelMetrics>> metrics_;
};

// What a batch computes: predictions (the model's head) or pooled sentence embeddings.
struct OutputKind {
  bool embed = false;
  Pooling pooling = Pooling::kNone;
  bool normalize = false;
  bool operator==(const OutputKind&) const = default;
};

// One HTTP request's compute: its encodings, and the results the workers fill in.
struct ComputeRequest {
  std::shared_ptr<ServedModel> model;
  OutputKind kind;
  PredictOptions predict;
  std::vector<Encoding> encodings;
  // The inputs' texts (text, pair), for QA answers cut from the original context.
  std::vector<std::pair<std::string, std::optional<std::string>>> texts;
  // Filled by the workers: per input a JSON result or an error message.
  std::vector<nlohmann::json> results;
  std::vector<std::string> errors;
  std::mutex mu;
  std::condition_variable cv;
  int remaining = 0;
  std::atomic<bool> cancelled{false};  // set by a request that timed out: its items are skipped
  Clock::time_point received;
  double compute_ms = 0;  // the longest batch run this request's inputs were part of
};

struct BatchPolicy {
  int workers = 1;                 // compute threads (one OpenMP thread each)
  int max_batch_tokens = 4096;     // padded tokens per batch
  int max_batch_rows = 64;         // rows per batch
  double max_wait_ms = 0;          // wait this long for a batch to fill (0: run what is queued)
  int max_queue = 1024;            // inputs waiting per model; more -> Submit refuses
  bool remove_padding = true;      // sessions run the encoder on real tokens only (when supported)
};

class ComputePool {
 public:
  explicit ComputePool(BatchPolicy policy);
  ~ComputePool();
  ComputePool(const ComputePool&) = delete;
  ComputePool& operator=(const ComputePool&) = delete;

  // Queues the request's inputs. false when its model's queue is full (nothing queued then).
  bool Submit(const std::shared_ptr<ComputeRequest>& req);
  // Waits for the request until `deadline`; false on timeout (the request is cancelled then).
  static bool Wait(ComputeRequest& req, Clock::time_point deadline);
  // Finishes what is queued, then stops the workers.
  void Shutdown();

  int QueueDepth() const;
  const BatchPolicy& policy() const { return policy_; }

 private:
  struct Item {
    std::shared_ptr<ComputeRequest> req;
    int index = 0;
    int tokens = 0;
    Clock::time_point enqueued;
    bool finished = false;  // its result or error was handed to the request
  };
  static void Finish(Item& item, nlohmann::json result, std::string error, double compute_ms);
  struct Worker;
  void Loop(int id);
  void RunBatch(Worker& w, std::vector<Item>& batch);
  int Bucket(int seq, int64_t model_max) const;

  BatchPolicy policy_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::list<Item> queue_;
  bool stop_ = false;
  int busy_ = 0;  // workers running a batch
  std::vector<std::thread> threads_;
};

}  // namespace bert::serve
