// The public C++ API on synthetic models (no ../shared needed): sessions, outputs, padding, errors,
// stored precisions, and that a batch gives the same answers as its sequences run one by one.
#include <gtest/gtest.h>

#include <cmath>

#include "bert/engine.h"
#include "engine/src/model_impl.h"
#include "tests/test_util.h"
#include "weights/synthetic.h"

namespace bert {
namespace {

std::shared_ptr<const Model> tiny_model(const std::string& architecture) {
  auto json = synthetic_config_json("bert-tiny", architecture);
  EXPECT_TRUE(json.ok());
  auto config = parse_model_config(*json, "test");
  EXPECT_TRUE(config.ok()) << config.status().to_string();
  auto model = load_model_from_source(synthetic_model(*config, 7));
  EXPECT_TRUE(model.ok()) << model.status().to_string();
  return *model;
}

std::vector<int32_t> random_ids(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int32_t> d(1000, 30521);
  std::vector<int32_t> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

TEST(EngineApi, OutputsHaveHuggingFaceNamesAndShapes) {
  struct Case {
    const char* arch;
    std::vector<std::pair<std::string, std::vector<int64_t>>> outputs;
  };
  const int B = 2, S = 9;
  const std::vector<Case> cases = {
      {"BertModel", {{"last_hidden_state", {B, S, 128}}, {"pooler_output", {B, 128}}}},
      {"BertForSequenceClassification", {{"logits", {B, 2}}, {"pooler_output", {B, 128}}}},
      {"BertForTokenClassification", {{"logits", {B, S, 2}}}},
      {"BertForQuestionAnswering", {{"start_logits", {B, S}}, {"end_logits", {B, S}}}},
      {"BertForMaskedLM", {{"logits", {B, S, 30522}}}},
      {"BertForPreTraining", {{"prediction_logits", {B, S, 30522}}, {"seq_relationship_logits", {B, 2}}}},
  };
  auto ids = random_ids(B * S, 1);
  for (const Case& c : cases) {
    SCOPED_TRACE(c.arch);
    auto model = tiny_model(c.arch);
    SessionOptions opts;
    opts.max_batch = B;
    opts.max_seq = S;
    opts.keep_hidden_states = true;
    auto session = Session::Create(model, opts);
    ASSERT_TRUE(session.ok()) << session.status().to_string();
    ASSERT_TRUE((*session)->Run({B, S, ids.data()}).ok());
    for (const auto& [name, shape] : c.outputs) {
      auto out = (*session)->Output(name);
      ASSERT_TRUE(out.ok()) << out.status().to_string();
      EXPECT_EQ(out->shape, shape) << name;
      EXPECT_GT(test::max_abs(out->data, out->numel()), 0.0) << name << " is all zero";
      for (int64_t i = 0; i < out->numel(); ++i) ASSERT_TRUE(std::isfinite(out->data[i])) << name;
    }
    for (int l = 0; l <= 2; ++l) EXPECT_TRUE((*session)->Output("hidden_states." + std::to_string(l)).ok());
    auto missing = (*session)->Output("nope");
    EXPECT_FALSE(missing.ok());
    EXPECT_NE(missing.status().message().find("nope"), std::string::npos);
  }
}

// Padding must not change the real tokens' outputs: a padded batch equals each sequence run alone.
TEST(EngineApi, PaddedBatchMatchesSequencesRunAlone) {
  auto model = tiny_model("BertForTokenClassification");
  const int B = 3, S = 17;
  const int lengths[B] = {17, 5, 1};
  auto ids = random_ids(B * S, 2);
  std::vector<int32_t> mask(B * S, 0), types(B * S, 0);
  for (int b = 0; b < B; ++b)
    for (int s = 0; s < lengths[b]; ++s) mask[b * S + s] = 1, types[b * S + s] = s > lengths[b] / 2;
  SessionOptions opts;
  opts.max_batch = B;
  opts.max_seq = S;
  auto batched = Session::Create(model, opts);
  ASSERT_TRUE(batched.ok());
  ASSERT_TRUE((*batched)->Run({B, S, ids.data(), mask.data(), types.data()}).ok());
  auto all = (*batched)->Output("last_hidden_state").value();
  auto all_logits = (*batched)->Output("logits").value();
  const int64_t H = model->info().hidden_size;
  auto single = Session::Create(model, opts);
  ASSERT_TRUE(single.ok());
  for (int b = 0; b < B; ++b) {
    ASSERT_TRUE((*single)->Run({1, lengths[b], ids.data() + b * S, nullptr, types.data() + b * S}).ok());
    auto one = (*single)->Output("last_hidden_state").value();
    const size_t n = static_cast<size_t>(lengths[b] * H);
    EXPECT_LE(test::relative_l2(all.data + b * S * H, one.data, n), 1e-6) << "sequence " << b;
    auto logits = (*single)->Output("logits").value();
    EXPECT_LE(test::max_abs_diff(all_logits.data + b * S * 2, logits.data, lengths[b] * 2), 1e-5);
  }
}

TEST(EngineApi, RunIsDeterministicAndThreadCountDoesNotChangeResults) {
  auto model = tiny_model("BertModel");
  const int B = 2, S = 33;
  auto ids = random_ids(B * S, 3);
  std::vector<float> first;
  for (int threads : {1, 2, 1}) {
    SessionOptions opts;
    opts.max_batch = B, opts.max_seq = S, opts.num_threads = threads;
    auto session = Session::Create(model, opts);
    ASSERT_TRUE(session.ok());
    ASSERT_TRUE((*session)->Run({B, S, ids.data()}).ok());
    auto out = (*session)->Output("last_hidden_state").value();
    if (first.empty()) first.assign(out.data, out.data + out.numel());
    else EXPECT_LE(test::relative_l2(out.data, first.data(), first.size()), 1e-6) << threads << " threads";
  }
}

TEST(EngineApi, BadInputsAreErrorsNamingTheProblem) {
  auto model = tiny_model("BertModel");
  SessionOptions opts;
  opts.max_batch = 2, opts.max_seq = 8;
  auto session = Session::Create(model, opts);
  ASSERT_TRUE(session.ok());
  std::vector<int32_t> ids(16, 5), mask(16, 1), types(16, 0);
  auto expect_error = [&](BatchInput in, ErrorCode code, const std::string& needle) {
    Status st = (*session)->Run(in);
    EXPECT_EQ(st.code(), code) << st.to_string();
    EXPECT_NE(st.message().find(needle), std::string::npos) << st.message();
  };
  expect_error({3, 8, ids.data()}, ErrorCode::kOutOfRange, "batch 3");
  expect_error({2, 9, ids.data()}, ErrorCode::kOutOfRange, "sequence length 9");
  expect_error({2, 8, nullptr}, ErrorCode::kInvalidArgument, "input_ids");
  ids[11] = 30522;
  expect_error({2, 8, ids.data()}, ErrorCode::kOutOfRange, "input_ids[1][3] = 30522");
  ids[11] = -1;
  expect_error({2, 8, ids.data()}, ErrorCode::kOutOfRange, "input_ids[1][3] = -1");
  ids[11] = 5;
  types[2] = 2;
  expect_error({2, 8, ids.data(), mask.data(), types.data()}, ErrorCode::kOutOfRange, "token_type_ids[0][2] = 2");
  types[2] = 0;
  mask[4] = 7;
  expect_error({2, 8, ids.data(), mask.data(), types.data()}, ErrorCode::kInvalidArgument, "attention_mask[0][4] = 7");
  // Nothing ran, so there are no outputs yet.
  EXPECT_FALSE((*session)->Output("last_hidden_state").ok());

  SessionOptions too_long;
  too_long.max_seq = 513;
  auto bad = Session::Create(model, too_long);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("max_position_embeddings"), std::string::npos);
  EXPECT_FALSE(Session::Create(nullptr).ok());
  auto missing = Model::Load("/nonexistent/model.bert");
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("/nonexistent/model.bert"), std::string::npos);
}

// The CPU backend computes in fp32; options it has no kernels for say so instead of being ignored.
// "On error nothing is written": a failed Run publishes no outputs, so nothing from an earlier run can
// be read as if the failed batch had produced it; the next good Run publishes again.
TEST(EngineApi, AFailedRunLeavesNoStaleOutputs) {
  auto model = tiny_model("BertForSequenceClassification");
  auto session = Session::Create(model, {.max_batch = 2, .max_seq = 8});
  ASSERT_TRUE(session.ok());
  std::vector<int32_t> ids = {101, 2000, 2001, 102, 101, 3000, 3001, 102};
  ASSERT_TRUE((*session)->Run({2, 4, ids.data()}).ok());
  auto before = (*session)->Output("logits");
  ASSERT_TRUE(before.ok());
  const std::vector<float> first(before->data, before->data + before->numel());

  std::vector<int32_t> bad = ids;
  bad[5] = 1 << 30;  // outside the vocab
  Status st = (*session)->Run({2, 4, bad.data()});
  ASSERT_FALSE(st.ok());
  for (const char* name : {"logits", "last_hidden_state", "pooler_output"}) {
    auto out = (*session)->Output(name);
    EXPECT_FALSE(out.ok()) << name << " is still readable after a failed Run";
    EXPECT_EQ(out.status().code(), ErrorCode::kNotFound);
  }
  EXPECT_FALSE((*session)->Run({3, 4, ids.data()}).ok());  // batch above max_batch: the same
  EXPECT_FALSE((*session)->Output("logits").ok());

  ASSERT_TRUE((*session)->Run({2, 4, ids.data()}).ok());
  auto again = (*session)->Output("logits");
  ASSERT_TRUE(again.ok());
  ASSERT_EQ(again->numel(), static_cast<int64_t>(first.size()));
  for (size_t i = 0; i < first.size(); ++i) EXPECT_EQ(again->data[i], first[i]);
}

TEST(EngineApi, CudaOnlyOptionsOnTheCpuAreErrors) {
  auto json = synthetic_config_json("bert-tiny", "");
  auto config = parse_model_config(*json, "test");
  ASSERT_TRUE(config.ok());
  for (Precision p : {Precision::kF16}) {  // int8 and bf16 run on the CPU (tests/lowp_test.cc)
    LoadOptions load;
    load.precision = p;
    auto model = load_model_from_source(synthetic_model(*config, 7), load);
    ASSERT_FALSE(model.ok());
    EXPECT_EQ(model.status().code(), ErrorCode::kUnsupported);
    EXPECT_NE(model.status().message().find("on the CPU"), std::string::npos) << model.status().to_string();
  }
  auto model = tiny_model("BertModel");
  EXPECT_EQ(model->info().device, "cpu");
  EXPECT_EQ(model->info().precision, "fp32");
  SessionOptions opts;
  opts.max_batch = 1, opts.max_seq = 8;
  auto session = Session::Create(model, opts);
  ASSERT_TRUE(session.ok());
  std::vector<int32_t> ids(8, 1000);
  Status st = (*session)->Calibrate({1, 8, ids.data()});
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.message().find("int8"), std::string::npos) << st.to_string();
  ASSERT_TRUE((*session)->Run({1, 8, ids.data()}).ok());
  EXPECT_EQ((*session)->LastRunDeviceSeconds(), 0.0);
}

