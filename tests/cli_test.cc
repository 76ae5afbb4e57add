// The tools' shared option parser (tools/common/cli.h), and each tool's use of it: unknown option,
// missing value, bad number and out-of-range value are each named, usage errors exit 2, --help lists
// every flag with its default and the exit codes, and --threads has one bound everywhere.
#include "tools/common/cli.h"

#include <gtest/gtest.h>

#include "bert/engine.h"
#include "bert/model_builder.h"
#include "bert/train.h"
#include "tests/test_util.h"

namespace {

struct Args {
  std::vector<std::string> v;
  std::vector<const char*> argv() const {
    std::vector<const char*> a{"tool"};
    for (const auto& s : v) a.push_back(s.c_str());
    return a;
  }
};

std::optional<int> parse(cli::Parser& p, std::vector<std::string> args) {
  Args a{std::move(args)};
  auto argv = a.argv();
  return p.parse(static_cast<int>(argv.size()), argv.data());
}

TEST(Cli, ParsesEveryKind) {
  std::string s, c = "a";
  int n = 3;
  int64_t big = 0;
  double r = 0.5;
  bool f = false;
  std::vector<std::string> pos;
  cli::Parser p("tool", "tool [options]");
  p.string("--s", &s, "S", "a string");
  p.choice("--c", &c, {"a", "b"}, "a choice");
  p.integer("--n", &n, 0, 10, "an int");
  p.integer("--big", &big, -5, INT64_MAX, "an int64");
  p.real("--r", &r, 0, 1, "a real");
  p.flag("--f", &f, "a flag");
  p.positional(&pos, 2, "X Y");
  EXPECT_EQ(parse(p, {"--s", "-dash", "--c=b", "--n", "7", "--big", "-5", "--r", "1e-1", "--f", "x", "y"}),
            std::nullopt);
  EXPECT_EQ(s, "-dash");
  EXPECT_EQ(c, "b");
  EXPECT_EQ(n, 7);
  EXPECT_EQ(big, -5);
  EXPECT_DOUBLE_EQ(r, 0.1);
  EXPECT_TRUE(f);
  EXPECT_EQ(pos, (std::vector<std::string>{"x", "y"}));
  EXPECT_TRUE(p.given("--n"));
  EXPECT_FALSE(p.given("--zzz"));
}

TEST(Cli, ErrorsAreNamedAndExitTwo) {
  int n = 0;
  double r = 0;
  std::string c = "a";
  cli::Parser p("tool", "tool [options]");
  p.integer("--n", &n, 0, 1024, "an int");
  p.real("--r", &r, 0, 1, "a real");
  p.choice("--c", &c, {"a", "b"}, "a choice");
  testing::internal::CaptureStderr();
  EXPECT_EQ(parse(p, {"--bogus"}), 2);
  EXPECT_EQ(parse(p, {"--n"}), 2);
  EXPECT_EQ(parse(p, {"--n", "x1"}), 2);
  EXPECT_EQ(parse(p, {"--n", "99999"}), 2);
  EXPECT_EQ(parse(p, {"--n", "99999999999999999999999"}), 2);
  EXPECT_EQ(parse(p, {"--r", "nan"}), 2);
  EXPECT_EQ(parse(p, {"--r", "2"}), 2);
  EXPECT_EQ(parse(p, {"--c", "z"}), 2);
  EXPECT_EQ(parse(p, {"stray"}), 2);
  EXPECT_EQ(parse(p, {"--n", "\x1b[31m"}), 2);
  const std::string err = testing::internal::GetCapturedStderr();
  for (const char* needle :
       {"tool: unknown option --bogus\n", "tool: option --n needs a value\n", "tool: --n: 'x1' is not an integer\n",
        "tool: --n: 99999 is out of range 0..1024\n", "tool: --n: 99999999999999999999999 is out of range",
        "tool: --r: 'nan' is not a finite number\n", "tool: --r: 2 is out of range 0..1\n",
        "tool: --c: 'z' is not a or b\n", "tool: unexpected argument stray\n", "'\\x1b[31m' is not an integer",
        "usage: tool [options]\n"})
    EXPECT_NE(err.find(needle), std::string::npos) << needle << "\n" << err;
  EXPECT_EQ(err.find('\x1b'), std::string::npos) << "raw escape byte reached the terminal";
}

TEST(Cli, HelpListsEveryFlagWithItsDefault) {
  int n = 3;
  std::string c = "a", s;
  bool f = false;
  cli::Parser p("tool", "tool [options]", "What it does.");
  p.integer("--n", &n, 0, 10, "an int");
  p.choice("--c", &c, {"a", "b"}, "a choice");
  p.string("--s", &s, "S", "a string", "the model's");
  p.flag("--f", &f, "a flag");
  const std::string h = p.help();
  for (const char* needle : {"usage: tool [options]", "What it does.", "--n N", "an int (default: 3)",
                             "--c a|b", "a choice (default: a)", "a string (default: the model's)",
                             "a flag (default: off)", "--help", "exit status: 0 success, 1 bad input", "2 usage"})
    EXPECT_NE(h.find(needle), std::string::npos) << needle << "\n" << h;
  testing::internal::CaptureStdout();
  EXPECT_EQ(parse(p, {"--help"}), 0);
  EXPECT_EQ(testing::internal::GetCapturedStdout(), h);
}

TEST(Cli, PassThroughKeepsForeignFlags) {
  std::vector<std::string> rest;
  std::string m;
  cli::Parser p("bench", "bench");
  p.string("--model", &m, "F", "m");
  p.pass_through("--benchmark_", &rest);
  EXPECT_EQ(parse(p, {"--benchmark_filter=x", "--model=f", "--benchmark_min_time=0.1"}), std::nullopt);
  EXPECT_EQ(m, "f");
  EXPECT_EQ(rest, (std::vector<std::string>{"--benchmark_filter=x", "--benchmark_min_time=0.1"}));
}

// Every tool: the same messages, the same exit codes, the same --threads bound.
std::string tool(const char* name) { return (bert::test::tools_dir() / name).string(); }

TEST(CliTools, EveryToolNamesOptionErrorsTheSameWay) {
  for (const char* name : {"bert_run", "bert_train", "bert_tokenize", "convert_weights"}) {
    SCOPED_TRACE(name);
    auto r = bert::test::run_command(tool(name) + " --bogus 2>&1");
    EXPECT_EQ(r.exit_code, 2) << r.output;
    EXPECT_NE(r.output.find("unknown option --bogus"), std::string::npos) << r.output;
    r = bert::test::run_command(tool(name) + " --help");
    EXPECT_EQ(r.exit_code, 0) << r.output;
    EXPECT_NE(r.output.find("(default: "), std::string::npos) << r.output;
    EXPECT_NE(r.output.find("exit status"), std::string::npos) << r.output;
  }
  for (const char* name : {"bert_run", "bert_train"}) {
    SCOPED_TRACE(name);
    auto r = bert::test::run_command(tool(name) + " --threads 99999");
    EXPECT_EQ(r.exit_code, 2) << r.output;
    EXPECT_NE(r.output.find("--threads: 99999 is out of range 0.." + std::to_string(bert::kMaxThreads)),
              std::string::npos)
        << r.output;
    r = bert::test::run_command(tool(name) + " --threads");
    EXPECT_EQ(r.exit_code, 2) << r.output;
    EXPECT_NE(r.output.find("option --threads needs a value"), std::string::npos) << r.output;
    r = bert::test::run_command(tool(name) + " --threads two");
    EXPECT_NE(r.output.find("--threads: 'two' is not an integer"), std::string::npos) << r.output;
  }
  auto r = bert::test::run_command(tool("bert_train") + " --lr 1e9");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("--lr: 1e9 is out of range"), std::string::npos) << r.output;
}

