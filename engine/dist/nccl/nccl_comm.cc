// The NCCL communicator (CUDA builds; NCCL from the CUDA toolkit): device buffers, one GPU per rank
// (the host communicator's local rank picks it), collectives on a side stream that first waits for
// the caller's stream (set_stream), so they overlap the computation queued after them. The unique id
// travels over the host communicator, which also carries each collective's announcement, so a
// mismatch or a failed rank is named there exactly as for host collectives. Wait() synchronises the
// collective's completion event. Compiled but never run on a GPU (docs/CUDA.md).
#include <cuda_runtime.h>
#include <nccl.h>

#include <vector>

#include "engine/dist/comm_impl.h"
#include "engine/runtime/cuda/cuda_backend.h"

namespace bert {
namespace {

ncclDataType_t nccl_type(CommType t) {
  switch (t) {
    case CommType::kF32: return ncclFloat32;
    case CommType::kF64: return ncclFloat64;
    case CommType::kI64: return ncclInt64;
  }
  return ncclFloat32;
}

class NcclCommunicator final : public Communicator {
 public:
  explicit NcclCommunicator(std::shared_ptr<Communicator> host) : host_(std::move(host)) {}
  ~NcclCommunicator() override {
    if (comm_) ncclCommDestroy(comm_);
    if (side_) cudaStreamDestroy(side_);
  }

  Status start() {
    int devices = 0;
    if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) return unsupported("no CUDA device for NCCL");
    if (cudaSetDevice(host_->local_rank() % devices) != cudaSuccess) return internal_error("cudaSetDevice failed");
    ncclUniqueId id{};
    if (host_->rank() == 0 && ncclGetUniqueId(&id) != ncclSuccess) return internal_error("ncclGetUniqueId failed");
    BERT_RETURN_IF_ERROR(host_->Broadcast(&id, sizeof id, 0).Wait());
    if (ncclResult_t r = ncclCommInitRank(&comm_, host_->world_size(), id, host_->rank()); r != ncclSuccess)
      return internal_error(std::string("ncclCommInitRank: ") + ncclGetErrorString(r));
    if (cudaStreamCreateWithFlags(&side_, cudaStreamNonBlocking) != cudaSuccess)
      return internal_error("cannot create the NCCL side stream");
    return Status::Ok();
  }

  int rank() const override { return host_->rank(); }
  int world_size() const override { return host_->world_size(); }
  int local_rank() const override { return host_->local_rank(); }
  const char* backend() const override { return "nccl"; }
  int64_t collectives() const override { return started_; }
  void set_stream(void* stream) override { caller_ = static_cast<cudaStream_t>(stream); }
  void Fail(const std::string& why) override { host_->Fail(why); }
  void Abort(int exit_code) override { host_->Abort(exit_code); }

  CommRequest AllReduce(void* data, int64_t count, CommType type, ReduceOp op) override {
    return run({CollectiveKind::kAllReduce, type, count, 0, op}, [&] {
      return ncclAllReduce(data, data, count, nccl_type(type), op == ReduceOp::kSum ? ncclSum : ncclAvg, comm_, side_);
    });
  }
  CommRequest ReduceScatter(const void* in, void* out, int64_t count, CommType type, ReduceOp op) override {
    return run({CollectiveKind::kReduceScatter, type, count, 0, op}, [&] {
      const size_t bytes = static_cast<size_t>(count) * comm_type_size(type);
      // NCCL's in-place form leaves rank r's block at block r; ours puts it first: move it there.
      void* to = in == out ? static_cast<char*>(out) + rank() * bytes : out;
      ncclResult_t r = ncclReduceScatter(in, to, count, nccl_type(type), op == ReduceOp::kSum ? ncclSum : ncclAvg,
                                         comm_, side_);
      if (r == ncclSuccess && to != out && cudaMemcpyAsync(out, to, bytes, cudaMemcpyDeviceToDevice, side_) != cudaSuccess)
        return ncclUnhandledCudaError;
      return r;
    });
  }
  CommRequest AllGather(const void* in, void* out, int64_t count, CommType type) override {
    return run({CollectiveKind::kAllGather, type, count, 0, ReduceOp::kSum},
               [&] { return ncclAllGather(in, out, count, nccl_type(type), comm_, side_); });
  }
  CommRequest Broadcast(void* data, int64_t bytes, int root) override {
    if (root < 0 || root >= world_size())
      return finished_request(invalid_argument("broadcast root " + std::to_string(root) + " is not a rank of " +
                                               std::to_string(world_size())));
    return run({CollectiveKind::kBroadcast, CommType::kF32, bytes, root, ReduceOp::kSum},
               [&] { return ncclBroadcast(data, data, bytes, ncclUint8, root, comm_, side_); });
  }
  CommRequest Barrier() override { return host_->Barrier(); }

 private:
  // Announces the collective over the host ranks, then queues it on the side stream after the caller's work.
  template <typename F>
  CommRequest run(const CollectiveInfo& c, F&& launch) {
    ++started_;
    int64_t mine[5] = {static_cast<int64_t>(c.kind), static_cast<int64_t>(c.type), c.count, c.root,
                       static_cast<int64_t>(c.op)};
    std::vector<int64_t> all(5 * static_cast<size_t>(world_size()));
    if (Status st = host_->AllGather(mine, all.data(), 5, CommType::kI64).Wait(); !st.ok()) return finished_request(st);
    for (int p = 0; p < world_size(); ++p) {
      CollectiveInfo o{static_cast<CollectiveKind>(all[5 * p]), static_cast<CommType>(all[5 * p + 1]), all[5 * p + 2],
                       static_cast<int32_t>(all[5 * p + 3]), static_cast<ReduceOp>(all[5 * p + 4])};
      if (std::string d = mismatch(c, o); !d.empty())
        return finished_request(aborted("the GPU ranks called different collectives: rank " + std::to_string(rank()) +
                                        " " + describe(c) + ", rank " + std::to_string(p) + " " + describe(o)));
    }
    cudaEvent_t ready = nullptr, done = nullptr;
    cudaEventCreateWithFlags(&ready, cudaEventDisableTiming);
    cudaEventCreateWithFlags(&done, cudaEventDisableTiming);
    cudaEventRecord(ready, caller_);
    cudaStreamWaitEvent(side_, ready, 0);
    const ncclResult_t r = launch();
    cudaEventRecord(done, side_);
    cudaEventDestroy(ready);
    if (r != ncclSuccess) {
      cudaEventDestroy(done);
      return finished_request(internal_error("NCCL " + describe(c) + ": " + ncclGetErrorString(r)));
    }
    auto st = std::make_shared<CommRequest::State>();
    st->complete = [done, c]() -> Status {
      const cudaError_t e = cudaEventSynchronize(done);
      cudaEventDestroy(done);
      if (e != cudaSuccess) return internal_error("NCCL " + describe(c) + ": " + cudaGetErrorString(e));
      return Status::Ok();
    };
    return CommRequest(st);
  }

  std::shared_ptr<Communicator> host_;
  ncclComm_t comm_ = nullptr;
  cudaStream_t side_ = nullptr, caller_ = nullptr;
  int64_t started_ = 0;
};

}  // namespace

namespace cuda_plugin {

Result<std::shared_ptr<Communicator>> make_nccl_communicator(std::shared_ptr<Communicator> host) {
  auto c = std::make_shared<NcclCommunicator>(std::move(host));
  BERT_RETURN_IF_ERROR(c->start());
  return std::shared_ptr<Communicator>(c);
}

}  // namespace cuda_plugin

}  // namespace bert
