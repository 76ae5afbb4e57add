// The communicator's shared parts: requests, the one-rank backend, collective descriptions, and
// FromEnvironment's choice of backend from the launcher's environment.
#include <cstdlib>
#include <cstring>

#include "engine/dist/comm_impl.h"

namespace bert {

const char* comm_type_name(CommType t) {
  switch (t) {
    case CommType::kF32: return "f32";
    case CommType::kF64: return "f64";
    case CommType::kI64: return "i64";
  }
  return "?";
}

size_t comm_type_size(CommType t) { return t == CommType::kF32 ? 4 : 8; }

Status CommRequest::Wait() {
  if (!state_) return Status::Ok();
  if (state_->complete) {
    bool done;
    {
      std::lock_guard<std::mutex> lock(state_->mu);
      done = state_->done;
    }
    if (!done) state_->finish(state_->complete());
  }
  std::unique_lock<std::mutex> lock(state_->mu);
  state_->cv.wait(lock, [&] { return state_->done; });
  return state_->status;
}

bool CommRequest::Done() const {
  if (!state_) return true;
  std::lock_guard<std::mutex> lock(state_->mu);
  return state_->done;
}

std::string describe(const CollectiveInfo& c) {
  const std::string n = std::to_string(c.count);
  const std::string op = c.op == ReduceOp::kSum ? "sum" : "average";
  switch (c.kind) {
    case CollectiveKind::kAllReduce: return "allreduce(" + op + ") of " + n + " " + comm_type_name(c.type);
    case CollectiveKind::kReduceScatter:
      return "reduce-scatter(" + op + ") of " + n + " " + comm_type_name(c.type) + " per rank";
    case CollectiveKind::kAllGather: return "all-gather of " + n + " " + comm_type_name(c.type) + " per rank";
    case CollectiveKind::kBroadcast: return "broadcast of " + n + " bytes from rank " + std::to_string(c.root);
    case CollectiveKind::kBarrier: return "barrier";
    case CollectiveKind::kFailed: return "a failure report";
  }
  return "?";
}

std::string mismatch(const CollectiveInfo& a, const CollectiveInfo& b) {
  if (a.kind != b.kind || a.type != b.type || a.count != b.count || a.root != b.root || a.op != b.op)
    return describe(a) + " vs " + describe(b);
  return "";
}

int launcher_world_size() {
  for (const char* var : {"OMPI_COMM_WORLD_SIZE", "PMIX_SIZE", "PMI_SIZE", "MV2_COMM_WORLD_SIZE"}) {
    const char* v = std::getenv(var);
    if (v && *v) {
      const int n = std::atoi(v);
      if (n > 0) return n;
    }
  }
  return 1;
}

namespace {

// One rank: every collective is a copy (or nothing) and completes at once.
class SingleRank final : public Communicator {
 public:
  int rank() const override { return 0; }
  int world_size() const override { return 1; }
  const char* backend() const override { return "single"; }
  int64_t collectives() const override { return started_; }
  CommRequest AllReduce(void*, int64_t count, CommType, ReduceOp) override { return start(); }
  CommRequest ReduceScatter(const void* in, void* out, int64_t count, CommType type, ReduceOp) override {
    if (in != out) std::memmove(out, in, static_cast<size_t>(count) * comm_type_size(type));
    return start();
  }
  CommRequest AllGather(const void* in, void* out, int64_t count, CommType type) override {
    if (in != out) std::memmove(out, in, static_cast<size_t>(count) * comm_type_size(type));
    return start();
  }
  CommRequest Broadcast(void*, int64_t, int root) override {
    if (root != 0) return finished_request(invalid_argument("broadcast from rank " + std::to_string(root) +
                                                            " in a job of one rank"));
    return start();
  }
  CommRequest Barrier() override { return start(); }
  void Fail(const std::string& why) override { failed_ = why; }
  void Abort(int exit_code) override { std::exit(exit_code); }

 private:
  CommRequest start() {
    ++started_;
    if (!failed_.empty()) return finished_request(aborted("this rank failed earlier: " + failed_));
    return CommRequest();
  }
  int64_t started_ = 0;
  std::string failed_;
};

}  // namespace

std::shared_ptr<Communicator> Communicator::SingleRank() { return std::make_shared<class SingleRank>(); }

Result<std::shared_ptr<Communicator>> Communicator::FromEnvironment(const CommOptions& options) {
  CommOptions o = options;
  if (const char* t = std::getenv("BERT_COMM_TIMEOUT"); t && *t) {
    char* end = nullptr;
    const double s = std::strtod(t, &end);
    if (*end || !(s > 0 && s <= 86400))
      return invalid_argument(std::string("BERT_COMM_TIMEOUT='") + t + "' must be seconds in (0, 86400]");
    o.timeout_s = s;
  }
  if (!(o.timeout_s > 0)) return invalid_argument("CommOptions.timeout_s must be positive");
  if (launcher_world_size() <= 1) return SingleRank();
  return make_mpi_communicator(o);
}

Result<std::shared_ptr<Communicator>> Communicator::ForCuda(std::shared_ptr<Communicator> host) {
  if (!host) return invalid_argument("Communicator::ForCuda: the host communicator is null");
  return make_nccl_communicator(std::move(host));
}

}  // namespace bert
