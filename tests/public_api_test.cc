// The public model-building and tensors-file API (bert/model_builder.h, bert/tensors_file.h):
// synthetic models, models from memory (engine-file bytes; config + tensors), conversion both ways,
// tensors files, and the error values for bad presets, config text, bytes and tensors.
#include <gtest/gtest.h>

#include <cstring>

#include "bert/model_builder.h"
#include "bert/tensors_file.h"
#include "tests/test_util.h"

namespace bert {
namespace {

const char* kTinyConfig = R"({"model_type": "bert", "architectures": ["BertForSequenceClassification"],
    "vocab_size": 12, "hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
    "intermediate_size": 32, "max_position_embeddings": 16, "type_vocab_size": 2})";

const std::vector<std::string> kVocab = {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "b", "c", "d", "e", "f", "g"};

// logits of one fixed batch.
std::vector<float> logits_of(const std::shared_ptr<const Model>& model) {
  auto session = Session::Create(model, {.max_batch = 1, .max_seq = 5});
  EXPECT_TRUE(session.ok()) << session.status().to_string();
  const std::vector<int32_t> ids = {2, 5, 6, 7, 3};
  EXPECT_TRUE((*session)->Run({1, 5, ids.data()}).ok());
  auto out = (*session)->Output("logits");
  EXPECT_TRUE(out.ok());
  return std::vector<float>(out->data, out->data + out->numel());
}

std::string read_bytes(const std::filesystem::path& p) { return test::read_file(p); }

TEST(Synthetic, PresetsAndConfigTextAreSeeded) {
  EXPECT_EQ(SyntheticPresets().front(), "bert-base");
  auto a = LoadSynthetic({.config_json = kTinyConfig, .seed = 7});
  auto b = LoadSynthetic({.config_json = kTinyConfig, .seed = 7});
  auto c = LoadSynthetic({.config_json = kTinyConfig, .seed = 8});
  ASSERT_TRUE(a.ok() && b.ok() && c.ok()) << a.status().to_string();
  EXPECT_EQ((*a)->info().head, "sequence_classification");
  EXPECT_EQ(logits_of(*a), logits_of(*b));
  EXPECT_NE(logits_of(*a), logits_of(*c));
  auto tiny = LoadSynthetic({.preset = "bert-tiny", .architecture = "BertForMaskedLM"}, {.pack_weights = false});
  ASSERT_TRUE(tiny.ok()) << tiny.status().to_string();
  EXPECT_EQ((*tiny)->info().hidden_size, 128);
  EXPECT_EQ((*tiny)->info().head, "masked_lm");
  // A vocab in memory rides along.
  auto with_vocab = LoadSynthetic({.config_json = kTinyConfig, .vocab = kVocab, .vocab_must_match = true});
  ASSERT_TRUE(with_vocab.ok()) << with_vocab.status().to_string();
  EXPECT_EQ((*with_vocab)->vocab(), kVocab);
}

TEST(Synthetic, BadSpecsAreErrorValues) {
  struct Case {
    SyntheticSpec spec;
    std::string needle;
  };
  std::vector<std::string> short_vocab(kVocab.begin(), kVocab.begin() + 6);
  std::vector<std::string> dup_vocab = kVocab;
  dup_vocab[7] = "a";
  const std::vector<Case> cases = {
      {{.preset = "bert-huge"}, "unknown model shape 'bert-huge'"},
      {{}, "exactly one of a preset"},
      {{.preset = "bert-tiny", .config_json = kTinyConfig}, "exactly one of a preset"},
      {{.preset = "bert-tiny", .architecture = "BertForCooking"}, "BertForCooking"},
      {{.config_json = "{\"model_type\": \"bert\", \"hidden_size\": "}, "config.json text"},
      {{.config_json = "[1, 2]", .origin = "my.json"}, "my.json"},
      {{.config_json = R"({"model_type": "gpt2", "vocab_size": 10})"}, "gpt2"},
      {{.config_json = kTinyConfig, .architecture = "BertModel"}, "goes with a preset"},
      {{.config_json = kTinyConfig, .vocab = short_vocab, .vocab_must_match = true}, "6 tokens but the config's vocab_size is 12"},
      {{.config_json = kTinyConfig, .vocab = dup_vocab}, "the vocab: embedded vocabulary: duplicate token 'a' on line 8"},
      {{.config_json = kTinyConfig, .vocab_path = "/nonexistent/vocab.txt"}, "/nonexistent/vocab.txt"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.needle);
    auto m = LoadSynthetic(c.spec);
    ASSERT_FALSE(m.ok());
    EXPECT_NE(m.status().message().find(c.needle), std::string::npos) << m.status().to_string();
  }
  // fp16 is a CUDA precision: the CPU runs fp32, bf16 and int8.
  auto fp16 = LoadSynthetic({.config_json = kTinyConfig}, {.precision = Precision::kF16});
  ASSERT_FALSE(fp16.ok());
  EXPECT_EQ(fp16.status().code(), ErrorCode::kUnsupported);
}

