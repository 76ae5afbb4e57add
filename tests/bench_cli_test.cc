// bert_bench's own options go through the shared parser: a model file that does not load is an
// error (exit 1), not a benchmark skipped with "ERROR OCCURRED" and exit 0 (issue 16).
#include <gtest/gtest.h>

#include <filesystem>

#include "tests/test_util.h"

namespace bert {
namespace {

TEST(BenchCli, BrokenModelFileExitsNonZero) {
  const auto bench = test::binary_dir() / "bench" / "bert_bench";
  if (!std::filesystem::exists(bench)) GTEST_SKIP() << "bert_bench is not built (BERT_BUILD_BENCH=OFF)";
  test::TempDir tmp;
  test::write_file(tmp / "broken.bert", "not a model");
  auto r = test::run_command(bench.string() + " --model " + (tmp / "broken.bert").string() +
                             " --benchmark_filter=BM_ModelLoad");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("broken.bert"), std::string::npos) << r.output;
  r = test::run_command(bench.string() + " --model");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("option --model needs a value"), std::string::npos) << r.output;
  r = test::run_command(bench.string() + " --help");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("--profile"), std::string::npos) << r.output;
}

}  // namespace
}  // namespace bert
