// Tests for tools/bert_tokenize: runs the built executable on fixture lines (../shared) and checks
// its JSONL output against HF's ids; bad input lines and bad flags give the documented exit codes.
#include <gtest/gtest.h>

#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <sstream>

#include "tests/test_util.h"

namespace {

namespace fs = std::filesystem;

std::string quote(const fs::path& p) {
  std::string s = p.string(), out = "'";
  for (char c : s) {
    if (c == '\'') out += "'\\''";
    else out += c;
  }
  return out + "'";
}

std::string tool() { return quote(bert::test::tools_dir() / "bert_tokenize"); }

std::vector<nlohmann::json> read_fixture(const fs::path& shared) {
  std::ifstream in(shared / "fixtures" / "tokenizer_bert_uncased.jsonl");
  std::vector<nlohmann::json> cases;
  std::string line;
  while (std::getline(in, line))
    if (!line.empty()) cases.push_back(nlohmann::json::parse(line));
  return cases;
}

std::vector<std::string> lines_of(const std::string& s) {
  std::vector<std::string> out;
  std::istringstream is(s);
  std::string line;
  while (std::getline(is, line)) out.push_back(line);
  return out;
}

// run_command appends "2>&1" to the command: a subshell keeps stderr out of the redirected stdout.

// Runs the tool with `flags` on the fixture cases selected by `pick`; checks every output line.
void check_cases(const fs::path& shared, const std::string& flags,
                 const std::function<bool(const nlohmann::json&)>& pick, size_t min_cases) {
  bert::test::TempDir dir;
  std::vector<nlohmann::json> want;
  std::string input;
  for (const auto& c : read_fixture(shared)) {
    if (!pick(c)) continue;
    nlohmann::json in = {{"text", c["text"]}};
    if (c.contains("text_pair")) in["text_pair"] = c["text_pair"];
    input += in.dump() + "\n";
    want.push_back(c);
  }
  ASSERT_GE(want.size(), min_cases);
  bert::test::write_file(dir / "in.jsonl", input);
  const auto vocab = shared / "models" / "bert-base-uncased-tokenizer" / "vocab.txt";
  auto r = bert::test::run_command("(" + tool() + " --vocab " + quote(vocab) + " " + flags + " < " +
                                   quote(dir / "in.jsonl") + " > " + quote(dir / "out.jsonl") + ")");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  auto out = lines_of(bert::test::read_file(dir / "out.jsonl"));
  ASSERT_EQ(out.size(), want.size());
  for (size_t i = 0; i < out.size(); ++i) {
    auto got = nlohmann::json::parse(out[i]);
    EXPECT_EQ(got.at("input_ids"), want[i].at("input_ids")) << "case " << i << ": " << want[i]["text"];
    EXPECT_EQ(got.at("token_type_ids"), want[i].at("token_type_ids")) << "case " << i;
  }
}

TEST(BertTokenizeTool, LowerCaseMatchesFixture) {
  BERT_REQUIRE_SHARED(shared);
  size_t taken = 0;
  check_cases(shared, "", [&](const nlohmann::json& c) {
    return c["lower"].get<bool>() && !c.contains("max_length") && taken++ < 80;
  }, 40);
}

TEST(BertTokenizeTool, CasedMatchesFixture) {
  BERT_REQUIRE_SHARED(shared);
  check_cases(shared, "--no-lower-case", [](const nlohmann::json& c) {
    return !c["lower"].get<bool>() && !c.contains("max_length");
  }, 20);
}

TEST(BertTokenizeTool, MaxLengthMatchesFixture) {
  BERT_REQUIRE_SHARED(shared);
  check_cases(shared, "--max-length=64", [](const nlohmann::json& c) {
    return c["lower"].get<bool>() && c.value("max_length", 0) == 64;
  }, 1);
  check_cases(shared, "--no-lower-case --max-length 128", [](const nlohmann::json& c) {
    return !c["lower"].get<bool>() && c.value("max_length", 0) == 128;
  }, 1);
}

TEST(BertTokenizeTool, BadInputLineIsNamed) {
  BERT_REQUIRE_SHARED(shared);
  bert::test::TempDir dir;
  const auto vocab = quote(shared / "models" / "bert-base-uncased-tokenizer" / "vocab.txt");

  bert::test::write_file(dir / "bad.jsonl", "{\"text\": \"hello\"}\n{\"text\": oops\n{\"text\": \"x\"}\n");
  auto r = bert::test::run_command("(" + tool() + " --vocab " + vocab + " < " + quote(dir / "bad.jsonl") +
                                   " > " + quote(dir / "out.jsonl") + ")");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("line 2"), std::string::npos) << r.output;

  bert::test::write_file(dir / "notext.jsonl", "{\"text\": \"hello\"}\n{\"text\": \"a\"}\n{\"pair\": \"x\"}\n");
  r = bert::test::run_command("(" + tool() + " --vocab " + vocab + " < " + quote(dir / "notext.jsonl") +
                              " > " + quote(dir / "out.jsonl") + ")");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("line 3"), std::string::npos) << r.output;
  // The lines before the bad one were written.
  EXPECT_EQ(lines_of(bert::test::read_file(dir / "out.jsonl")).size(), 2u);
}

TEST(BertTokenizeTool, UsageErrors) {
  auto r = bert::test::run_command(tool() + " < /dev/null");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("usage"), std::string::npos) << r.output;
  r = bert::test::run_command(tool() + " --vocab x.txt --bogus < /dev/null");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("--bogus"), std::string::npos) << r.output;
  r = bert::test::run_command(tool() + " --vocab /nonexistent/vocab.txt < /dev/null");
  EXPECT_EQ(r.exit_code, 1) << r.output;  // bad input, not usage (tools/common/cli.h)
  EXPECT_NE(r.output.find("/nonexistent/vocab.txt"), std::string::npos) << r.output;
}

}  // namespace
