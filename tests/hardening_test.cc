// Issue 16: the malformed inputs that crashed, hung, were silently wrong or gave misleading
// messages, one test (or one case of a test) each. Every case must come back as an error value that
// names what is wrong; none may crash, hang, or reach the terminal with raw control bytes.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>

#include "bert/data.h"
#include "bert/engine.h"
#include "bert/model_builder.h"
#include "bert/predict.h"
#include "bert/tokenizer.h"
#include "engine/core/tensor.h"
#include "tests/test_util.h"
#include "weights/mapped_file.h"
#include "weights/model_config.h"
#include "weights/pickle_reader.h"
#include "weights/safetensors.h"
#include "weights/vocab.h"

namespace bert {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

std::string tool(const char* name) { return (test::tools_dir() / name).string(); }

// A tiny BERT classifier config (vocab 97) with one field replaced.
std::string config_with(const std::string& key, json value, const std::string& arch = "BertForSequenceClassification") {
  json j = json::parse(test::tiny_family_config("bert"));
  j["architectures"] = {arch};
  j[key] = std::move(value);
  return j.dump();
}

void expect_error(const Status& st, const std::string& needle) {
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.message().find(needle), std::string::npos) << "want '" << needle << "' in: " << st.to_string();
}

void write_vocab97(const fs::path& p) {
  std::ofstream f(p);
  for (const char* t : {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "good", "bad", "movie", "film"}) f << t << "\n";
  for (int i = 9; i < 97; ++i) f << "w" << i << "\n";
}

// ---- crashes: absurd sizes are refused before anything is allocated ----------------------------

