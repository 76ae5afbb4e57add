// Issue 16's new-user friction items, end to end through the tools: bert_tokenize output that feeds
// bert_run (attention_mask, --pad-to, --safetensors, id passthrough), bert_run --text-file, and
// bert_train on a headerless TSV with --labels.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "bert/predict.h"
#include "bert/tensors_file.h"
#include "bert/tokenizer.h"
#include "tests/test_util.h"

namespace bert {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

std::string tool(const char* name) { return (test::tools_dir() / name).string(); }

std::vector<json> json_lines(const std::string& text) {
  std::vector<json> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);)
    if (!line.empty() && line[0] == '{') out.push_back(json::parse(line));
  return out;
}

class Friction : public ::testing::Test {
 protected:
  void SetUp() override {
    std::ofstream f(tmp_ / "vocab.txt");
    for (const char* t : {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "cat", "sat", "on", "mat", "a", "dog",
                          "##s", ".", "paris", "is", "in", "france", "where", "good", "bad", "movie"})
      f << t << "\n";
    f.close();
    for (const char* arch : {"BertForSequenceClassification", "BertForQuestionAnswering", "BertForTokenClassification"}) {
      auto r = test::run_command(tool("convert_weights") + " --synthetic bert-tiny --architecture " + arch + " " +
                                 model(arch) + " --vocab " + (tmp_ / "vocab.txt").string());
      ASSERT_EQ(r.exit_code, 0) << r.output;
    }
  }
  std::string model(const char* arch) const { return (tmp_ / (std::string(arch) + ".bert")).string(); }
  test::TempDir tmp_;
};

// QA answers come from the original context with character offsets, not word pieces joined.
TEST(FrictionQa, AnswersAreCutFromTheOriginalTextWithCharacterOffsets) {
  auto tok = Tokenizer::FromVocab({"[PAD]", "[UNK]", "[CLS]", "[SEP]", "where", "is", "paris", "in", "france",
                                   "the", "country", "'", "s", "capital", ",", ".", "(", ")", "中", "##ly", "nice"});
  ASSERT_TRUE(tok.ok());
  const std::string question = "Where is Paris?";
  const std::string context = "Paris is in  Fr\xc3\xa1nce, the country's \xe4\xb8\xad capital \x01(nicely) zzz.";
  auto enc = tok->Encode(question, std::string_view(context));
  ASSERT_TRUE(enc.ok());
  auto pos = [&](const std::string& t, int nth = 0) {
    for (size_t s = 0; s < enc->tokens.size(); ++s)
      if (enc->tokens[s] == t && enc->token_type_ids[s] == 1 && nth-- == 0) return static_cast<int>(s);
    return -1;
  };
  struct Case {
    int start, end;
    std::string text;
    int64_t start_char, chars;
  } cases[] = {
      {pos("france"), pos("france"), "Fr\xc3\xa1nce", 13, 6},      // accents and a double space
      {pos("the"), pos("s"), "the country's", 21, 13},               // punctuation inside
      {pos("中"), pos("capital"), "\xe4\xb8\xad capital", 35, 9},  // CJK: one character
      {pos("("), pos(")"), "(nicely)", 46, 8},                       // after a control character
      {pos("[UNK]"), pos("."), "zzz.", 55, 4},                       // [UNK] covers its word
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.text);
    ASSERT_GE(c.start, 0);
    auto a = LocateAnswer({c.start, c.end, 0.5, "joined"}, *enc, context, true);
    ASSERT_TRUE(a.ok()) << a.status().to_string();
    EXPECT_EQ(a->text, c.text);
    EXPECT_EQ(a->start_char, c.start_char);
    EXPECT_EQ(a->end_char - a->start_char, c.chars);
  }
  // A span outside the context and pieces that do not belong to the text are errors, not guesses.
  EXPECT_FALSE(LocateAnswer({1, 2, 0.5, ""}, *enc, context, true).ok());
  EXPECT_FALSE(AlignWordPieces("abc", {"x"}, true).has_value());
}

TEST_F(Friction, BertRunQaPrintsCharacterOffsetsIntoTheContext) {
  const std::string context = "Paris is in  France, the capital.";
  auto r = test::run_command(tool("bert_run") + " --model " + model("BertForQuestionAnswering") +
                             " --text 'where is paris' --text-pair '" + context + "'");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const json j = json::parse(r.output);
  ASSERT_TRUE(j.contains("start") && j.contains("end")) << r.output;
  const size_t start = j["start"].get<size_t>(), end = j["end"].get<size_t>();
  ASSERT_LE(end, context.size());
  EXPECT_EQ(j["answer"].get<std::string>(), context.substr(start, end - start)) << r.output;
}