TEST(FromMemory, EngineFileBytesLoadLikeTheFile) {
  test::TempDir tmp;
  const auto path = tmp / "m.bert";
  auto report = WriteSynthetic({.config_json = kTinyConfig, .seed = 5, .vocab = kVocab}, path.string());
  ASSERT_TRUE(report.ok()) << report.status().to_string();
  EXPECT_EQ(report->head, "sequence_classification");
  EXPECT_EQ(report->vocab_tokens, kVocab.size());
  EXPECT_GT(report->parameters, 0);
  auto from_file = Model::Load(path.string());
  ASSERT_TRUE(from_file.ok());
  const std::string bytes = read_bytes(path);
  auto from_bytes = LoadFromMemory(std::span(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()));
  ASSERT_TRUE(from_bytes.ok()) << from_bytes.status().to_string();
  EXPECT_EQ(logits_of(*from_file), logits_of(*from_bytes));
  EXPECT_EQ((*from_bytes)->vocab(), kVocab);
}

TEST(FromMemory, BadBytesAreNamedByTheCallersName) {
  auto span_of = [](const std::string& s) { return std::span(reinterpret_cast<const uint8_t*>(s.data()), s.size()); };
  struct Case {
    std::string bytes, needle;
  };
  std::string huge_header(16, '\0');
  huge_header[0] = '\xff', huge_header[1] = '\xff', huge_header[2] = '\xff';
  std::string not_json = std::string("\x04\0\0\0\0\0\0\0", 8) + "abcd";
  std::string plain = std::string("\x08\0\0\0\0\0\0\0", 8) + "{}      ";
  const std::vector<Case> cases = {
      {"", "upload.bert: file is 0 bytes"},
      {"abc", "upload.bert: file is 3 bytes"},
      {huge_header, "upload.bert: header length"},
      {not_json, "upload.bert: header is not"},
      {plain, "upload.bert: not an engine model file"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.needle);
    auto m = LoadFromMemory(span_of(c.bytes), {}, "upload.bert");
    ASSERT_FALSE(m.ok());
    EXPECT_NE(m.status().message().find(c.needle), std::string::npos) << m.status().to_string();
    EXPECT_EQ(m.status().message().find("/proc/self/fd"), std::string::npos) << m.status().to_string();
  }
  // A valid engine file cut short.
  test::TempDir tmp;
  ASSERT_TRUE(WriteSynthetic({.config_json = kTinyConfig}, (tmp / "m.bert").string()).ok());
  const std::string bytes = read_bytes(tmp / "m.bert");
  auto cut = LoadFromMemory(span_of(bytes.substr(0, bytes.size() - 100)), {}, "cut.bert");
  ASSERT_FALSE(cut.ok());
  EXPECT_NE(cut.status().message().find("cut.bert"), std::string::npos) << cut.status().to_string();
}

TEST(FromMemory, ConfigAndHfTensorsMatchTheConvertedFile) {
  test::TempDir tmp;
  ASSERT_TRUE(WriteSynthetic({.config_json = kTinyConfig, .seed = 9}, (tmp / "m.bert").string()).ok());
  auto hf = ConvertToHf((tmp / "m.bert").string(), (tmp / "hf").string());
  ASSERT_TRUE(hf.ok()) << hf.status().to_string();
  auto weights = ReadTensorsFile((tmp / "hf" / "model.safetensors").string());
  ASSERT_TRUE(weights.ok()) << weights.status().to_string();
  ModelParts parts;
  parts.config_json = test::read_file(tmp / "hf" / "config.json");
  for (const auto& [name, t] : weights->tensors) parts.tensors.emplace_back(name, t);
  auto from_parts = LoadFromMemory(parts);
  ASSERT_TRUE(from_parts.ok()) << from_parts.status().to_string();
  auto from_file = Model::Load((tmp / "m.bert").string());
  ASSERT_TRUE(from_file.ok());
  EXPECT_EQ(logits_of(*from_parts), logits_of(*from_file));
  // Tensors given as views without an owner are copied: the caller may free them afterwards.
  ModelParts views = parts;
  std::vector<std::vector<uint8_t>> buffers;
  for (auto& [name, t] : views.tensors) {
    buffers.emplace_back(static_cast<const uint8_t*>(t.data), static_cast<const uint8_t*>(t.data) + t.nbytes());
    t.data = buffers.back().data();
    t.owner.reset();
  }
  auto from_views = LoadFromMemory(views);
  ASSERT_TRUE(from_views.ok()) << from_views.status().to_string();
  for (auto& b : buffers) std::fill(b.begin(), b.end(), uint8_t(0xff));
  EXPECT_EQ(logits_of(*from_views), logits_of(*from_file));
  // A missing tensor, a wrong shape and bad config text are named.
  ModelParts missing = parts;
  const std::string dropped = missing.tensors.back().first;
  missing.tensors.pop_back();
  auto m = LoadFromMemory(missing);
  ASSERT_FALSE(m.ok());
  EXPECT_NE(m.status().message().find(dropped), std::string::npos) << m.status().to_string();
  ModelParts bad_config = parts;
  bad_config.config_json = "{not json";
  bad_config.origin = "request 17";
  m = LoadFromMemory(bad_config);
  ASSERT_FALSE(m.ok());
  EXPECT_NE(m.status().message().find("request 17"), std::string::npos) << m.status().to_string();
  ModelParts engine_names = parts;
  engine_names.hf_names = false;  // HF names are not the engine's
  EXPECT_FALSE(LoadFromMemory(engine_names).ok());
}