TEST(Hardening, AbsurdConfigSizesAreRefusedBeforeAllocation) {
  const int64_t two62 = int64_t{1} << 62;
  const struct {
    const char* key;
    json value;
    const char* needle;
  } cases[] = {
      {"hidden_size", two62, "field 'hidden_size' is 4611686018427387904; this engine accepts at most"},
      {"intermediate_size", two62, "field 'intermediate_size' is 4611686018427387904"},
      {"num_labels", 2000000000, "field 'num_labels' is 2000000000"},
      {"num_hidden_layers", 1000000000, "field 'num_hidden_layers' is 1000000000"},
      {"num_hidden_layers", two62, "field 'num_hidden_layers' is 4611686018427387904"},
      {"vocab_size", int64_t{1} << 40, "field 'vocab_size' is 1099511627776"},
      {"hidden_size", 1000000000, "field 'hidden_size' is 1000000000"},
      {"max_position_embeddings", two62, "field 'max_position_embeddings' is 4611686018427387904"},
      {"vocab_size", uint64_t{1} << 63, "field 'vocab_size' is 9223372036854775808, beyond any size"},
      {"type_vocab_size", two62, "field 'type_vocab_size' is"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(std::string(c.key) + " = " + c.value.dump());
    auto m = LoadSynthetic({.config_json = config_with(c.key, c.value), .origin = "cfg.json"});
    ASSERT_FALSE(m.ok());
    expect_error(m.status(), c.needle);
    EXPECT_EQ(m.status().message().find("-9223372036854775808"), std::string::npos);
  }
  // A synthetic model whose sizes each pass but whose total is absurd.
  json big = json::parse(test::tiny_family_config("bert"));
  big.update({{"hidden_size", 65536}, {"num_attention_heads", 1}, {"num_hidden_layers", 1024}, {"vocab_size", 97}});
  auto m = LoadSynthetic({.config_json = big.dump(), .origin = "big.json"});
  ASSERT_FALSE(m.ok());
  expect_error(m.status(), "big.json: the config makes more than 2147483648 parameters");
}

TEST(Hardening, TensorSizeOverflowThrowsInsteadOfWrapping) {
  EXPECT_THROW(make_owned_tensor(DType::kF32, {int64_t{1} << 62, 4}), std::length_error);
  EXPECT_THROW(make_owned_tensor(DType::kF32, {-1}), std::length_error);
  EXPECT_EQ(make_owned_tensor(DType::kF32, {0, 5}).numel(), 0);
}

TEST(Hardening, AbsurdSizesInAnHfDirectoryAndAnEngineFile) {
  test::TempDir tmp;
  // HF directory: config.json with num_labels 2e9 next to real weights.
  const fs::path dir = tmp / "hf";
  fs::create_directories(dir);
  ASSERT_TRUE(WriteSynthetic({.preset = "bert-tiny"}, (tmp / "tiny.bert").string()).ok());
  ASSERT_TRUE(ConvertToHf((tmp / "tiny.bert").string(), dir.string()).ok());
  json cfg = json::parse(test::read_file(dir / "config.json"));
  cfg["num_labels"] = 2000000000;
  test::write_file(dir / "config.json", cfg.dump());
  auto m = Model::Load(dir.string());
  ASSERT_FALSE(m.ok());
  expect_error(m.status(), "field 'num_labels' is 2000000000");
  auto conv = ConvertCheckpoint(dir.string(), (tmp / "o.bert").string());
  ASSERT_FALSE(conv.ok());
  expect_error(conv.status(), "num_labels");

  // Engine file: its embedded config edited to num_hidden_layers 2^62.
  auto f = SafetensorsFile::Open((tmp / "tiny.bert").string());
  ASSERT_TRUE(f.ok());
  std::map<std::string, std::string> md = f->metadata();
  json ec = json::parse(md.at("config"));
  ec["num_hidden_layers"] = int64_t{1} << 62;
  md["config"] = ec.dump();
  std::vector<std::pair<std::string, Tensor>> tensors(f->tensors().begin(), f->tensors().end());
  ASSERT_TRUE(write_safetensors((tmp / "layers.bert").string(), tensors, md).ok());
  m = Model::Load((tmp / "layers.bert").string());
  ASSERT_FALSE(m.ok());
  expect_error(m.status(), "num_hidden_layers");
}

TEST(Hardening, BertTrainConfigWithAbsurdSizesIsNamed) {
  test::TempDir tmp;
  write_vocab97(tmp / "vocab.txt");
  test::write_file(tmp / "train.tsv", "sentence\tlabel\ngood movie\t1\nbad film\t0\n");
  for (const auto& [key, needle] : std::vector<std::pair<std::string, std::string>>{
           {"hidden_size", "field 'hidden_size' is 4611686018427387904"},
           {"max_position_embeddings", "field 'max_position_embeddings' is 4611686018427387904"}}) {
    SCOPED_TRACE(key);
    test::write_file(tmp / "config.json", config_with(key, int64_t{1} << 62));
    auto r = test::run_command(tool("bert_train") + " --config " + (tmp / "config.json").string() + " --vocab " +
                               (tmp / "vocab.txt").string() + " --train " + (tmp / "train.tsv").string() + " --out " +
                               (tmp / "o.bert").string());
    EXPECT_EQ(r.exit_code, 1) << r.output;
    EXPECT_NE(r.output.find(needle), std::string::npos) << r.output;
    EXPECT_EQ(r.output.find("Internal"), std::string::npos) << r.output;
  }
  // The vocab size check happens before the weights exist: vocab_size 2^24 with a 97-token vocab.
  test::write_file(tmp / "config.json", config_with("vocab_size", int64_t{1} << 24));
  auto r = test::run_command(tool("bert_train") + " --config " + (tmp / "config.json").string() + " --vocab " +
                             (tmp / "vocab.txt").string() + " --train " + (tmp / "train.tsv").string() + " --out " +
                             (tmp / "o.bert").string());
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("97 tokens but the config's vocab_size is 16777216"), std::string::npos) << r.output;
}

// ---- training checkpoints: every field of the state validated -----------------------------------

