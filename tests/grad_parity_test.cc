// Gradient parity with HuggingFace transformers: for every fixture that has a loss, `bert_run --grads`
// (from model.safetensors, and from pytorch_model.bin through convert_weights) must give the golden
// loss within 1e-5 relative and every golden `grad.<HF name>` within relative L2 1e-4 (eval mode).
// Some gradients are zero in exact arithmetic, and transformers' float64 gives ~1e-17 for them: key
// biases (softmax ignores a constant added to a row of scores), and for QA the qa_outputs bias and
// the last LayerNorm's bias (a softmax over positions). A relative error against ~1e-17 means
// nothing, so those are held to an absolute bound: norm <= 1e-6 x the median gradient norm.
// CUDA builds run every fixture a second time with `--device cuda` (the same fp32 tolerances); those
// cases skip with a message without a GPU.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <tuple>

#include "tests/test_util.h"
#include "weights/safetensors.h"
#ifdef BERT_HAVE_CUDA
#include "kernels/cuda/cuda_kernels.h"
#endif

namespace bert {
namespace {

const std::vector<std::string> kFixturesWithLoss = {
    "bert-pretraining", "bert-mlm",          "bert-seqcls",           "bert-qa",
    "bert-tokcls",      "roberta-seqcls",    "distilbert-seqcls",     "electra-seqcls",
    "electra-discriminator", "albert-pretraining", "squeezebert-seqcls"};

// (fixture, device): "cpu", or "cuda" in CUDA builds.
using Case = std::tuple<std::string, std::string>;
class GradParity : public ::testing::TestWithParam<Case> {};

std::vector<std::string> devices() {
#ifdef BERT_HAVE_CUDA
  return {"cpu", "cuda"};
#else
  return {"cpu"};
#endif
}

TEST_P(GradParity, LossAndEveryGradientMatchTransformers) {
  const auto& [fixture, device] = GetParam();
#ifdef BERT_HAVE_CUDA
  if (device == "cuda" && kernels::cuda::device_count() == 0) GTEST_SKIP() << "no CUDA device: this GPU test was not run";
#endif
  BERT_REQUIRE_SHARED(shared);
  const auto dir = shared / "fixtures" / fixture;
  const std::string golden_path = (dir / "golden.safetensors").string();
  auto golden = SafetensorsFile::Open(golden_path);
  ASSERT_TRUE(golden.ok()) << golden.status().to_string();
  test::TempDir tmp;
  const auto bin_model = tmp / "from_bin.bert";
  auto conv = test::run_command((test::tools_dir() / "convert_weights").string() + " " +
                                (dir / "pytorch_model.bin").string() + " " + bin_model.string());
  ASSERT_EQ(conv.exit_code, 0) << conv.output;
  for (const std::string& model : {dir.string(), bin_model.string()}) {
    SCOPED_TRACE(model);
    const auto out = tmp / "grads.safetensors";
    auto r = test::run_command((test::tools_dir() / "bert_run").string() + " --model " + model + " --inputs " +
                               golden_path + " --outputs " + out.string() + " --grads --threads 2 --device " + device);
    ASSERT_EQ(r.exit_code, 0) << r.output;
    auto produced = SafetensorsFile::Open(out.string());
    ASSERT_TRUE(produced.ok()) << produced.status().to_string();

    const Tensor* want_loss = golden->find("loss");
    const Tensor* got_loss = produced->find("loss");
    ASSERT_TRUE(want_loss && got_loss);
    const double wl = want_loss->as<float>()[0], gl = got_loss->as<float>()[0];
    EXPECT_LE(std::fabs(gl - wl), 1e-5 * std::fabs(wl)) << "loss " << gl << " vs " << wl;

    auto norm = [](const Tensor& t) {
      double s = 0;
      for (int64_t i = 0; i < t.numel(); ++i) s += double(t.as<float>()[i]) * t.as<float>()[i];
      return std::sqrt(s);
    };
    std::vector<double> norms;
    for (const auto& [name, want] : golden->tensors())
      if (name.rfind("grad.", 0) == 0) norms.push_back(norm(want));
    ASSERT_FALSE(norms.empty());
    std::sort(norms.begin(), norms.end());
    const double zero_bound = 1e-6 * norms[norms.size() / 2];
    int checked = 0, structural_zeros = 0;
    double worst = 0;
    std::string worst_name;
    for (const auto& [name, want] : golden->tensors()) {
      if (name.rfind("grad.", 0) != 0) continue;
      const Tensor* got = produced->find(name);
      ASSERT_NE(got, nullptr) << "bert_run --grads did not write " << name;
      ASSERT_EQ(got->shape, want.shape) << name;
      ++checked;
      if (norm(want) < zero_bound) {  // zero in exact arithmetic
        EXPECT_LE(norm(*got), zero_bound) << name << " should be ~0";
        ++structural_zeros;
        continue;
      }
      const double rel = test::relative_l2(got->as<float>(), want.as<float>(), static_cast<size_t>(want.numel()));
      EXPECT_LE(rel, 1e-4) << name;
      if (rel > worst) worst = rel, worst_name = name;
    }
    EXPECT_LT(structural_zeros, checked / 4) << "too many gradients are ~0 for the comparison to mean much";
    int produced_grads = 0;
    for (const auto& [name, t] : produced->tensors()) produced_grads += name.rfind("grad.", 0) == 0;
    EXPECT_EQ(produced_grads, checked) << "bert_run wrote gradients transformers does not have";
    EXPECT_GT(checked, 10);
    std::printf("  %-22s loss %.7g (golden %.7g), %d gradients (%d ~0), worst rel L2 %.2e (%s)\n",
                (fixture + "/" + device).c_str(), gl, wl, checked, structural_zeros, worst, worst_name.c_str());
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, GradParity,
                         ::testing::Combine(::testing::ValuesIn(kFixturesWithLoss), ::testing::ValuesIn(devices())),
                         [](const auto& info) {
  std::string n = std::get<0>(info.param) + "_" + std::get<1>(info.param);
  for (char& c : n)
    if (c == '-') c = '_';
  return n;
});

}  // namespace
}  // namespace bert
