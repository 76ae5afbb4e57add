// Served models, the registry, metrics histograms and the dynamic-batching compute pool (batcher.h).
#include "engine/serve/server/batcher.h"

#include <algorithm>
#include <cstdio>
#include <sstream>

#include "engine/serve/prediction_json.h"

namespace bert::serve {

// ---- Histogram ----------------------------------------------------------------------------------

Histogram::Histogram(std::vector<double> bounds) : bounds_(std::move(bounds)), counts_(bounds_.size() + 1, 0) {}

void Histogram::Observe(double v) {
  std::lock_guard<std::mutex> lk(mu_);
  size_t i = std::lower_bound(bounds_.begin(), bounds_.end(), v) - bounds_.begin();
  ++counts_[i];
  sum_ += v;
  ++count_;
}

std::string Histogram::Prometheus(const std::string& name, const std::string& labels) const {
  std::lock_guard<std::mutex> lk(mu_);
  std::ostringstream o;
  const std::string sep = labels.empty() ? "" : ",";
  uint64_t cum = 0;
  for (size_t i = 0; i <= bounds_.size(); ++i) {
    cum += counts_[i];
    std::string le = "+Inf";
    if (i < bounds_.size()) {
      char b[32];
      std::snprintf(b, sizeof b, "%g", bounds_[i]);
      le = b;
    }
    o << name << "_bucket{" << labels << sep << "le=\"" << le << "\"} " << cum << "\n";
  }
  o << name << "_sum{" << labels << "} " << sum_ << "\n";
  o << name << "_count{" << labels << "} " << count_ << "\n";
  return o.str();
}

ModelMetrics::ModelMetrics()
    : batch_rows({1, 2, 4, 8, 16, 32, 64, 128, 256}),
      request_latency({0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}),
      compute_seconds({0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5}) {}

// ---- ServedModel / ModelRegistry ----------------------------------------------------------------

nlohmann::json ServedModel::Info() const {
  const ModelInfo& i = model->info();
  return {{"name", name},
          {"path", path},
          {"family", i.family},
          {"model_type", i.model_type},
          {"architecture", i.architecture},
          {"head", i.head},
          {"labels", i.labels},
          {"num_labels", i.num_labels},
          {"precision", i.precision},
          {"device", i.device},
          {"cpu_isa", i.cpu_isa},
          {"hidden_size", i.hidden_size},
          {"num_layers", i.num_layers},
          {"max_seq", i.max_seq},
          {"tokenizer", tokenizer.has_value()},
          {"loaded_at", loaded_at}};
}

std::shared_ptr<ServedModel> ModelRegistry::Get(const std::string& name) const {
  std::lock_guard<std::mutex> lk(mu_);
  auto it = models_.find(name);
  return it == models_.end() ? nullptr : it->second;
}

std::shared_ptr<ServedModel> ModelRegistry::Put(std::shared_ptr<ServedModel> m) {
  std::lock_guard<std::mutex> lk(mu_);
  std::shared_ptr<ServedModel>& slot = models_[m->name];
  std::shared_ptr<ServedModel> old = std::move(slot);
  slot = std::move(m);
  return old;
}

std::shared_ptr<ServedModel> ModelRegistry::Remove(const std::string& name) {
  std::lock_guard<std::mutex> lk(mu_);
  auto it = models_.find(name);
  if (it == models_.end()) return nullptr;
  std::shared_ptr<ServedModel> old = std::move(it->second);
  models_.erase(it);
  return old;
}

std::vector<std::shared_ptr<ServedModel>> ModelRegistry::List() const {
  std::lock_guard<std::mutex> lk(mu_);
  std::vector<std::shared_ptr<ServedModel>> out;
  for (const auto& [name, m] : models_) out.push_back(m);
  return out;
}

std::shared_ptr<ModelMetrics> ModelRegistry::MetricsFor(const std::string& name) {
  std::lock_guard<std::mutex> lk(mu_);
  std::shared_ptr<ModelMetrics>& m = metrics_[name];
  if (!m) m = std::make_shared<ModelMetrics>();
  return m;
}

std::map<std::string, std::shared_ptr<ModelMetrics>> ModelRegistry::AllMetrics() const {
  std::lock_guard<std::mutex> lk(mu_);
  return metrics_;
}

// ---- ComputePool --------------------------------------------------------------------------------

// A worker's sessions, each for one served model (held weakly: dropped once the model is gone),
// one output kind and one sequence bucket.
struct ComputePool::Worker {
  struct Slot {
    std::weak_ptr<ServedModel> model;
    const ServedModel* raw = nullptr;
    OutputKind kind;
    int bucket = 0;
    std::unique_ptr<Session> session;
  };
  std::vector<Slot> slots;