class TrainingState : public ::testing::Test {
 protected:
  void SetUp() override {
    write_vocab97(tmp_ / "vocab.txt");
    test::write_file(tmp_ / "config.json", config_with("num_labels", 2));
    std::string tsv = "sentence\tlabel\n";
    for (int i = 0; i < 12; ++i) tsv += (i % 2 ? "good movie\t1\n" : "bad film\t0\n");
    test::write_file(tmp_ / "train.tsv", tsv);
    base_ = tool("bert_train") + " --config " + (tmp_ / "config.json").string() + " --vocab " +
            (tmp_ / "vocab.txt").string() + " --train " + (tmp_ / "train.tsv").string() +
            " --epochs 2 --batch 4 --threads 1 --out " + (tmp_ / "o.bert").string();
    auto r = test::run_command(base_ + " --checkpoint " + (tmp_ / "ckpt.bert").string() + " --max-steps 2 " +
                               "--checkpoint-every 1");
    ASSERT_EQ(r.exit_code, 0) << r.output;
  }
  // The checkpoint with its training_state replaced; returns bert_train --resume on it.
  test::CommandResult resume_with(const std::string& state) {
    auto f = SafetensorsFile::Open((tmp_ / "ckpt.bert").string());
    EXPECT_TRUE(f.ok());
    std::map<std::string, std::string> md = f->metadata();
    md["training_state"] = state;
    std::vector<std::pair<std::string, Tensor>> tensors(f->tensors().begin(), f->tensors().end());
    EXPECT_TRUE(write_safetensors((tmp_ / "edited.bert").string(), tensors, md).ok());
    return test::run_command("timeout 120 " + base_ + " --resume " + (tmp_ / "edited.bert").string());
  }
  test::TempDir tmp_;
  std::string base_;
};

TEST_F(TrainingState, EveryFieldIsCheckedBeforeUse) {
  // 12 examples / batch 4 = 3 batches per epoch, 2 epochs = 6 steps; the checkpoint is at step 2.
  const struct {
    const char* state;
    const char* needle;
  } cases[] = {
      {R"({"epoch": "0", "next_batch": 2, "total_steps": 6})", "training state 'epoch' must be an integer, not \"0\""},
      {R"({"epoch": 0, "next_batch": "x", "total_steps": 6})", "'next_batch' must be an integer"},
      {R"({"epoch": 0, "next_batch": 2, "total_steps": "6"})", "'total_steps' must be an integer"},
      {R"({"epoch": -1000000000, "next_batch": 2, "total_steps": 6})", "'epoch' is -1000000000; this run allows 0..2"},
      {R"({"epoch": 0, "next_batch": -1, "total_steps": 6})", "'next_batch' is -1; this run allows 0..3"},
      {R"({"epoch": 0, "next_batch": 18446744073709551615, "total_steps": 6})", "'next_batch' must be an integer"},
      {R"({"epoch": 1, "next_batch": 2, "total_steps": 6})", "holds 2 optimizer steps, but its state (epoch 1"},
      {R"({"epoch": 0, "next_batch": 2, "total_steps": 7})", "the checkpoint's run had 7 total steps"},
      {R"({"epoch": 0, "total_steps": 6})", "training state has no 'next_batch'"},
      {R"([1, 2])", "no bert_train state"},
      {R"(not json)", "no bert_train state"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.state);
    auto r = resume_with(c.state);
    EXPECT_EQ(r.exit_code, 1) << r.output;
    EXPECT_NE(r.output.find(c.needle), std::string::npos) << r.output;
  }
  // The real state resumes.
  auto r = resume_with(R"({"epoch": 0, "next_batch": 2, "total_steps": 6})");
  EXPECT_EQ(r.exit_code, 0) << r.output;
}

// ---- hangs: a FIFO is not opened -----------------------------------------------------------------

TEST(Hardening, FifoAsModelOrDataFailsAtOnce) {
  test::TempDir tmp;
  const fs::path fifo = tmp / "model.fifo";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  expect_error(check_regular_file(fifo.string(), "model file"), "not a regular file (a FIFO");
  auto m = Model::Load(fifo.string());
  ASSERT_FALSE(m.ok());
  expect_error(m.status(), "not a regular file");
  auto r = test::run_command("timeout 60 " + tool("bert_run") + " --model " + fifo.string() + " --text hi");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("not a regular file"), std::string::npos) << r.output;
  auto v = read_vocab_file(fifo.string());
  ASSERT_FALSE(v.ok());
  expect_error(v.status(), "not a regular file");
}

// ---- silently wrong ----------------------------------------------------------------------------