TEST_F(Friction, BertTokenizeFeedsBertRun) {
  test::write_file(tmp_ / "in.jsonl", "{\"text\": \"the cat sat\", \"id\": \"first\"}\n\n"
                                      "{\"text\": \"a dog\", \"text_pair\": \"the mat\", \"id\": 2}\n");
  auto r = test::run_command("(" + tool("bert_tokenize") + " --vocab " + (tmp_ / "vocab.txt").string() +
                             " --pad-to 8 --safetensors " + (tmp_ / "batch.safetensors").string() + " < " +
                             (tmp_ / "in.jsonl").string() + " > " + (tmp_ / "out.jsonl").string() + ")");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  auto lines = json_lines(test::read_file(tmp_ / "out.jsonl"));
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(lines[0]["id"], "first");
  EXPECT_EQ(lines[1]["id"], 2);
  EXPECT_EQ(lines[0]["input_ids"], json({2, 5, 6, 7, 3, 0, 0, 0}));
  EXPECT_EQ(lines[0]["attention_mask"], json({1, 1, 1, 1, 1, 0, 0, 0}));
  EXPECT_EQ(lines[1]["token_type_ids"], json({0, 0, 0, 0, 1, 1, 1, 0}));
  auto f = ReadTensorsFile((tmp_ / "batch.safetensors").string());
  ASSERT_TRUE(f.ok()) << f.status().to_string();
  for (const char* name : {"input_ids", "attention_mask", "token_type_ids"}) {
    ASSERT_NE(f->find(name), nullptr) << name;
    EXPECT_EQ(f->find(name)->shape, (std::vector<int64_t>{2, 8})) << name;
  }
  r = test::run_command(tool("bert_run") + " --model " + model("BertForSequenceClassification") + " --inputs " +
                        (tmp_ / "batch.safetensors").string() + " --outputs " + (tmp_ / "o.safetensors").string());
  EXPECT_EQ(r.exit_code, 0) << r.output;
  // A bad line is named; an id that is not a string or number is refused.
  test::write_file(tmp_ / "bad.jsonl", "{\"text\": \"a\", \"id\": [1]}\n");
  r = test::run_command(tool("bert_tokenize") + " --vocab " + (tmp_ / "vocab.txt").string() + " < " +
                        (tmp_ / "bad.jsonl").string());
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("line 1: \"id\" must be a string or a number"), std::string::npos) << r.output;
}

TEST_F(Friction, BertRunTextFileLoadsOnceAndPrintsJsonLines) {
  test::write_file(tmp_ / "texts.txt", "good movie\n\nthe cat\tsat on the mat\n"
                                       "{\"text\": \"bad movie\", \"id\": \"r3\"}\n");
  auto r = test::run_command(tool("bert_run") + " --model " + model("BertForSequenceClassification") +
                             " --text-file " + (tmp_ / "texts.txt").string());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  auto lines = json_lines(r.output);
  ASSERT_EQ(lines.size(), 3u) << r.output;
  for (const json& j : lines) EXPECT_TRUE(j.contains("label")) << j.dump();
  EXPECT_EQ(lines[1]["tokens"], json({"[CLS]", "the", "cat", "[SEP]", "sat", "on", "the", "mat", "[SEP]"}));
  EXPECT_EQ(lines[2]["id"], "r3");
  // The same through stdin, and --text mode prints one line too.
  r = test::run_command("printf 'good movie\\n' | " + tool("bert_run") + " --model " +
                        model("BertForSequenceClassification") + " --text-file -");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(json_lines(r.output).size(), 1u) << r.output;
  r = test::run_command(tool("bert_run") + " --model " + model("BertForSequenceClassification") + " --text 'a dog'");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(std::count(r.output.begin(), r.output.end(), '\n'), 1) << r.output;
  // A bad line is named.
  test::write_file(tmp_ / "bad.txt", "good\n{\"text\": 1}\n");
  r = test::run_command(tool("bert_run") + " --model " + model("BertForSequenceClassification") + " --text-file " +
                        (tmp_ / "bad.txt").string());
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("bad.txt:2"), std::string::npos) << r.output;
}

TEST_F(Friction, BertTrainHeaderlessTsvLabelsAndProgressLines) {
  // No header: with --header auto every line is an example (16, not 15).
  std::string tsv;
  for (int i = 0; i < 16; ++i) tsv += i % 2 ? "good movie\t1\n" : "bad movie\t0\n";
  test::write_file(tmp_ / "train.tsv", tsv);
  test::write_file(tmp_ / "config.json",
                   R"({"model_type": "bert", "architectures": ["BertForSequenceClassification"], "vocab_size": 22,
                       "hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 8,
                       "max_position_embeddings": 16})");
  const std::string base = tool("bert_train") + " --config " + (tmp_ / "config.json").string() + " --vocab " +
                           (tmp_ / "vocab.txt").string() + " --train " + (tmp_ / "train.tsv").string() +
                           " --epochs 1 --batch 4 --threads 1 --out " + (tmp_ / "labels.bert").string();
  auto r = test::run_command(base + " --labels NEG,POS --progress-every 0");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("16 examples"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("epoch 1/1 batch 1/4 loss"), std::string::npos) << r.output;  // stderr is not a TTY
  r = test::run_command(tool("bert_run") + " --model " + (tmp_ / "labels.bert").string() + " --text 'good movie'");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const json j = json::parse(r.output);
  EXPECT_TRUE(j["label"] == "NEG" || j["label"] == "POS") << r.output;
  EXPECT_TRUE(j["probabilities"].contains("POS")) << r.output;
  // --header yes keeps the old behaviour; a header line is still detected by auto.
  r = test::run_command(base + " --header yes");
  EXPECT_NE(r.output.find("15 examples"), std::string::npos) << r.output;
  test::write_file(tmp_ / "train.tsv", "sentence\tlabel\n" + tsv);
  r = test::run_command(base);
  EXPECT_NE(r.output.find("16 examples"), std::string::npos) << r.output;
  // Bad --labels are named.
  r = test::run_command(base + " --labels NEG,,POS");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("label 1 is empty"), std::string::npos) << r.output;
  r = test::run_command(base + " --labels A,A");
  EXPECT_NE(r.output.find("'A' appears twice"), std::string::npos) << r.output;
}

}  // namespace
}  // namespace bert