  void DropExpired() {
    slots.erase(std::remove_if(slots.begin(), slots.end(), [](const Slot& s) { return s.model.expired(); }),
                slots.end());
  }
};

ComputePool::ComputePool(BatchPolicy policy) : policy_(policy) {
  policy_.workers = std::max(1, policy_.workers);
  policy_.max_batch_rows = std::max(1, policy_.max_batch_rows);
  policy_.max_batch_tokens = std::max(1, policy_.max_batch_tokens);
  for (int i = 0; i < policy_.workers; ++i) threads_.emplace_back([this, i] { Loop(i); });
}

ComputePool::~ComputePool() { Shutdown(); }

void ComputePool::Shutdown() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  for (std::thread& t : threads_)
    if (t.joinable()) t.join();
  threads_.clear();
}

int ComputePool::QueueDepth() const {
  std::lock_guard<std::mutex> lk(mu_);
  return static_cast<int>(queue_.size());
}

bool ComputePool::Submit(const std::shared_ptr<ComputeRequest>& req) {
  const int n = static_cast<int>(req->encodings.size());
  req->results.assign(n, nullptr);
  req->errors.assign(n, "");
  req->remaining = n;
  if (n == 0) return true;
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (stop_) return false;
    if (req->model->queued.load() + n > policy_.max_queue) return false;
    req->model->queued += n;
    const Clock::time_point now = Clock::now();
    for (int i = 0; i < n; ++i)
      queue_.push_back({req, i, static_cast<int>(req->encodings[i].input_ids.size()), now});
  }
  cv_.notify_all();
  return true;
}

bool ComputePool::Wait(ComputeRequest& req, Clock::time_point deadline) {
  std::unique_lock<std::mutex> lk(req.mu);
  if (req.cv.wait_until(lk, deadline, [&] { return req.remaining == 0; })) return true;
  req.cancelled = true;
  return false;
}

int ComputePool::Bucket(int seq, int64_t model_max) const {
  int b = 16;
  while (b < seq) b *= 2;
  return static_cast<int>(std::min<int64_t>(b, std::max<int64_t>(model_max, seq)));
}

void ComputePool::Loop(int id) {
  Worker w;
  std::unique_lock<std::mutex> lk(mu_);
  for (;;) {
    cv_.wait(lk, [&] { return stop_ || !queue_.empty(); });
    // Items of requests that gave up are dropped unrun.
    for (auto it = queue_.begin(); it != queue_.end();) {
      if (it->req->cancelled) {
        it->req->model->queued -= 1;
        it = queue_.erase(it);
      } else {
        ++it;
      }
    }
    if (queue_.empty()) {
      if (stop_) return;
      continue;
    }
    const Item& front = queue_.front();
    const ServedModel* model = front.req->model.get();
    const OutputKind kind = front.req->kind;
    const int64_t model_max = model->model->info().max_seq;
    // Gather the batch: the oldest item, then later items of the same model and kind while the
    // padded tokens (rows x bucket of the longest) stay within the budget. Idle workers share what
    // is queued (a large request is split over them rather than run by one single-threaded worker).
    int same = 0;
    for (const Item& item : queue_) same += item.req->model.get() == model && item.req->kind == kind;
    const int idle = std::max(1, policy_.workers - busy_);
    const int share = std::min(policy_.max_batch_rows, (same + idle - 1) / idle);
    std::vector<std::list<Item>::iterator> picked;
    int longest = 0;
    for (auto it = queue_.begin(); it != queue_.end(); ++it) {
      if (it->req->model.get() != model || !(it->req->kind == kind)) continue;
      const int l = std::max(longest, it->tokens);
      const int rows = static_cast<int>(picked.size()) + 1;
      if (!picked.empty() && (rows > share || rows * Bucket(l, model_max) > policy_.max_batch_tokens)) break;
      picked.push_back(it);
      longest = l;
    }
    if (policy_.max_wait_ms > 0 && !stop_) {
      const int rows = static_cast<int>(picked.size());
      const bool full = rows >= policy_.max_batch_rows ||
                        (rows + 1) * Bucket(longest, model_max) > policy_.max_batch_tokens;
      const auto deadline =
          front.enqueued + std::chrono::microseconds(static_cast<int64_t>(policy_.max_wait_ms * 1000));
      if (!full && Clock::now() < deadline) {
        cv_.wait_until(lk, deadline);
        continue;
      }
    }
    std::vector<Item> batch;
    batch.reserve(picked.size());
    for (auto it : picked) {
      batch.push_back(std::move(*it));
      queue_.erase(it);
    }
    for (const Item& item : batch) item.req->model->queued -= 1;
    ++busy_;
    const bool more = !queue_.empty();
    lk.unlock();
    if (more) cv_.notify_one();  // another worker may take the rest
    w.DropExpired();
    try {  // nothing a batch does may end the worker: its inputs get the error instead
      RunBatch(w, batch);
    } catch (const std::exception& e) {
      for (Item& item : batch)
        if (!item.finished) Finish(item, nullptr, std::string("internal error: ") + e.what(), 0);
    } catch (...) {
      for (Item& item : batch)
        if (!item.finished) Finish(item, nullptr, "internal error", 0);
    }
    batch.clear();  // releases the requests (and perhaps a replaced model) outside the lock
    lk.lock();
    --busy_;
  }
  (void)id;
}