std::string safetensors_bytes(const std::string& header, size_t data_bytes) {
  std::string out(8, '\0');
  uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  return out + header + std::string(data_bytes, '\0');
}

TEST(Hardening, SafetensorsDuplicateKeysAreRefused) {
  test::TempDir tmp;
  const std::string header =
      R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})";
  test::write_file(tmp / "dup.safetensors", safetensors_bytes(header, 8));
  auto f = SafetensorsFile::Open((tmp / "dup.safetensors").string());
  ASSERT_FALSE(f.ok());
  expect_error(f.status(), "key 'a' appears twice");
  // The sharded index too.
  test::write_file(tmp / "model.safetensors.index.json",
                   R"({"weight_map": {"x": "a.safetensors", "x": "b.safetensors"}})");
  auto idx = load_safetensors_index((tmp / "model.safetensors.index.json").string());
  ASSERT_FALSE(idx.ok());
  expect_error(idx.status(), "key 'x' appears twice");
}

// Minimal hand-assembled pickle opcodes (protocol 2).
struct Pickle {
  std::string b;
  Pickle& op(char c) { return b.push_back(c), *this; }
  Pickle& str(const std::string& s) {
    b.push_back('X');
    for (int i = 0; i < 4; ++i) b.push_back(static_cast<char>((s.size() >> (8 * i)) & 0xff));
    b += s;
    return *this;
  }
  Pickle& small(int v) { return op('K').op(static_cast<char>(v)); }
  Pickle& global(const std::string& module, const std::string& name) {
    b.push_back('c');
    b += module + "\n" + name + "\n";
    return *this;
  }
  Pickle& tensor() {  // _rebuild_tensor_v2(('storage', torch.FloatStorage, '0', 'cpu', 1), 0, (1,), (1,), False, OrderedDict())
    global("torch._utils", "_rebuild_tensor_v2").op('(');
    op('(').str("storage").global("torch", "FloatStorage").str("0").str("cpu").small(1).op('t').op('Q');
    small(0).op('(').small(1).op('t').op('(').small(1).op('t').op('\x89');
    return global("collections", "OrderedDict").op(')').op('R').op('t').op('R');
  }
};

TEST(Hardening, PickleDuplicateNamesAndEscapedGlobals) {
  Pickle p;
  p.op('\x80').op('\x02').global("collections", "OrderedDict").op(')').op('R').op('(');
  p.str("w").tensor().str("w").tensor().op('u').op('.');
  auto r = unpickle_torch_state_dict(reinterpret_cast<const uint8_t*>(p.b.data()), p.b.size(), "dup.bin");
  ASSERT_FALSE(r.ok());
  expect_error(r.status(), "state dict names tensor 'w' twice");

  Pickle evil;
  evil.op('\x80').op('\x02').global("os\x1b]0;pwned\x07", "system").op('.');
  r = unpickle_torch_state_dict(reinterpret_cast<const uint8_t*>(evil.b.data()), evil.b.size(), "evil.bin");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().to_string().find('\x1b'), std::string::npos) << r.status().to_string();
  EXPECT_NE(r.status().message().find("os\\x1b]0;pwned\\x07"), std::string::npos) << r.status().to_string();
}

// An engine file of bert-tiny (sequence classification) with one weight set to `value`.
void write_poisoned(const fs::path& path, float value, const fs::path& vocab) {
  ASSERT_TRUE(WriteSynthetic({.preset = "bert-tiny", .architecture = "BertForSequenceClassification",
                              .vocab_path = vocab.string()},
                             path.string())
                  .ok());
  auto f = SafetensorsFile::Open(path.string());
  ASSERT_TRUE(f.ok());
  std::vector<std::pair<std::string, Tensor>> tensors;
  for (const auto& [name, t] : f->tensors()) {
    Tensor copy = make_owned_tensor(t.dtype, t.shape);
    std::memcpy(mutable_data(copy), t.data, t.nbytes());
    if (name == "head.classifier.weight") static_cast<float*>(mutable_data(copy))[3] = value;
    tensors.emplace_back(name, copy);
  }
  const auto md = f->metadata();
  ASSERT_TRUE(write_safetensors(path.string() + ".tmp", tensors, md).ok());
  fs::rename(path.string() + ".tmp", path);
}

