// Parity with HuggingFace transformers: every fixture in ../shared/fixtures (BERT with each head,
// RoBERTa, DistilBERT, ELECTRA, ALBERT, SqueezeBERT), loaded from
// model.safetensors and from pytorch_model.bin, must reproduce every hidden state and head output of
// golden.safetensors (transformers in float64) within relative L2 1e-5 and max-abs 1e-4.
// Two paths: the tools end to end (convert_weights -> bert_run), and the C++ API on the HF directory.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstring>

#include "bert/engine.h"
#include "tests/test_util.h"
#include "weights/safetensors.h"

namespace bert {
namespace {

constexpr double kMaxRelL2 = 1e-5;
constexpr double kMaxAbs = 1e-4;

const std::vector<std::string> kFixtures = {
    "bert-base-model",  "bert-pretraining",      "bert-mlm",          "bert-seqcls",
    "bert-qa",          "bert-tokcls",           "roberta-seqcls",    "distilbert-seqcls",
    "electra-seqcls",   "electra-discriminator", "albert-pretraining", "squeezebert-seqcls"};

// Golden tensors that are model outputs (not inputs, labels, loss or gradients).
bool is_output(const std::string& name) {
  return name != "input_ids" && name != "attention_mask" && name != "token_type_ids" && name != "loss" &&
         name.rfind("label.", 0) != 0 && name.rfind("grad.", 0) != 0;
}

// Compares one produced tensor against the golden one; returns the number of outputs checked.
void expect_close(const std::string& what, const std::string& name, const std::vector<int64_t>& shape,
                  const float* got, const Tensor& want) {
  ASSERT_EQ(shape, want.shape) << what << ": " << name;
  ASSERT_EQ(want.dtype, DType::kF32);
  const size_t n = static_cast<size_t>(want.numel());
  ASSERT_GT(test::max_abs(want.as<float>(), n), 0.0) << "golden " << name << " is all zero";
  const double rel = test::relative_l2(got, want.as<float>(), n);
  const double mad = test::max_abs_diff(got, want.as<float>(), n);
  std::printf("  %-22s %-24s rel L2 %.2e  max abs %.2e\n", what.c_str(), name.c_str(), rel, mad);
  EXPECT_LE(rel, kMaxRelL2) << what << ": " << name << " relative L2";
  EXPECT_LE(mad, kMaxAbs) << what << ": " << name << " max abs diff";
}

class FixtureParity : public ::testing::TestWithParam<std::string> {};

TEST_P(FixtureParity, ToolsFromSafetensorsAndPytorchBin) {
  BERT_REQUIRE_SHARED(shared);
  const auto dir = shared / "fixtures" / GetParam();
  const auto golden_path = (dir / "golden.safetensors").string();
  auto golden = SafetensorsFile::Open(golden_path);
  ASSERT_TRUE(golden.ok()) << golden.status().to_string();
  test::TempDir tmp;
  for (const char* weights : {"model.safetensors", "pytorch_model.bin"}) {
    SCOPED_TRACE(weights);
    const auto model = tmp / (std::string(weights) + ".bert");
    const auto out = tmp / (std::string(weights) + ".out.safetensors");
    auto conv = test::run_command((test::tools_dir() / "convert_weights").string() + " " + (dir / weights).string() +
                                  " " + model.string());
    ASSERT_EQ(conv.exit_code, 0) << conv.output;
    auto run = test::run_command((test::tools_dir() / "bert_run").string() + " --model " + model.string() +
                                 " --inputs " + golden_path + " --outputs " + out.string() + " --threads 2");
    ASSERT_EQ(run.exit_code, 0) << run.output;
    auto produced = SafetensorsFile::Open(out.string());
    ASSERT_TRUE(produced.ok()) << produced.status().to_string();
    int checked = 0;
    for (const auto& [name, want] : golden->tensors()) {
      if (!is_output(name)) continue;
      const Tensor* got = produced->find(name);
      ASSERT_NE(got, nullptr) << "bert_run did not write " << name;
      expect_close(weights, name, got->shape, got->as<float>(), want);
      ++checked;
    }
    EXPECT_GE(checked, 3) << "too few outputs compared";
  }
}

// Engine file -> HF directory (convert_weights --to-hf) -> the engine again: still the golden outputs,
// so the HF directory holds every tensor under the names and shapes transformers expects.
TEST_P(FixtureParity, RoundTripThroughToHf) {
  BERT_REQUIRE_SHARED(shared);
  const auto dir = shared / "fixtures" / GetParam();
  const auto golden_path = (dir / "golden.safetensors").string();
  auto golden = SafetensorsFile::Open(golden_path);
  ASSERT_TRUE(golden.ok()) << golden.status().to_string();
  test::TempDir tmp;
  const std::string convert = (test::tools_dir() / "convert_weights").string();
  auto a = test::run_command(convert + " " + dir.string() + " " + (tmp / "a.bert").string());
  ASSERT_EQ(a.exit_code, 0) << a.output;
  auto b = test::run_command(convert + " " + (tmp / "a.bert").string() + " --to-hf " + (tmp / "hf").string());
  ASSERT_EQ(b.exit_code, 0) << b.output;
  // The HF directory has exactly the checkpoint's parameters (buffers like position_ids aside).
  auto original = SafetensorsFile::Open((dir / "model.safetensors").string());
  auto written = SafetensorsFile::Open((tmp / "hf" / "model.safetensors").string());
  ASSERT_TRUE(original.ok() && written.ok());
  for (const auto& [name, t] : original->tensors()) {
    if (name.ends_with("position_ids")) continue;
    const Tensor* w = written->find(name);
    ASSERT_NE(w, nullptr) << "--to-hf lost " << name;
    EXPECT_EQ(w->shape, t.shape) << name;
    EXPECT_EQ(std::memcmp(w->data, t.data, t.nbytes()), 0) << name << " changed";
  }
  const auto out = tmp / "out.safetensors";
  auto run = test::run_command((test::tools_dir() / "bert_run").string() + " --model " + (tmp / "hf").string() +
                               " --inputs " + golden_path + " --outputs " + out.string());
  ASSERT_EQ(run.exit_code, 0) << run.output;
  auto produced = SafetensorsFile::Open(out.string());
  ASSERT_TRUE(produced.ok());
  for (const auto& [name, want] : golden->tensors()) {
    if (!is_output(name)) continue;
    const Tensor* got = produced->find(name);
    ASSERT_NE(got, nullptr) << name;
    expect_close("to-hf", name, got->shape, got->as<float>(), want);
  }
}

TEST_P(FixtureParity, ApiFromHfDirectory) {
  BERT_REQUIRE_SHARED(shared);
  const auto dir = shared / "fixtures" / GetParam();
  auto golden = SafetensorsFile::Open((dir / "golden.safetensors").string());
  ASSERT_TRUE(golden.ok()) << golden.status().to_string();
  auto model = Model::Load(dir.string());
  ASSERT_TRUE(model.ok()) << model.status().to_string();
  const Tensor* ids = golden->find("input_ids");
  const Tensor* mask = golden->find("attention_mask");
  const Tensor* types = golden->find("token_type_ids");  // absent for DistilBERT
  ASSERT_TRUE(ids && mask);
  SessionOptions opts;
  opts.max_batch = static_cast<int>(ids->shape[0]);
  opts.max_seq = static_cast<int>(ids->shape[1]);
  opts.keep_hidden_states = true;
  auto session = Session::Create(*model, opts);
  ASSERT_TRUE(session.ok()) << session.status().to_string();
  BatchInput in{opts.max_batch, opts.max_seq, ids->as<int32_t>(), mask->as<int32_t>(),
                types ? types->as<int32_t>() : nullptr};
  ASSERT_TRUE((*session)->Run(in).ok());
  int checked = 0;
  for (const auto& [name, want] : golden->tensors()) {
    if (!is_output(name)) continue;
    auto got = (*session)->Output(name);
    ASSERT_TRUE(got.ok()) << got.status().to_string();
    expect_close("api", name, got->shape, got->data, want);
    ++checked;
  }
  EXPECT_GE(checked, 3);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, FixtureParity, ::testing::ValuesIn(kFixtures),
                         [](const auto& info) {
                           std::string n = info.param;
                           for (char& c : n) if (c == '-') c = '_';
                           return n;
                         });

}  // namespace
}  // namespace bert