TEST(CliTools, TheThreadsBoundItselfRuns) {  // 99999 crashed inside OpenMP; the bound must not
  bert::test::TempDir tmp;
  bert::test::write_file(tmp / "vocab.txt", "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\ngood\nmovie\n");
  auto r = bert::test::run_command(tool("convert_weights") + " --synthetic bert-tiny " + (tmp / "m.bert").string() +
                                   " --vocab " + (tmp / "vocab.txt").string());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  r = bert::test::run_command(tool("bert_run") + " --model " + (tmp / "m.bert").string() + " --text 'good movie' " +
                              "--threads " + std::to_string(bert::kMaxThreads));
  EXPECT_EQ(r.exit_code, 0) << r.output;
}

TEST(CliTools, SessionAndTrainerShareTheThreadsBound) {
  auto model = bert::LoadSynthetic({.preset = "bert-tiny", .seed = 1});
  ASSERT_TRUE(model.ok()) << model.status().to_string();
  bert::SessionOptions so;
  so.max_seq = 8;
  so.num_threads = bert::kMaxThreads + 1;
  auto s = bert::Session::Create(*model, so);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.status().message().find("num_threads 1025 must be in 0..1024"), std::string::npos)
      << s.status().to_string();
  bert::TrainerOptions to;
  to.max_seq = 8, to.num_threads = 99999;
  auto t = bert::Trainer::Create(*model, to);
  ASSERT_FALSE(t.ok());
  EXPECT_NE(t.status().message().find("num_threads 99999 must be in 0..1024"), std::string::npos)
      << t.status().to_string();
}

}  // namespace