TEST(Hardening, NonFiniteWeightsAreRefusedAtLoadAndConversion) {
  test::TempDir tmp;
  write_vocab97(tmp / "vocab.txt");
  for (float bad : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity()}) {
    SCOPED_TRACE(bad);
    write_poisoned(tmp / "nan.bert", bad, tmp / "vocab.txt");
    auto m = Model::Load((tmp / "nan.bert").string());
    ASSERT_FALSE(m.ok());
    expect_error(m.status(), "tensor 'head.classifier.weight' holds");
    expect_error(m.status(), "at element 3");
    // Conversion (engine file -> HF -> engine file) refuses too; the flag allows it.
    ASSERT_TRUE(ConvertToHf((tmp / "nan.bert").string(), (tmp / "hf").string()).ok());
    auto c = ConvertCheckpoint((tmp / "hf").string(), (tmp / "o.bert").string());
    ASSERT_FALSE(c.ok());
    expect_error(c.status(), "the weights are not finite");
    EXPECT_TRUE(ConvertCheckpoint((tmp / "hf").string(), (tmp / "o.bert").string(), {.allow_non_finite = true}).ok());
    auto r = test::run_command(tool("convert_weights") + " " + (tmp / "hf").string() + " " + (tmp / "o2.bert").string());
    EXPECT_EQ(r.exit_code, 1) << r.output;
    EXPECT_NE(r.output.find("--allow-non-finite"), std::string::npos) << r.output;
    // bert_run refuses the model, and with --allow-non-finite it still prints no prediction.
    r = test::run_command(tool("bert_run") + " --model " + (tmp / "nan.bert").string() + " --text 'good movie'");
    EXPECT_EQ(r.exit_code, 1) << r.output;
    r = test::run_command(tool("bert_run") + " --allow-non-finite --model " + (tmp / "nan.bert").string() +
                          " --text 'good movie'");
    EXPECT_EQ(r.exit_code, 1) << r.output;
    EXPECT_EQ(r.output.find("\"label\""), std::string::npos) << r.output;
    EXPECT_EQ(r.output.find("null"), std::string::npos) << r.output;
    fs::remove_all(tmp / "hf");
  }
  // check_finite on each float dtype.
  Tensor h = make_owned_tensor(DType::kF16, {4});
  static_cast<uint16_t*>(mutable_data(h))[2] = 0x7c00;  // +Inf
  expect_error(check_finite(h, "h"), "h holds +Inf at element 2");
  Tensor b = make_owned_tensor(DType::kBF16, {4});
  static_cast<uint16_t*>(mutable_data(b))[1] = 0xffc0;  // NaN
  expect_error(check_finite(b, "b"), "b holds NaN at element 1");
  EXPECT_TRUE(check_finite(make_owned_tensor(DType::kF32, {8}), "z").ok());
}

TEST(Hardening, PredictionsFromNonFiniteScoresAreErrors) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  std::vector<float> logits{0.5f, nan};
  expect_error(ClassifySequence(logits, {"NEG", "POS"}).status(), "logits[1] is NaN");
  std::vector<float> inf{INFINITY, 0.f};
  expect_error(ClassifySequence(inf, {"NEG", "POS"}).status(), "logits[0] is +inf");
  std::vector<float> minus_inf{-INFINITY, 0.f};  // would read as a confident label 1
  expect_error(ClassifySequence(minus_inf, {"NEG", "POS"}).status(), "logits[0] is -inf");
}