// Engine files stored as F16 / BF16 load to the same model within the storage precision.
TEST(EngineApi, HalfPrecisionFilesMatchF32) {
  auto json = synthetic_config_json("bert-tiny", "BertForSequenceClassification");
  auto config = parse_model_config(*json, "test");
  ModelSource src = synthetic_model(*config, 11);
  test::TempDir tmp;
  const int B = 2, S = 16;
  auto ids = random_ids(B * S, 4);
  std::vector<float> reference;
  for (auto [dtype, tol] : {std::pair{DType::kF32, 1e-7}, {DType::kF16, 2e-3}, {DType::kBF16, 2e-2}}) {
    const auto path = tmp / (std::string(dtype_name(dtype)) + ".bert");
    ASSERT_TRUE(write_engine_file(path.string(), src, dtype).ok());
    auto model = Model::Load(path.string());
    ASSERT_TRUE(model.ok()) << model.status().to_string();
    EXPECT_EQ((*model)->info().weights_dtype, std::string(dtype_name(dtype)));
    SessionOptions opts;
    opts.max_batch = B, opts.max_seq = S;
    auto session = Session::Create(*model, opts);
    ASSERT_TRUE((*session)->Run({B, S, ids.data()}).ok());
    auto out = (*session)->Output("last_hidden_state").value();
    if (reference.empty()) reference.assign(out.data, out.data + out.numel());
    EXPECT_LE(test::relative_l2(out.data, reference.data(), reference.size()), tol) << dtype_name(dtype);
  }
}

}  // namespace
}  // namespace bert
