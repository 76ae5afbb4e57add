// The communicator's collectives against plain expected values, at awkward sizes, with rank-dependent
// non-zero inputs. Run alone (one rank) by ctest, and under `mpirun -np 2` and `-np 3`
// (tests/dist/ranks_test.sh); the results must also be bit-identical on every rank.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "bert/comm.h"

namespace {

std::shared_ptr<bert::Communicator> comm() {
  static std::shared_ptr<bert::Communicator> c = [] {
    auto r = bert::Communicator::FromEnvironment();
    if (!r.ok()) {
      std::fprintf(stderr, "%s\n", r.status().to_string().c_str());
      std::abort();
    }
    return *r;
  }();
  return c;
}

float value(int rank, int64_t i) { return 0.5f + 0.01f * float((i * 7 + rank * 13) % 101) + float(rank); }

// Every rank holds the same bytes: compare each rank's checksum with rank 0's.
void expect_same_on_every_rank(const std::vector<float>& x) {
  uint64_t h = 1469598103934665603ull;
  for (float f : x) {
    uint32_t u;
    std::memcpy(&u, &f, 4);
    h = (h ^ u) * 1099511628211ull;
  }
  const int n = comm()->world_size();
  std::vector<int64_t> all(n);
  const int64_t mine = static_cast<int64_t>(h >> 1);
  ASSERT_TRUE(comm()->AllGather(&mine, all.data(), 1, bert::CommType::kI64).Wait().ok());
  for (int r = 0; r < n; ++r) EXPECT_EQ(all[r], all[0]) << "rank " << r << " holds different bits than rank 0";
}

TEST(Comm, RankAndSize) {
  EXPECT_GE(comm()->world_size(), 1);
  EXPECT_GE(comm()->rank(), 0);
  EXPECT_LT(comm()->rank(), comm()->world_size());
  EXPECT_STREQ(comm()->backend(), comm()->world_size() == 1 ? "single" : "mpi");
}

TEST(Comm, AllReduceSumAndAverageAtAwkwardSizes) {
  const int n = comm()->world_size(), me = comm()->rank();
  for (int64_t count : {1, 3, 17, 1000, 65537}) {
    std::vector<float> x(count), y(count);
    for (int64_t i = 0; i < count; ++i) x[i] = y[i] = value(me, i);
    ASSERT_TRUE(comm()->AllReduceSync(x.data(), count, bert::ReduceOp::kSum).ok());
    ASSERT_TRUE(comm()->AllReduceSync(y.data(), count, bert::ReduceOp::kAverage).ok());
    for (int64_t i = 0; i < count; ++i) {
      double want = 0;
      for (int r = 0; r < n; ++r) want += value(r, i);
      ASSERT_NEAR(x[i], want, 1e-5 * std::abs(want)) << "count " << count << " element " << i;
      ASSERT_NEAR(y[i], want / n, 1e-5 * std::abs(want)) << "count " << count << " element " << i;
      ASSERT_NE(x[i], 0.f);
    }
    expect_same_on_every_rank(x);
  }
}

TEST(Comm, AllReduceDoublesAndIntegers) {
  const int n = comm()->world_size(), me = comm()->rank();
  std::vector<double> d = {1.0 + me, 1e-3 * (me + 1), -2.5};
  std::vector<int64_t> k = {int64_t(1) << 40, me, 7};
  ASSERT_TRUE(comm()->AllReduceSync(d.data(), 3).ok());
  ASSERT_TRUE(comm()->AllReduceSync(k.data(), 3).ok());
  EXPECT_DOUBLE_EQ(d[0], n + n * (n - 1) / 2.0);
  EXPECT_NEAR(d[1], 1e-3 * n * (n + 1) / 2.0, 1e-15);
  EXPECT_DOUBLE_EQ(d[2], -2.5 * n);
  EXPECT_EQ(k[0], (int64_t(1) << 40) * n);
  EXPECT_EQ(k[1], int64_t(n) * (n - 1) / 2);
  EXPECT_EQ(k[2], 7 * n);
}

TEST(Comm, ReduceScatterAndAllGather) {
  const int n = comm()->world_size(), me = comm()->rank();
  const int64_t count = 37;
  std::vector<float> in(n * count), out(count, -1.f), gathered(n * count, -1.f);
  for (int64_t i = 0; i < n * count; ++i) in[i] = value(me, i);
  ASSERT_TRUE(comm()->ReduceScatter(in.data(), out.data(), count, bert::CommType::kF32, bert::ReduceOp::kSum)
                  .Wait()
                  .ok());
  for (int64_t i = 0; i < count; ++i) {
    double want = 0;
    for (int r = 0; r < n; ++r) want += value(r, me * count + i);
    ASSERT_NEAR(out[i], want, 1e-5 * want) << "element " << i;
  }
  ASSERT_TRUE(comm()->AllGather(out.data(), gathered.data(), count, bert::CommType::kF32).Wait().ok());
  for (int r = 0; r < n; ++r)
    for (int64_t i = 0; i < count; ++i) {
      double want = 0;
      for (int q = 0; q < n; ++q) want += value(q, r * count + i);
      ASSERT_NEAR(gathered[r * count + i], want, 1e-5 * want) << "block " << r << " element " << i;
    }
}

TEST(Comm, BroadcastFromEveryRoot) {
  const int n = comm()->world_size(), me = comm()->rank();
  for (int root = 0; root < n; ++root) {
    std::vector<char> bytes(1001);
    for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<char>(me == root ? (i * 31 + root) : 0);
    ASSERT_TRUE(comm()->Broadcast(bytes.data(), 1001, root).Wait().ok());
    for (size_t i = 0; i < bytes.size(); ++i) ASSERT_EQ(bytes[i], static_cast<char>(i * 31 + root)) << i;
  }
  EXPECT_FALSE(comm()->Broadcast(nullptr, 0, n).Wait().ok());  // not a rank: refused before anything moves
}

TEST(Comm, AsyncRequestsCompleteInOrder) {
  const int n = comm()->world_size();
  std::vector<std::vector<float>> bufs(8, std::vector<float>(5000, 1.f));
  std::vector<bert::CommRequest> reqs;
  for (auto& b : bufs) reqs.push_back(comm()->AllReduce(b.data(), 5000, bert::CommType::kF32, bert::ReduceOp::kSum));
  for (auto& r : reqs) ASSERT_TRUE(r.Wait().ok());
  for (auto& b : bufs) EXPECT_EQ(b[4999], float(n));
  ASSERT_TRUE(comm()->Barrier().Wait().ok());
  EXPECT_GT(comm()->collectives(), 8);
}

// Run only when asked (tests/dist/ranks_test.sh): the ranks call different collectives.
TEST(CommMismatch, DifferentCountsAreNamed) {
  if (!std::getenv("BERT_TEST_MISMATCH")) GTEST_SKIP() << "run by tests/dist/ranks_test.sh";
  std::vector<float> x(20, 1.f);
  const bert::Status st = comm()->AllReduceSync(x.data(), 10 + comm()->rank());
  ASSERT_FALSE(st.ok());
  std::fprintf(stderr, "rank %d: %s\n", comm()->rank(), st.to_string().c_str());
  EXPECT_NE(st.message().find("different collectives"), std::string::npos) << st.to_string();
  EXPECT_FALSE(comm()->Barrier().Wait().ok()) << "a broken communicator stays broken";
}

// A loop of collectives that BERT_COMM_FAULT interrupts (tests/dist/ranks_test.sh).
TEST(CommFault, LoopOfCollectives) {
  if (!std::getenv("BERT_COMM_FAULT")) GTEST_SKIP() << "run by tests/dist/ranks_test.sh";
  std::vector<float> x(100, 1.f);
  for (int i = 0; i < 50; ++i) {
    const bert::Status st = comm()->AllReduceSync(x.data(), 100);
    if (!st.ok()) {
      std::fprintf(stderr, "rank %d: %s\n", comm()->rank(), st.to_string().c_str());
      std::exit(1);
    }
  }
}

}  // namespace
