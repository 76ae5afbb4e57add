// The command-line tools end to end: convert_weights and bert_run on good and bad input. Every bad
// input must give a non-zero exit and a message naming the file, tensor or field; nothing crashes.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "tests/test_util.h"
#include "weights/safetensors.h"

namespace bert {
namespace {

namespace fs = std::filesystem;

std::string tool(const char* name) { return (test::tools_dir() / name).string(); }

// Writes an inputs file with the given int tensors.
void write_inputs(const fs::path& path, const std::vector<std::pair<std::string, Tensor>>& tensors) {
  ASSERT_TRUE(write_safetensors(path.string(), tensors, {}).ok());
}

Tensor int_tensor(DType dtype, std::vector<int64_t> shape, int64_t fill) {
  Tensor t = make_owned_tensor(dtype, shape);
  for (int64_t i = 0; i < t.numel(); ++i) {
    if (dtype == DType::kI32) static_cast<int32_t*>(mutable_data(t))[i] = static_cast<int32_t>(fill + i % 7);
    else if (dtype == DType::kI64) static_cast<int64_t*>(mutable_data(t))[i] = fill + i % 7;
    else static_cast<float*>(mutable_data(t))[i] = static_cast<float>(fill);
  }
  return t;
}

// A small vocab: specials, some words and pieces.
void write_vocab(const fs::path& path) {
  std::ofstream f(path);
  for (const char* t : {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "cat", "sat", "on", "mat", "a", "dog",
                        "##s", ".", "paris", "is", "in", "france", "where"})
    f << t << "\n";
}

class Tools : public ::testing::Test {
 protected:
  void SetUp() override {
    write_vocab(tmp_ / "vocab.txt");
    for (const char* arch : {"BertForSequenceClassification", "BertForMaskedLM", "BertForQuestionAnswering",
                             "BertForTokenClassification", "BertModel"}) {
      auto r = test::run_command(tool("convert_weights") + " --synthetic bert-tiny --architecture " + arch + " " +
                                 (tmp_ / (std::string(arch) + ".bert")).string() + " --vocab " +
                                 (tmp_ / "vocab.txt").string());
      ASSERT_EQ(r.exit_code, 0) << r.output;
    }
  }
  std::string model(const char* arch) const { return (tmp_ / (std::string(arch) + ".bert")).string(); }
  test::TempDir tmp_;
};

TEST_F(Tools, BertRunTensorModeWritesEveryOutput) {
  const auto in = tmp_ / "in.safetensors", out = tmp_ / "out.safetensors";
  write_inputs(in, {{"input_ids", int_tensor(DType::kI64, {2, 6}, 5)},
                    {"attention_mask", int_tensor(DType::kI32, {2, 6}, 1)}});
  // attention_mask from int_tensor is 1..7: make it valid.
  Tensor mask = make_owned_tensor(DType::kI32, {2, 6});
  for (int i = 0; i < 12; ++i) static_cast<int32_t*>(mutable_data(mask))[i] = i < 10;
  write_inputs(in, {{"input_ids", int_tensor(DType::kI64, {2, 6}, 5)}, {"attention_mask", mask}});
  auto r = test::run_command(tool("bert_run") + " --model " + model("BertForQuestionAnswering") + " --inputs " +
                             in.string() + " --outputs " + out.string() + " --threads 1");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  auto f = SafetensorsFile::Open(out.string());
  ASSERT_TRUE(f.ok()) << f.status().to_string();
  for (const char* name : {"hidden_states.0", "hidden_states.1", "hidden_states.2", "last_hidden_state",
                           "start_logits", "end_logits"})
    EXPECT_NE(f->find(name), nullptr) << name;
  EXPECT_EQ(f->find("start_logits")->shape, (std::vector<int64_t>{2, 6}));
}

TEST_F(Tools, BertRunTextModePrintsPredictions) {
  auto cls = test::run_command(tool("bert_run") + " --model " + model("BertForSequenceClassification") +
                               " --text 'The cat sat on the mat.'");
  ASSERT_EQ(cls.exit_code, 0) << cls.output;
  auto j = nlohmann::json::parse(cls.output);
  EXPECT_TRUE(j["label"] == "LABEL_0" || j["label"] == "LABEL_1");
  EXPECT_NEAR(j["probabilities"]["LABEL_0"].get<double>() + j["probabilities"]["LABEL_1"].get<double>(), 1.0, 1e-9);
  EXPECT_EQ(j["tokens"], (nlohmann::json{"[CLS]", "the", "cat", "sat", "on", "the", "mat", ".", "[SEP]"}));

  auto mlm = test::run_command(tool("bert_run") + " --model " + model("BertForMaskedLM") +
                               " --text 'the cat [MASK] on the mat'");
  ASSERT_EQ(mlm.exit_code, 0) << mlm.output;
  j = nlohmann::json::parse(mlm.output);
  ASSERT_EQ(j["masks"].size(), 1u);
  EXPECT_EQ(j["masks"][0]["position"], 3);
  EXPECT_EQ(j["masks"][0]["top5"].size(), 5u);

  auto qa = test::run_command(tool("bert_run") + " --model " + model("BertForQuestionAnswering") +
                              " --text 'where is paris' --text-pair 'paris is in france'");
  ASSERT_EQ(qa.exit_code, 0) << qa.output;
  j = nlohmann::json::parse(qa.output);
  EXPECT_TRUE(j.contains("answer"));
  EXPECT_GE(j["start_token"].get<int>(), 5);  // inside the context segment
  EXPECT_LE(j["start_token"].get<int>(), j["end_token"].get<int>());

  auto tok = test::run_command(tool("bert_run") + " --model " + model("BertForTokenClassification") + " --text 'a dog'");
  ASSERT_EQ(tok.exit_code, 0) << tok.output;
  // By word, without [CLS] and [SEP] (issue 16).
  const auto entities = nlohmann::json::parse(tok.output)["entities"];
  ASSERT_EQ(entities.size(), 2u) << tok.output;
  EXPECT_EQ(entities[0]["word"], "a");
  EXPECT_EQ(entities[1]["word"], "dog");
}

struct BadRun {
  const char* what;
  std::vector<std::pair<std::string, Tensor>> inputs;
  const char* needle;
};

TEST_F(Tools, BertRunRejectsBadInputsWithClearErrors) {
  Tensor big = int_tensor(DType::kI32, {1, 4}, 5);
  static_cast<int32_t*>(mutable_data(big))[2] = 30522;
  Tensor huge64 = int_tensor(DType::kI64, {1, 4}, 5);
  static_cast<int64_t*>(mutable_data(huge64))[1] = int64_t(1) << 40;
  const std::vector<BadRun> cases = {
      {"float ids", {{"input_ids", int_tensor(DType::kF32, {1, 4}, 5)}}, "dtype F32"},
      {"1-D ids", {{"input_ids", int_tensor(DType::kI32, {4}, 5)}}, "[batch, seq]"},
      {"no ids", {{"attention_mask", int_tensor(DType::kI32, {1, 4}, 1)}}, "no tensor 'input_ids'"},
      {"id beyond vocab", {{"input_ids", big}}, "input_ids[0][2] = 30522"},
      {"int64 beyond int32", {{"input_ids", huge64}}, "beyond int32"},
      {"too long", {{"input_ids", int_tensor(DType::kI32, {1, 600}, 5)}}, "max_position_embeddings 512"},
      {"mask shape", {{"input_ids", int_tensor(DType::kI32, {1, 4}, 5)}, {"attention_mask", int_tensor(DType::kI32, {1, 5}, 1)}},
       "differs from input_ids"},
      {"type id", {{"input_ids", int_tensor(DType::kI32, {1, 4}, 5)}, {"token_type_ids", int_tensor(DType::kI32, {1, 4}, 2)}},
       "token_type_ids[0][0] = 2"},
  };
  for (const BadRun& c : cases) {
    SCOPED_TRACE(c.what);
    const auto in = tmp_ / "bad.safetensors";
    write_inputs(in, c.inputs);
    auto r = test::run_command(tool("bert_run") + " --model " + model("BertModel") + " --inputs " + in.string() +
                               " --outputs " + (tmp_ / "o.safetensors").string());
    EXPECT_EQ(r.exit_code, 1) << r.output;
    EXPECT_NE(r.output.find(c.needle), std::string::npos) << r.output;
  }
}

TEST_F(Tools, BadModelFilesAndArgumentsAreRefused) {
  const auto in = tmp_ / "in.safetensors";
  write_inputs(in, {{"input_ids", int_tensor(DType::kI32, {1, 4}, 5)}});
  auto run = [&](const std::string& model_path) {
    return test::run_command(tool("bert_run") + " --model " + model_path + " --inputs " + in.string() +
                             " --outputs " + (tmp_ / "o.safetensors").string());
  };
  auto r = run((tmp_ / "missing.bert").string());
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.output.find("missing.bert"), std::string::npos) << r.output;

