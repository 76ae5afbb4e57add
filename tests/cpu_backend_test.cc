// The CPU backend's own ops (outside the kernel registry): all_finite, the trainer's gradient check,
// finds a NaN or an Inf anywhere and passes finite values of any size; linear_activation, training's
// forward activation, computes what the linear layers' epilogue does.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "engine/runtime/backend.h"
#include "kernels/activation.h"
#include "kernels/gemm.h"
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

// GELU (erf) is the epilogue's fast form (its scalar reference, to a few ulp), the others the activation
// kernel; at awkward sizes, every element; bad arguments are an error.
TEST(CpuBackend, LinearActivationIsTheEpiloguesActivation) {
  auto be = cpu();
  ASSERT_NE(be, nullptr);
  for (auto [rows, cols] : {std::pair<int64_t, int64_t>{1, 1}, {3, 17}, {37, 301}}) {
    const size_t n = static_cast<size_t>(rows * cols);
    const std::vector<float> x = test::random_floats(n, 7, -6.f, 6.f);
    std::vector<float> got = x, want = x;
    ASSERT_TRUE(be->linear_activation(got.data(), got.data(), rows, cols, kernels::Activation::kGeluErf).ok());
    kernels::gelu_erf_fast_f32_ref(want.data(), want.data(), static_cast<int64_t>(n));
    for (size_t i = 0; i < n; ++i) EXPECT_NEAR(got[i], want[i], 4e-7f * std::max(1.f, std::fabs(want[i]))) << i;
    EXPECT_GT(test::max_abs_diff(got.data(), x.data(), n), 0.1);
    // And within the fast form's bound of the accurate GELU.
    std::vector<float> accurate = x;
    kernels::activation_f32_ref({accurate.data(), static_cast<int64_t>(n), kernels::Activation::kGeluErf});
    for (size_t i = 0; i < n; ++i) EXPECT_NEAR(got[i], accurate[i], 6e-7f * std::max(1.f, std::fabs(x[i]))) << i;
    got = x, want = x;
    ASSERT_TRUE(be->linear_activation(got.data(), got.data(), rows, cols, kernels::Activation::kTanh).ok());
    kernels::activation_f32_ref({want.data(), static_cast<int64_t>(n), kernels::Activation::kTanh});
    for (size_t i = 0; i < n; ++i) EXPECT_NEAR(got[i], want[i], 2e-6f) << i;
    // Out of place: x kept, y = the in-place result's bits.
    for (auto act : {kernels::Activation::kGeluErf, kernels::Activation::kTanh}) {
      std::vector<float> in_place = x, out(n, -3.f);
      ASSERT_TRUE(be->linear_activation(in_place.data(), in_place.data(), rows, cols, act).ok());
      ASSERT_TRUE(be->linear_activation(x.data(), out.data(), rows, cols, act).ok());
      EXPECT_EQ(std::memcmp(out.data(), in_place.data(), sizeof(float) * n), 0) << rows << "x" << cols;
    }
  }
  std::vector<float> buf(16, 1.f);
  EXPECT_FALSE(be->linear_activation(buf.data(), buf.data() + 1, 3, 5, kernels::Activation::kTanh).ok());
  EXPECT_FALSE(be->linear_activation(nullptr, nullptr, 2, 3, kernels::Activation::kGeluErf).ok());
}

}  // namespace
}  // namespace bert::runtime
