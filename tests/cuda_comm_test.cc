// The NCCL communicator on one rank (one GPU allows no more): every collective on device buffers
// against the expected values, and the in-place reduce-scatter. Skips without a GPU; the multi-GPU
// case needs a machine with several GPUs and `mpirun -np N` (docs/DISTRIBUTED.md).
#include <gtest/gtest.h>

#include "bert/comm.h"
#include "tests/cuda_test_util.h"

namespace bert {
namespace {

namespace kc = kernels::cuda;

std::vector<float> download(const test::DeviceBuffer<float>& d) {
  std::vector<float> h(d.n);
  EXPECT_TRUE(kc::copy_to_host(h.data(), d.p, d.n * sizeof(float)));
  return h;
}

TEST(NcclComm, OneRankCollectivesOnDeviceBuffers) {
  BERT_REQUIRE_GPU();
  auto nccl = Communicator::ForCuda(Communicator::SingleRank());
  ASSERT_TRUE(nccl.ok()) << nccl.status().to_string();
  Communicator& c = **nccl;
  EXPECT_STREQ(c.backend(), "nccl");
  std::vector<float> host(1000);
  for (size_t i = 0; i < host.size(); ++i) host[i] = 0.25f + float(i % 37);
  test::DeviceBuffer<float> x(host), y(host.size());
  ASSERT_TRUE(c.AllReduce(x.p, 1000, CommType::kF32, ReduceOp::kSum).Wait().ok());
  EXPECT_EQ(download(x), host);
  ASSERT_TRUE(c.AllReduce(x.p, 1000, CommType::kF32, ReduceOp::kAverage).Wait().ok());
  EXPECT_EQ(download(x), host);
  ASSERT_TRUE(c.AllGather(x.p, y.p, 1000, CommType::kF32).Wait().ok());
  EXPECT_EQ(download(y), host);
  ASSERT_TRUE(c.ReduceScatter(x.p, x.p, 1000, CommType::kF32, ReduceOp::kSum).Wait().ok());  // in place
  EXPECT_EQ(download(x), host);
  ASSERT_TRUE(c.Broadcast(y.p, 4000, 0).Wait().ok());
  EXPECT_EQ(download(y), host);
  EXPECT_FALSE(c.Broadcast(y.p, 4000, 1).Wait().ok()) << "rank 1 does not exist";
}

TEST(NcclComm, WithoutAGpuTheErrorSaysSo) {
  if (kc::device_count() > 0) GTEST_SKIP() << "a GPU is present";
  auto nccl = Communicator::ForCuda(Communicator::SingleRank());
  ASSERT_FALSE(nccl.ok());
  EXPECT_NE(nccl.status().message().find("no CUDA device"), std::string::npos) << nccl.status().to_string();
}

}  // namespace
}  // namespace bert