  // Truncated model file.
  const std::string bytes = test::read_file(model("BertModel"));
  test::write_file(tmp_ / "truncated.bert", bytes.substr(0, bytes.size() / 2));
  r = run((tmp_ / "truncated.bert").string());
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.output.find("truncated.bert"), std::string::npos) << r.output;

  // A safetensors file that is not an engine file.
  r = run(in.string());
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.output.find("not an engine model file"), std::string::npos) << r.output;

  // Usage errors exit 2.
  EXPECT_EQ(test::run_command(tool("bert_run") + " --model x").exit_code, 2);
  EXPECT_EQ(test::run_command(tool("bert_run") + " --bogus").exit_code, 2);
  EXPECT_EQ(test::run_command(tool("convert_weights") + " a b --dtype fp8").exit_code, 2);
}

// An HF directory copied from a fixture, with config.json edited.
class ConvertErrors : public ::testing::Test {
 protected:
  fs::path make_dir(const fs::path& fixture, const std::function<void(nlohmann::json&)>& edit) {
    fs::path dir = tmp_ / ("hf" + std::to_string(count_++));
    fs::create_directories(dir);
    fs::copy_file(fixture / "model.safetensors", dir / "model.safetensors");
    std::ifstream f(fixture / "config.json");
    auto j = nlohmann::json::parse(f);
    edit(j);
    std::ofstream(dir / "config.json") << j.dump(2);
    return dir;
  }
  test::CommandResult convert(const fs::path& dir) {
    return test::run_command(tool("convert_weights") + " " + dir.string() + " " + (tmp_ / "o.bert").string());
  }
  test::TempDir tmp_;
  int count_ = 0;
};

