// The MPI communicator (Open MPI from Debian): host buffers, one communication thread that owns every
// MPI call (initialisation, the collectives in call order, finalisation), so collectives overlap the
// caller's computation.
//
// Each collective first exchanges a small announcement with every other rank (point to point, polled
// against the timeout): what each rank is calling, or that it failed. Only when all agree does data
// move. A rank that does not arrive is named and the job is aborted (MPI_Abort), so a hung or dead
// rank never hangs the others; a mismatch or a reported failure breaks the communicator with an error
// naming the rank, which the tools print before exiting. The all-reduce is a reduce-scatter (each
// element summed once, by its owner) followed by an all-gather, so every rank holds the same bits.
//
// Test hook: BERT_COMM_FAULT="rank=R,at=K,do=exit|hang|crash|fail" makes rank R exit, hang, crash or
// report a failure when it starts its K-th collective (1-based).
#include <mpi.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <functional>
#include <future>
#include <thread>
#include <vector>

#include "engine/dist/comm_impl.h"

namespace bert {
namespace {

constexpr int kAnnounceTag = 17;
constexpr int64_t kMaxChunk = int64_t(1) << 28;  // elements per MPI call (MPI counts are int)

// What a rank announces before each collective (sent as bytes).
struct Announcement {
  int64_t seq = 0;
  int32_t kind = 0, type = 0;
  int64_t count = 0;
  int32_t root = 0, op = 0;
  char why[200] = {};  // kFailed: the reason
};

CollectiveInfo info_of(const Announcement& a) {
  CollectiveInfo c;
  c.kind = static_cast<CollectiveKind>(a.kind), c.type = static_cast<CommType>(a.type);
  c.count = a.count, c.root = a.root, c.op = static_cast<ReduceOp>(a.op);
  return c;
}

MPI_Datatype mpi_type(CommType t) {
  switch (t) {
    case CommType::kF32: return MPI_FLOAT;
    case CommType::kF64: return MPI_DOUBLE;
    case CommType::kI64: return MPI_INT64_T;
  }
  return MPI_BYTE;
}

// The collective a signal interrupted, for the message the launcher's SIGTERM leaves behind.
char g_current[256] = "bert: rank ? was not in a collective\n";
std::atomic<size_t> g_current_len{0};

void on_terminate(int sig) {
  const size_t n = g_current_len.load();
  if (n) (void)!write(STDERR_FILENO, g_current, n);
  signal(sig, SIG_DFL);
  raise(sig);
}

struct Fault {
  int rank = -1;
  int64_t at = 0;
  std::string action;
};

Fault parse_fault() {
  Fault f;
  const char* v = std::getenv("BERT_COMM_FAULT");
  if (!v) return f;
  std::string s = v;
  size_t pos = 0;
  while (pos < s.size()) {
    size_t end = s.find(',', pos);
    if (end == std::string::npos) end = s.size();
    const std::string kv = s.substr(pos, end - pos);
    const size_t eq = kv.find('=');
    if (eq != std::string::npos) {
      const std::string k = kv.substr(0, eq), val = kv.substr(eq + 1);
      if (k == "rank") f.rank = std::atoi(val.c_str());
      else if (k == "at") f.at = std::atoll(val.c_str());
      else if (k == "do") f.action = val;
    }
    pos = end + 1;
  }
  return f;
}

class MpiCommunicator final : public Communicator {
 public:
  explicit MpiCommunicator(const CommOptions& o) : options_(o), fault_(parse_fault()) {}
  ~MpiCommunicator() override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stopping_ = true;
    }
    cv_.notify_all();
    if (worker_.joinable()) worker_.join();
  }

  Status start() {
    std::promise<Status> ready;
    auto f = ready.get_future();
    worker_ = std::thread([this, &ready] { run(ready); });
    return f.get();
  }

  int rank() const override { return rank_; }
  int world_size() const override { return size_; }
  int local_rank() const override { return local_rank_; }
  const char* backend() const override { return "mpi"; }
  int64_t collectives() const override { return started_.load(); }