TEST(Hardening, TorchIndexShardsStayInsideTheDirectory) {
  test::TempDir tmp;
  ASSERT_TRUE(WriteSynthetic({.preset = "bert-tiny"}, (tmp / "tiny.bert").string()).ok());
  ASSERT_TRUE(ConvertToHf((tmp / "tiny.bert").string(), (tmp / "hf").string()).ok());
  fs::remove(tmp / "hf" / "model.safetensors");
  for (const auto& [shard, needle] : std::vector<std::pair<std::string, std::string>>{
           {"../outside.bin", "which leaves the index's directory"},
           {"sub/../../outside.bin", "which leaves the index's directory"},
           {"/etc/passwd", "which is not a path relative to the index's directory"}}) {
    SCOPED_TRACE(shard);
    test::write_file(tmp / "hf" / "pytorch_model.bin.index.json",
                     json{{"weight_map", {{"bert.embeddings.word_embeddings.weight", shard}}}}.dump());
    auto c = ConvertCheckpoint((tmp / "hf").string(), (tmp / "o.bert").string());
    ASSERT_FALSE(c.ok());
    expect_error(c.status(), needle);
  }
  test::write_file(tmp / "hf" / "pytorch_model.bin.index.json",
                   R"({"weight_map": {"a": "x.bin", "a": "y.bin"}})");
  auto c = ConvertCheckpoint((tmp / "hf").string(), (tmp / "o.bert").string());
  ASSERT_FALSE(c.ok());
  expect_error(c.status(), "key 'a' appears twice");
}

TEST(Hardening, GradsLabelsBeyondInt32AreRefused) {
  test::TempDir tmp;
  write_vocab97(tmp / "vocab.txt");
  ASSERT_TRUE(WriteSynthetic({.preset = "bert-tiny", .architecture = "BertForSequenceClassification"},
                             (tmp / "m.bert").string())
                  .ok());
  Tensor ids = make_owned_tensor(DType::kI32, {1, 4});
  for (int i = 0; i < 4; ++i) static_cast<int32_t*>(mutable_data(ids))[i] = 5 + i;
  Tensor labels = make_owned_tensor(DType::kI64, {1});
  static_cast<int64_t*>(mutable_data(labels))[0] = int64_t{1} << 32;  // was truncated to label 0
  ASSERT_TRUE(write_safetensors((tmp / "in.safetensors").string(), {{"input_ids", ids}, {"label.labels", labels}}, {})
                  .ok());
  auto r = test::run_command(tool("bert_run") + " --model " + (tmp / "m.bert").string() + " --inputs " +
                             (tmp / "in.safetensors").string() + " --outputs " + (tmp / "o.safetensors").string() +
                             " --grads");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("label.labels' holds 4294967296, beyond int32"), std::string::npos) << r.output;
}

TEST(Hardening, RegressionLabelsMustBeFiniteAndNamed) {
  auto tok = Tokenizer::FromVocab({"[PAD]", "[UNK]", "[CLS]", "[SEP]", "good", "movie"});
  ASSERT_TRUE(tok.ok());
  for (const char* bad : {"nan", "inf", "-inf", "NaN", "1e999"}) {
    SCOPED_TRACE(bad);
    auto r = data::ParseTsv(std::string("s\tlabel\ngood movie\t0.5\ngood\t") + bad + "\n", "dev.tsv", *tok,
                            {.regression = true});
    ASSERT_FALSE(r.ok());
    expect_error(r.status(), "dev.tsv:3: label '");
    expect_error(r.status(), "is not a finite number");
  }
}

TEST(Hardening, TsvHeaderDetection) {
  auto tok = Tokenizer::FromVocab({"[PAD]", "[UNK]", "[CLS]", "[SEP]", "good", "movie"});
  ASSERT_TRUE(tok.ok());
  auto headerless = data::ParseTsv("good movie\t1\nmovie\t0\n", "t.tsv", *tok, {.detect_header = true});
  ASSERT_TRUE(headerless.ok()) << headerless.status().to_string();
  EXPECT_EQ(headerless->size(), 2u);
  auto with_header = data::ParseTsv("sentence\tlabel\ngood movie\t1\n", "t.tsv", *tok, {.detect_header = true});
  ASSERT_TRUE(with_header.ok());
  EXPECT_EQ(with_header->size(), 1u);
  auto always = data::ParseTsv("good movie\t1\nmovie\t0\n", "t.tsv", *tok, {});
  ASSERT_TRUE(always.ok());
  EXPECT_EQ(always->size(), 1u);  // the default still skips the first line
}

// ---- misleading or unsafe messages -------------------------------------------------------------