TEST_F(ConvertErrors, ConfigProblemsNameTheFieldOrTensor) {
  BERT_REQUIRE_SHARED(shared);
  const fs::path fixture = shared / "fixtures" / "bert-seqcls";
  struct Case {
    const char* what;
    std::function<void(nlohmann::json&)> edit;
    const char* needle;
  };
  const std::vector<Case> cases = {
      {"missing field", [](auto& j) { j.erase("num_hidden_layers"); }, "missing field 'num_hidden_layers'"},
      {"wrong type", [](auto& j) { j["hidden_size"] = "64"; }, "'hidden_size' must be an integer"},
      {"heads", [](auto& j) { j["num_attention_heads"] = 5; }, "not divisible by num_attention_heads"},
      {"inconsistent", [](auto& j) { j["intermediate_size"] = 100; },
       "'bert.encoder.layer.0.intermediate.dense.weight' has shape [128, 64] but the config needs [100, 64]"},
      {"more layers", [](auto& j) { j["num_hidden_layers"] = 3; }, "missing tensor 'bert.encoder.layer.2."},
      {"labels", [](auto& j) { j["id2label"] = {{"0", "a"}, {"1", "b"}}; }, "'classifier.weight' has shape [3, 64]"},
      {"model type", [](auto& j) { j["model_type"] = "gpt2"; }, "model_type 'gpt2' is not supported"},
      {"architecture", [](auto& j) { j["architectures"] = {"BertForMultipleChoice"}; }, "'BertForMultipleChoice'"},
      {"activation", [](auto& j) { j["hidden_act"] = "swish"; }, "hidden_act 'swish'"},
      {"position type", [](auto& j) { j["position_embedding_type"] = "relative_key"; }, "position_embedding_type"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    auto r = convert(make_dir(fixture, c.edit));
    EXPECT_EQ(r.exit_code, 1) << r.output;
    EXPECT_NE(r.output.find(c.needle), std::string::npos) << r.output;
  }
}

// The zoo fixtures: a config that disagrees with the checkpoint is refused naming the first
// mismatching tensor under the family's own HF names.
TEST_F(ConvertErrors, ZooCheckpointsThatDisagreeWithTheirConfigNameTheTensor) {
  BERT_REQUIRE_SHARED(shared);
  struct Case {
    const char* fixture;
    std::function<void(nlohmann::json&)> edit;
    const char* needle;
  };
  const std::vector<Case> cases = {
      {"roberta-seqcls", [](auto& j) { j["intermediate_size"] = 100; },
       "'roberta.encoder.layer.0.intermediate.dense.weight' has shape [128, 64] but the config needs [100, 64]"},
      {"distilbert-seqcls", [](auto& j) { j["hidden_dim"] = 100; },
       "'distilbert.transformer.layer.0.ffn.lin1.weight' has shape [128, 64] but the config needs [100, 64]"},
      {"electra-seqcls", [](auto& j) { j["embedding_size"] = 16; },
       "'electra.embeddings.word_embeddings.weight' has shape [1000, 32] but the config needs [1000, 16]"},
      {"albert-pretraining", [](auto& j) { j["num_hidden_groups"] = 2; },
       "missing tensor 'albert.encoder.albert_layer_groups.1.albert_layers.0.attention.query.weight'"},
      {"squeezebert-seqcls", [](auto& j) { j["q_groups"] = 2; },
       "'transformer.encoder.layers.0.attention.query.weight' has shape [64, 16, 1] but the config needs [64, 32, 1]"},
      {"electra-discriminator", [](auto& j) { j["model_type"] = "bert"; }, "'ElectraForPreTraining' is for model_type 'electra', not 'bert'"},
      {"roberta-seqcls", [](auto& j) { j["model_type"] = "bert"; j.erase("architectures"); },
       "no tensor 'bert.embeddings.word_embeddings.weight'"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.needle);
    auto r = convert(make_dir(shared / "fixtures" / c.fixture, c.edit));
    EXPECT_EQ(r.exit_code, 1) << r.output;
    EXPECT_NE(r.output.find(c.needle), std::string::npos) << r.output;
  }
}

TEST_F(ConvertErrors, BadWeightFilesNameTheFile) {
  BERT_REQUIRE_SHARED(shared);
  const fs::path fixture = shared / "fixtures" / "bert-seqcls";
  // A pytorch_model.bin that is not a zip, next to a config.
  fs::path dir = tmp_ / "garbage";
  fs::create_directories(dir);
  fs::copy_file(fixture / "config.json", dir / "config.json");
  test::write_file(dir / "pytorch_model.bin", std::string(1000, 'x'));
  auto r = convert(dir);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.output.find("pytorch_model.bin"), std::string::npos) << r.output;
  // No weights at all.
  fs::remove(dir / "pytorch_model.bin");
  r = convert(dir);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.output.find("no model.safetensors"), std::string::npos) << r.output;
  // Not a directory.
  r = convert(tmp_ / "nothing-here");
  EXPECT_EQ(r.exit_code, 1);
}