  CommRequest AllReduce(void* data, int64_t count, CommType type, ReduceOp op) override {
    Op o;
    o.info = {CollectiveKind::kAllReduce, type, count, 0, op};
    o.out = data;
    return enqueue(std::move(o));
  }
  CommRequest ReduceScatter(const void* in, void* out, int64_t count, CommType type, ReduceOp op) override {
    Op o;
    o.info = {CollectiveKind::kReduceScatter, type, count, 0, op};
    o.in = in, o.out = out;
    return enqueue(std::move(o));
  }
  CommRequest AllGather(const void* in, void* out, int64_t count, CommType type) override {
    Op o;
    o.info = {CollectiveKind::kAllGather, type, count, 0, ReduceOp::kSum};
    o.in = in, o.out = out;
    return enqueue(std::move(o));
  }
  CommRequest Broadcast(void* data, int64_t bytes, int root) override {
    if (root < 0 || root >= size_)
      return finished_request(invalid_argument("broadcast root " + std::to_string(root) + " is not a rank of " +
                                               std::to_string(size_)));
    Op o;
    o.info = {CollectiveKind::kBroadcast, CommType::kF32, bytes, root, ReduceOp::kSum};
    o.out = data;
    return enqueue(std::move(o));
  }
  CommRequest Barrier() override {
    Op o;
    o.info = {CollectiveKind::kBarrier, CommType::kF32, 0, 0, ReduceOp::kSum};
    return enqueue(std::move(o));
  }
  void Fail(const std::string& why) override {
    Op o;
    o.info = {CollectiveKind::kFailed, CommType::kF32, 0, 0, ReduceOp::kSum};
    o.why = why;
    (void)enqueue(std::move(o)).Wait();  // the others have heard (or the job was aborted)
  }
  void Abort(int exit_code) override {
    std::fflush(stdout), std::fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, exit_code);
    std::_Exit(exit_code);
  }

 private:
  struct Op {
    CollectiveInfo info;
    const void* in = nullptr;
    void* out = nullptr;
    std::string why;
    int64_t seq = 0;
    std::shared_ptr<CommRequest::State> state = std::make_shared<CommRequest::State>();
  };

  CommRequest enqueue(Op o) {
    CommRequest r(o.state);
    {
      std::lock_guard<std::mutex> lock(mu_);
      o.seq = ++started_;
      if (!broken_.ok()) {
        o.state->finish(broken_);
        return r;
      }
      queue_.push_back(std::move(o));
    }
    cv_.notify_all();
    return r;
  }

  std::string where(const Op& o) const {
    return "collective #" + std::to_string(o.seq) + " (" + describe(o.info) + ")";
  }

  void run(std::promise<Status>& ready) {
    int provided = 0;
    setenv("OMPI_MCA_mpi_yield_when_idle", "1", 0);  // waiting ranks give the CPU to computing threads
    if (MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS) {
      ready.set_value(internal_error("MPI_Init_thread failed"));
      return;
    }
    MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
    MPI_Comm_size(MPI_COMM_WORLD, &size_);
    MPI_Comm_dup(MPI_COMM_WORLD, &announce_);
    MPI_Comm_dup(MPI_COMM_WORLD, &data_);
    if (const char* l = std::getenv("OMPI_COMM_WORLD_LOCAL_RANK")) local_rank_ = std::atoi(l);
    else local_rank_ = rank_;
    set_current("bert: rank " + std::to_string(rank_) + " was stopped outside any collective\n");
    signal(SIGTERM, on_terminate);
    ready.set_value(Status::Ok());
    for (;;) {
      Op o;
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
        if (queue_.empty()) break;
        o = std::move(queue_.front());
        queue_.pop_front();
      }
      Status st = broken() ? broken_copy() : execute(o);
      if (!st.ok()) {
        std::lock_guard<std::mutex> lock(mu_);
        if (broken_.ok()) broken_ = st;
      }
      o.state->finish(st);
    }
    if (broken()) return;  // the job failed: the launcher ends it (finalising would wait for the others)
    MPI_Comm_free(&announce_);
    MPI_Comm_free(&data_);
    MPI_Finalize();
  }

  bool broken() {
    std::lock_guard<std::mutex> lock(mu_);
    return !broken_.ok();
  }
  Status broken_copy() {
    std::lock_guard<std::mutex> lock(mu_);
    return broken_;
  }

  void set_current(const std::string& s) {
    g_current_len = 0;
    const size_t n = std::min(s.size(), sizeof(g_current) - 1);
    std::memcpy(g_current, s.data(), n);
    g_current_len = n;
  }

  void inject_fault(const Op& o) {
    if (fault_.rank != rank_ || fault_.at != o.seq) return;
    std::fprintf(stderr, "bert: BERT_COMM_FAULT: rank %d will %s at %s\n", rank_, fault_.action.c_str(),
                 where(o).c_str());
    std::fflush(stderr);
    if (fault_.action == "exit") std::_Exit(3);
    if (fault_.action == "crash") raise(SIGSEGV);
    if (fault_.action == "hang")
      for (;;) std::this_thread::sleep_for(std::chrono::seconds(1));
  }

  // Polls `reqs` until all complete or the timeout passes; false on timeout (requests left pending).
  bool wait_all(std::vector<MPI_Request>& reqs) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(options_.timeout_s);
    int spins = 0;
    for (;;) {
      int flag = 0;
      MPI_Testall(static_cast<int>(reqs.size()), reqs.data(), &flag, MPI_STATUSES_IGNORE);
      if (flag) return true;
      if (std::chrono::steady_clock::now() > deadline) return false;
      if (++spins > 64) std::this_thread::sleep_for(std::chrono::microseconds(spins > 2000 ? 1000 : 20));
    }
  }

  // Every rank tells every other what it is about to do; all must agree.
  Status announce(const Op& o) {
    Announcement mine;
    mine.seq = o.seq, mine.kind = static_cast<int32_t>(o.info.kind), mine.type = static_cast<int32_t>(o.info.type);
    mine.count = o.info.count, mine.root = o.info.root, mine.op = static_cast<int32_t>(o.info.op);
    std::snprintf(mine.why, sizeof mine.why, "%s", o.why.c_str());
    std::vector<Announcement> theirs(size_);
    std::vector<MPI_Request> reqs;
    std::vector<int> peer_of;
    for (int p = 0; p < size_; ++p) {
      if (p == rank_) continue;
      reqs.emplace_back();
      MPI_Irecv(&theirs[p], sizeof(Announcement), MPI_BYTE, p, kAnnounceTag, announce_, &reqs.back());
      peer_of.push_back(p);
    }
    for (int p = 0; p < size_; ++p) {
      if (p == rank_) continue;
      reqs.emplace_back();
      MPI_Isend(&mine, sizeof(Announcement), MPI_BYTE, p, kAnnounceTag, announce_, &reqs.back());
      peer_of.push_back(-1);
    }
    if (!wait_all(reqs)) {
      std::string missing, arrived = std::to_string(rank_);
      for (size_t i = 0; i < reqs.size(); ++i) {
        if (peer_of[i] < 0) continue;
        int flag = 0;
        MPI_Test(&reqs[i], &flag, MPI_STATUS_IGNORE);
        std::string& list = flag ? arrived : missing;
        if (!list.empty()) list += ',';
        list += std::to_string(peer_of[i]);
      }
      std::fprintf(stderr,
                   "bert: rank %d: %s: rank(s) %s did not reach it within %.0f s (ranks %s did); a rank hung, "
                   "crashed or is still computing: aborting the job (BERT_COMM_TIMEOUT sets the timeout)\n",
                   rank_, where(o).c_str(), missing.c_str(), options_.timeout_s, arrived.c_str());
      Abort(1);
    }
    for (int p = 0; p < size_; ++p) {
      if (p == rank_) continue;
      const CollectiveInfo c = info_of(theirs[p]);
      if (c.kind == CollectiveKind::kFailed) {
        theirs[p].why[sizeof(theirs[p].why) - 1] = 0;
        return aborted("rank " + std::to_string(p) + " failed: " + theirs[p].why + " (at its collective #" +
                       std::to_string(theirs[p].seq) + "; this rank " + std::to_string(rank_) + " was at " +
                       where(o) + ")");
      }
      if (o.info.kind == CollectiveKind::kFailed) continue;
      if (std::string d = mismatch(o.info, c); !d.empty() || theirs[p].seq != o.seq)
        return aborted("the ranks called different collectives: rank " + std::to_string(rank_) + " " + where(o) +
                       ", rank " + std::to_string(p) + " collective #" + std::to_string(theirs[p].seq) + " (" +
                       describe(c) + "): different model files, configs or arguments?");
    }
    if (o.info.kind == CollectiveKind::kFailed) return aborted("this rank failed: " + o.why);
    return Status::Ok();
  }

  Status execute(Op& o) {
    set_current("bert: rank " + std::to_string(rank_) + " was stopped by the launcher in " + where(o) +
                " (another rank exited or crashed)\n");
    inject_fault(o);
    if (fault_.rank == rank_ && fault_.at == o.seq && fault_.action == "fail")
      o.info.kind = CollectiveKind::kFailed, o.why = "BERT_COMM_FAULT injected failure";
    Status st = announce(o);
    if (st.ok()) st = transfer(o);
    set_current("bert: rank " + std::to_string(rank_) + " was stopped by the launcher after " + where(o) +
                ", outside any collective\n");
    return st;
  }

  // The data movement, once every rank has agreed on the collective.
  Status transfer(const Op& o) {
    const CollectiveInfo& c = o.info;
    const size_t es = comm_type_size(c.type);
    const MPI_Datatype t = mpi_type(c.type);
    int rc = MPI_SUCCESS;
    switch (c.kind) {
      case CollectiveKind::kAllReduce:
        for (int64_t done = 0; done < c.count && rc == MPI_SUCCESS; done += kMaxChunk)
          rc = allreduce(static_cast<char*>(o.out) + done * es, std::min(kMaxChunk, c.count - done), c.type, c.op);
        break;
      case CollectiveKind::kReduceScatter: {
        if (c.count > kMaxChunk) return unsupported("reduce-scatter of more than 2^28 elements per rank");
        rc = MPI_Reduce_scatter_block(o.in == o.out ? MPI_IN_PLACE : o.in, o.out, static_cast<int>(c.count), t,
                                      MPI_SUM, data_);
        if (rc == MPI_SUCCESS && c.op == ReduceOp::kAverage) scale(o.out, c.count, c.type);
        break;
      }
      case CollectiveKind::kAllGather:
        if (c.count > kMaxChunk) return unsupported("all-gather of more than 2^28 elements per rank");
        rc = MPI_Allgather(o.in == static_cast<char*>(o.out) + rank_ * c.count * es ? MPI_IN_PLACE : o.in,
                           static_cast<int>(c.count), t, o.out, static_cast<int>(c.count), t, data_);
        break;
      case CollectiveKind::kBroadcast:
        for (int64_t done = 0; done < c.count && rc == MPI_SUCCESS; done += kMaxChunk)
          rc = MPI_Bcast(static_cast<char*>(o.out) + done, static_cast<int>(std::min(kMaxChunk, c.count - done)),
                         MPI_BYTE, c.root, data_);
        break;
      case CollectiveKind::kBarrier:
      case CollectiveKind::kFailed:
        break;  // the announcement was the barrier
    }
    if (rc != MPI_SUCCESS) return internal_error("MPI error " + std::to_string(rc) + " in " + where(o));
    return Status::Ok();
  }

  void scale(void* data, int64_t n, CommType t) {
    if (t == CommType::kF32) {
      float* x = static_cast<float*>(data);
      for (int64_t i = 0; i < n; ++i) x[i] /= static_cast<float>(size_);
    } else if (t == CommType::kF64) {
      double* x = static_cast<double*>(data);
      for (int64_t i = 0; i < n; ++i) x[i] /= size_;
    } else {
      int64_t* x = static_cast<int64_t*>(data);
      for (int64_t i = 0; i < n; ++i) x[i] /= size_;
    }
  }

  // Reduce-scatter into the owner's block, then all-gather: each element is reduced once.
  int allreduce(char* data, int64_t n, CommType type, ReduceOp op) {
    const size_t es = comm_type_size(type);
    const MPI_Datatype t = mpi_type(type);
    std::vector<int> counts(size_), displs(size_);
    for (int r = 0, off = 0; r < size_; ++r) {
      counts[r] = static_cast<int>(n / size_ + (r < n % size_ ? 1 : 0));
      displs[r] = off, off += counts[r];
    }
    scratch_.resize(static_cast<size_t>(counts[rank_]) * es + 1);
    int rc = MPI_Reduce_scatter(data, scratch_.data(), counts.data(), t, MPI_SUM, data_);
    if (rc != MPI_SUCCESS) return rc;
    if (op == ReduceOp::kAverage) scale(scratch_.data(), counts[rank_], type);
    return MPI_Allgatherv(scratch_.data(), counts[rank_], t, data, counts.data(), displs.data(), t, data_);
  }

  CommOptions options_;
  Fault fault_;
  int rank_ = 0, size_ = 1, local_rank_ = 0;
  MPI_Comm announce_ = MPI_COMM_NULL, data_ = MPI_COMM_NULL;
  std::vector<char> scratch_;
  std::thread worker_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Op> queue_;
  bool stopping_ = false;
  Status broken_;
  std::atomic<int64_t> started_{0};
};

std::mutex g_instance_mu;
std::shared_ptr<MpiCommunicator> g_instance;  // MPI initialises once per process

}  // namespace

Result<std::shared_ptr<Communicator>> make_mpi_communicator(const CommOptions& options) {
  std::lock_guard<std::mutex> lock(g_instance_mu);
  if (!g_instance) {
    auto c = std::make_shared<MpiCommunicator>(options);
    BERT_RETURN_IF_ERROR(c->start());
    g_instance = c;
  }
  return std::shared_ptr<Communicator>(g_instance);
}

}  // namespace bert
