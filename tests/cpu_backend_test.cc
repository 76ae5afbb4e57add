// The CPU backend's fused element-wise ops against what they fuse: activation_from and dropout_from
// (a copy and the op in one pass, a block at a time) equal a copy followed by the op in place, bit for
// bit, at sizes around the block and thread splits; all_finite finds a NaN or Inf anywhere.
#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "engine/runtime/backend.h"
#include "tests/test_util.h"

namespace bert::runtime {
namespace {

using kernels::Activation;

// Sizes: empty, one, a block less one, a few blocks and a tail, many blocks (the parallel split).
constexpr int64_t kSizes[] = {0, 1, 8191, 5 * 8192 + 37, 100003};

std::unique_ptr<Backend> cpu() {
  auto b = make_cpu_backend();
  EXPECT_TRUE(b.ok()) << b.status().to_string();
  return b.ok() ? std::move(*b) : nullptr;
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), sizeof(float) * a.size()) == 0);
}

TEST(CpuBackend, ActivationFromEqualsACopyThenTheActivation) {
  auto be = cpu();
  ASSERT_NE(be, nullptr);
  for (int64_t n : kSizes)
    for (Activation act : {Activation::kGeluErf, Activation::kTanh, Activation::kRelu, Activation::kIdentity})
      for (int threads : {1, 2}) {
        omp_set_num_threads(threads);
        const std::vector<float> src = test::random_floats(static_cast<size_t>(n), 0x5eedu + uint32_t(n), -4.f, 4.f);
        std::vector<float> want = src, got(src.size(), -1.f);
        ASSERT_TRUE(be->activation({want.data(), n, act}).ok());
        ASSERT_TRUE(be->activation_from(src.data(), {got.data(), n, act}).ok());
        EXPECT_TRUE(same_bits(got, want)) << "n " << n << " activation " << int(act) << " threads " << threads;
        if (n > 1 && act != Activation::kIdentity) {  // the op ran (not only the copy), and src is untouched
          EXPECT_FALSE(same_bits(got, src)) << n;
          EXPECT_GT(test::max_abs(got.data(), got.size()), 0.f);
        }
        const std::vector<float> again = test::random_floats(static_cast<size_t>(n), 0x5eedu + uint32_t(n), -4.f, 4.f);
        EXPECT_TRUE(same_bits(src, again));
      }
}

TEST(CpuBackend, DropoutFromEqualsACopyThenTheDropout) {
  auto be = cpu();
  ASSERT_NE(be, nullptr);
  for (int64_t n : kSizes)
    for (float p : {0.f, 0.1f, 0.5f})
      for (int threads : {1, 2}) {
        omp_set_num_threads(threads);
        const std::vector<float> src = test::random_floats(static_cast<size_t>(n), 77u + uint32_t(n), 0.5f, 2.f);
        const kernels::DropoutArgs in_place{nullptr, n, p, 1234, uint64_t{3} << 40};
        std::vector<float> want = src, got(src.size(), -1.f);
        kernels::DropoutArgs a = in_place;
        a.x = want.data();
        ASSERT_TRUE(be->dropout(a).ok());
        a.x = got.data();
        ASSERT_TRUE(be->dropout_from(src.data(), a).ok());
        EXPECT_TRUE(same_bits(got, want)) << "n " << n << " p " << p << " threads " << threads;
        if (p == 0.f) {
          EXPECT_TRUE(same_bits(got, src)) << n;
        }
        if (p > 0.f && n > 1000) {  // some dropped, the kept ones scaled
          int64_t dropped = 0;
          for (float v : got) dropped += v == 0.f;
          EXPECT_GT(dropped, 0) << n;
          EXPECT_LT(dropped, n) << n;
        }
      }
}

TEST(CpuBackend, FusedOpsRefuseANullSource) {
  auto be = cpu();
  ASSERT_NE(be, nullptr);
  std::vector<float> y(16);
  EXPECT_FALSE(be->activation_from(nullptr, {y.data(), 16, Activation::kGeluErf}).ok());
  EXPECT_FALSE(be->dropout_from(nullptr, {y.data(), 16, 0.1f, 1, 0}).ok());
}

TEST(CpuBackend, AllFiniteFindsANaNOrAnInfAnywhere) {
  auto be = cpu();
  ASSERT_NE(be, nullptr);
  const int64_t n = 100003;
  std::vector<float> x = test::random_floats(static_cast<size_t>(n), 5, -1e30f, 1e30f);
  bool finite = false;
  ASSERT_TRUE(be->all_finite(x.data(), n, &finite).ok());
  EXPECT_TRUE(finite);
  for (float bad : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(),
                    -std::numeric_limits<float>::infinity()})
    for (int64_t at : {int64_t{0}, n / 2, n - 1}) {
      std::vector<float> y = x;
      y[static_cast<size_t>(at)] = bad;
      ASSERT_TRUE(be->all_finite(y.data(), n, &finite).ok());
      EXPECT_FALSE(finite) << bad << " at " << at;
    }
}

}  // namespace
}  // namespace bert::runtime