TEST(ConvertWeights, HalfPrecisionOutputStaysCloseThroughBertRun) {
  BERT_REQUIRE_SHARED(shared);
  const fs::path fixture = shared / "fixtures" / "bert-base-model";
  test::TempDir tmp;
  const auto golden = (fixture / "golden.safetensors").string();
  for (auto [dtype, tol] : {std::pair{"fp16", 2e-3}, {"bf16", 2e-2}}) {
    const auto model = tmp / (std::string(dtype) + ".bert"), out = tmp / "out.safetensors";
    auto c = test::run_command(tool("convert_weights") + " " + fixture.string() + " " + model.string() + " --dtype " + dtype);
    ASSERT_EQ(c.exit_code, 0) << c.output;
    auto r = test::run_command(tool("bert_run") + " --model " + model.string() + " --inputs " + golden + " --outputs " + out.string());
    ASSERT_EQ(r.exit_code, 0) << r.output;
    auto g = SafetensorsFile::Open(golden);
    auto o = SafetensorsFile::Open(out.string());
    ASSERT_TRUE(g.ok() && o.ok());
    const Tensor* want = g->find("last_hidden_state");
    const Tensor* got = o->find("last_hidden_state");
    ASSERT_TRUE(want && got);
    double rel = test::relative_l2(got->as<float>(), want->as<float>(), want->numel());
    EXPECT_LE(rel, tol) << dtype;
    EXPECT_GT(rel, 0.0) << dtype << " output identical to fp32: was the dtype applied?";
  }
}

}  // namespace
}  // namespace bert