void ComputePool::Finish(Item& item, nlohmann::json result, std::string error, double compute_ms) {
  item.finished = true;
  ComputeRequest& r = *item.req;
  std::lock_guard<std::mutex> lk(r.mu);
  r.results[item.index] = std::move(result);
  r.errors[item.index] = std::move(error);
  r.compute_ms = std::max(r.compute_ms, compute_ms);
  if (--r.remaining == 0) r.cv.notify_all();
}

void ComputePool::RunBatch(Worker& w, std::vector<Item>& batch) {
  const std::shared_ptr<ServedModel> sm = batch.front().req->model;
  const OutputKind kind = batch.front().req->kind;
  const Model& model = *sm->model;
  auto finish = &ComputePool::Finish;
  auto fail_all = [&](const std::string& msg) {
    for (Item& item : batch)
      if (!item.finished) Finish(item, nullptr, msg, 0);
  };

  std::vector<Encoding> encs;
  encs.reserve(batch.size());
  for (const Item& item : batch) encs.push_back(item.req->encodings[item.index]);
  const int32_t pad = sm->tokenizer ? sm->tokenizer->pad_id() : 0;
  EncodedBatch eb = pad_batch(encs, pad);
  const int bucket = Bucket(eb.seq, model.info().max_seq);

  // This worker's session for (model, kind, bucket), made on first use.
  Session* session = nullptr;
  for (Worker::Slot& s : w.slots)
    if (s.raw == sm.get() && s.kind == kind && s.bucket == bucket && !s.model.expired()) session = s.session.get();
  if (!session) {
    SessionOptions o;
    o.max_seq = bucket;
    o.max_batch = std::max(1, std::min(policy_.max_batch_rows, policy_.max_batch_tokens / bucket));
    o.max_batch = std::max(o.max_batch, eb.batch);
    o.num_threads = 1;
    o.pooling = kind.embed ? kind.pooling : Pooling::kNone;
    o.normalize = kind.embed && kind.normalize;
    o.remove_padding = policy_.remove_padding;
    auto created = Session::Create(sm->model, o);
    if (!created.ok() && o.remove_padding) {  // a backend without the fused attention it needs
      o.remove_padding = false;
      created = Session::Create(sm->model, o);
    }
    if (!created.ok()) return fail_all("creating a session: " + created.status().to_string());
    w.slots.push_back({sm, sm.get(), kind, bucket, std::move(*created)});
    session = w.slots.back().session.get();
  }

  const bool types = model.info().type_vocab_size > 0;
  BatchInput in{eb.batch, eb.seq, eb.input_ids.data(), eb.attention_mask.data(),
                types ? eb.token_type_ids.data() : nullptr};
  const Clock::time_point t0 = Clock::now();
  Status st = session->Run(in);
  const double compute_s = std::chrono::duration<double>(Clock::now() - t0).count();
  if (!st.ok()) return fail_all("running the model: " + st.to_string());

  ModelMetrics& mm = *sm->metrics;
  mm.batches += 1;
  mm.batch_rows.Observe(eb.batch);
  mm.compute_seconds.Observe(compute_s);
  int64_t real = 0;
  for (const Encoding& e : encs) real += static_cast<int64_t>(e.input_ids.size());
  mm.tokens += real;
  mm.padded_tokens += static_cast<int64_t>(eb.batch) * eb.seq;

  std::optional<OutputView> emb;
  if (kind.embed) {
    auto out = session->Output("sentence_embedding");
    if (!out.ok()) return fail_all("reading sentence_embedding: " + out.status().to_string());
    emb = *out;
  }
  for (size_t r = 0; r < batch.size(); ++r) {
    Item& item = batch[r];
    if (kind.embed) {
      const int64_t h = emb->shape.back();
      std::vector<float> v(emb->data + r * h, emb->data + (r + 1) * h);
      finish(item, nlohmann::json(v), "", compute_s * 1e3);
      continue;
    }
    if (!sm->tokenizer) {
      finish(item, nullptr, "the model has no WordPiece vocab", compute_s * 1e3);
      continue;
    }
    auto pr = Predict(*session, model, *sm->tokenizer, encs[r], static_cast<int>(r), item.req->predict);
    if (!pr.ok()) {
      finish(item, nullptr, "post-processing: " + pr.status().to_string(), compute_s * 1e3);
      continue;
    }
    nlohmann::json j = PredictionJson(*pr);
    if (static_cast<size_t>(item.index) < item.req->texts.size()) {
      const auto& [text, pair] = item.req->texts[item.index];
      AddAnswerOffsets(j, *pr, encs[r], text, pair, model.lower_case());
    }
    finish(item, std::move(j), "", compute_s * 1e3);
  }
}

}  // namespace bert::serve