// Found by fuzz/fuzz_vocab.cc: a vocab.txt of one empty line read as the token "", which a model
// file stores as "" and reads back as no vocabulary at all.
TEST(Hardening, FuzzFoundOneEmptyLineIsNotAVocabulary) {
  test::TempDir tmp;
  test::write_file(tmp / "vocab.txt", "\n");
  auto v = read_vocab_file((tmp / "vocab.txt").string());
  ASSERT_FALSE(v.ok());
  expect_error(v.status(), "empty vocabulary");
  test::write_file(tmp / "vocab2.txt", "\na\n");  // "" among other tokens is kept, as HF does
  auto v2 = read_vocab_file((tmp / "vocab2.txt").string());
  ASSERT_TRUE(v2.ok()) << v2.status().to_string();
  EXPECT_EQ(*v2, (std::vector<std::string>{"", "a"}));
  auto back = split_vocab(join_vocab(*v2));
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(*back, *v2);
}

TEST(Hardening, DirectoryWhereAFileBelongsIsNamed) {
  test::TempDir tmp;
  fs::create_directories(tmp / "vocab.txt");
  auto v = read_vocab_file((tmp / "vocab.txt").string());
  ASSERT_FALSE(v.ok());
  expect_error(v.status(), "is a directory; expected a vocab file");
  auto c = read_model_config((tmp / "vocab.txt").string());
  ASSERT_FALSE(c.ok());
  expect_error(c.status(), "is a directory; expected a config file");
  // An HF directory whose config.json is a directory.
  fs::create_directories(tmp / "hf" / "config.json");
  auto m = Model::Load((tmp / "hf").string());
  ASSERT_FALSE(m.ok());
  expect_error(m.status(), "is a directory");
  auto r = test::run_command(tool("bert_train") + " --config " + tmp.path().string() + " --vocab " +
                             (tmp / "vocab.txt").string() + " --train x --out y");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("is a directory"), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find("not valid JSON"), std::string::npos) << r.output;
}

TEST(Hardening, MessagesEscapeNonPrintableBytes) {
  EXPECT_EQ(printable("ok \xc3\xa9 text"), "ok \xc3\xa9 text");  // valid UTF-8 kept
  EXPECT_EQ(printable("a\x1b[31mb"), "a\\x1b[31mb");
  EXPECT_EQ(printable("\n\t\x7f"), "\\x0a\\x09\\x7f");
  EXPECT_EQ(printable("\xc2\x9b"), "\\xc2\\x9b");  // C1 CSI
  EXPECT_EQ(printable("\xff\xfe"), "\\xff\\xfe");  // not UTF-8
  EXPECT_EQ(printable(printable("a\x1b")), printable("a\x1b"));
  EXPECT_EQ(Status(ErrorCode::kFormatError, "x\x1b[2Jy").message(), "x\\x1b[2Jy");

  // A tensor name with an escape sequence in a safetensors header.
  test::TempDir tmp;
  const std::string header = "{\"\\u001b[2Jevil\":{\"dtype\":\"Q8\",\"shape\":[1],\"data_offsets\":[0,1]}}";
  test::write_file(tmp / "evil.safetensors", safetensors_bytes(header, 1));
  auto f = SafetensorsFile::Open((tmp / "evil.safetensors").string());
  ASSERT_FALSE(f.ok());
  EXPECT_EQ(f.status().to_string().find('\x1b'), std::string::npos);
  EXPECT_NE(f.status().message().find("\\x1b[2Jevil"), std::string::npos) << f.status().message();

  // A TSV label with one, through bert_train.
  write_vocab97(tmp / "vocab.txt");
  test::write_file(tmp / "config.json", config_with("num_labels", 2));
  test::write_file(tmp / "bad.tsv", "sentence\tlabel\ngood movie\t\x1b]0;x\x07\n");
  auto r = test::run_command(tool("bert_train") + " --config " + (tmp / "config.json").string() + " --vocab " +
                             (tmp / "vocab.txt").string() + " --train " + (tmp / "bad.tsv").string() + " --out " +
                             (tmp / "o.bert").string());
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_EQ(r.output.find('\x1b'), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("\\x1b]0;x\\x07"), std::string::npos) << r.output;
}

}  // namespace
}  // namespace bert
