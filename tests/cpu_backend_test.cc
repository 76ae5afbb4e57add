// The CPU backend's own ops (outside the kernel registry): all_finite, the trainer's gradient check,
// finds a NaN or an Inf anywhere and passes finite values of any size.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <vector>

#include "engine/runtime/backend.h"
#include "tests/test_util.h"

namespace bert::runtime {
namespace {

std::unique_ptr<Backend> cpu() {
  auto b = make_cpu_backend();
  EXPECT_TRUE(b.ok()) << b.status().to_string();
  return b.ok() ? std::move(*b) : nullptr;
}

TEST(CpuBackend, AllFiniteFindsANaNOrAnInfAnywhere) {
  auto be = cpu();
  ASSERT_NE(be, nullptr);
  const int64_t n = 100003;
  std::vector<float> x = test::random_floats(static_cast<size_t>(n), 5, -1e30f, 1e30f);
  bool finite = false;
  ASSERT_TRUE(be->all_finite(x.data(), 0, &finite).ok());
  EXPECT_TRUE(finite);
  for (int64_t m : {int64_t{1}, int64_t{8191}, n}) {
    finite = false;
    ASSERT_TRUE(be->all_finite(x.data(), m, &finite).ok());
    EXPECT_TRUE(finite) << m;
  }
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