TEST(Convert, CheckpointToEngineFileWithDtypeAndVocab) {
  test::TempDir tmp;
  ASSERT_TRUE(WriteSynthetic({.config_json = kTinyConfig, .seed = 2}, (tmp / "m.bert").string()).ok());
  ASSERT_TRUE(ConvertToHf((tmp / "m.bert").string(), (tmp / "hf").string()).ok());
  std::string vocab;
  for (const auto& t : kVocab) vocab += t + "\n";
  test::write_file(tmp / "vocab.txt", vocab);
  auto r = ConvertCheckpoint((tmp / "hf").string(), (tmp / "half.bert").string(),
                             {.dtype = DType::kF16, .vocab_path = (tmp / "vocab.txt").string()});
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_EQ(r->vocab_tokens, kVocab.size());
  EXPECT_EQ(r->architecture, "BertForSequenceClassification");
  EXPECT_TRUE(r->unused_hf_tensors.empty());
  auto half = Model::Load((tmp / "half.bert").string());
  ASSERT_TRUE(half.ok());
  EXPECT_EQ((*half)->info().weights_dtype, "F16");
  EXPECT_EQ((*half)->vocab(), kVocab);
  auto bad_dtype = ConvertCheckpoint((tmp / "hf").string(), (tmp / "x.bert").string(), {.dtype = DType::kI32});
  ASSERT_FALSE(bad_dtype.ok());
  EXPECT_NE(bad_dtype.status().message().find("I32"), std::string::npos);
  auto missing = ConvertCheckpoint((tmp / "nope").string(), (tmp / "x.bert").string());
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("nope"), std::string::npos);
  test::write_file(tmp / "big_vocab.txt", vocab + "h\ni\n");
  auto too_many = ConvertCheckpoint((tmp / "hf").string(), (tmp / "x.bert").string(),
                                    {.vocab_path = (tmp / "big_vocab.txt").string()});
  ASSERT_FALSE(too_many.ok());
  EXPECT_NE(too_many.status().message().find("14 tokens"), std::string::npos) << too_many.status().to_string();
}

TEST(TensorsFile, RoundTripAndErrors) {
  test::TempDir tmp;
  auto f = FloatTensor({1.5f, -2.f, 3.f, 4.f, 5.f, 6.f}, {2, 3});
  auto i32 = Int32Tensor({1, 2}, {2});
  auto i64 = Int64Tensor({7, int64_t(1) << 40}, {1, 2});
  ASSERT_TRUE(f.ok() && i32.ok() && i64.ok());
  const float loss = 0.25f;
  ASSERT_TRUE(WriteTensorsFile((tmp / "t.safetensors").string(),
                               {{"f", *f}, {"i32", *i32}, {"i64", *i64}, {"loss", FloatView(&loss, {1})}},
                               {{"producer", "test"}})
                  .ok());
  auto r = ReadTensorsFile((tmp / "t.safetensors").string());
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_EQ(r->metadata.at("producer"), "test");
  ASSERT_NE(r->find("f"), nullptr);
  EXPECT_EQ(r->find("f")->shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(r->find("f")->as<float>()[1], -2.f);
  EXPECT_EQ(r->find("loss")->as<float>()[0], 0.25f);
  EXPECT_EQ(r->find("nothing"), nullptr);
  auto ints = TensorToInt32(*r->find("i32"), "i32");
  ASSERT_TRUE(ints.ok());
  EXPECT_EQ(*ints, (std::vector<int32_t>{1, 2}));
  auto wide = TensorToInt32(*r->find("i64"), "tensor 'i64'");
  ASSERT_FALSE(wide.ok());
  EXPECT_NE(wide.status().message().find("tensor 'i64' holds 1099511627776, beyond int32"), std::string::npos);
  auto floats = TensorToInt32(*r->find("f"), "f");
  ASSERT_FALSE(floats.ok());
  EXPECT_NE(floats.status().message().find("dtype F32"), std::string::npos);
  EXPECT_EQ(ShapeString({2, 3}), "[2, 3]");
  // Shapes that do not hold the values, unreadable files, tensors without data.
  EXPECT_FALSE(FloatTensor({1.f, 2.f}, {3}).ok());
  EXPECT_FALSE(Int32Tensor({1}, {-1}).ok());
  test::write_file(tmp / "junk.safetensors", "junk");
  auto junk = ReadTensorsFile((tmp / "junk.safetensors").string());
  ASSERT_FALSE(junk.ok());
  EXPECT_NE(junk.status().message().find("junk.safetensors"), std::string::npos);
  EXPECT_FALSE(ReadTensorsFile((tmp / "absent.safetensors").string()).ok());
  EXPECT_FALSE(WriteTensorsFile((tmp / "n.safetensors").string(), {{"x", FloatView(nullptr, {2})}}).ok());
}

}  // namespace
}  // namespace bert
