// Sentence embeddings: the pooling kernel against a straightforward reference at awkward sizes, and
// `bert_run --pooling` on the fixtures against pooling computed here from transformers' own last
// hidden state (golden hidden_states.L), for every mode with and without --normalize.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "kernels/pooling.h"
#include "tests/test_util.h"
#include "weights/safetensors.h"

namespace bert {
namespace {

using kernels::TokenPooling;

// Pooling as sentence-transformers writes it: (h * mask).sum / mask.sum, max over h where masked
// positions are pushed to -inf, the first row for CLS; then F.normalize.
std::vector<float> expected_pooling(const float* h, const int32_t* mask, int64_t B, int64_t S, int64_t W,
                                    TokenPooling kind, bool normalize) {
  std::vector<float> out(B * W, 0.f);
  for (int64_t b = 0; b < B; ++b) {
    double norm = 0;
    std::vector<double> row(W, 0.0);
    for (int64_t d = 0; d < W; ++d) {
      double sum = 0, count = 0, mx = -std::numeric_limits<double>::infinity();
      for (int64_t s = 0; s < S; ++s) {
        if (mask && !mask[b * S + s]) continue;
        sum += h[(b * S + s) * W + d], count += 1, mx = std::max(mx, double(h[(b * S + s) * W + d]));
      }
      row[d] = kind == TokenPooling::kCls ? h[b * S * W + d] : count == 0 ? 0.0 : kind == TokenPooling::kMean ? sum / count : mx;
      norm += row[d] * row[d];
    }
    for (int64_t d = 0; d < W; ++d)
      out[b * W + d] = static_cast<float>(normalize ? row[d] / std::max(std::sqrt(norm), 1e-12) : row[d]);
  }
  return out;
}

TEST(Pooling, KernelMatchesReferenceAtAwkwardSizes) {
  for (int64_t B : {1, 3})
    for (int64_t S : {1, 7, 16, 33})
      for (int64_t W : {1, 15, 64, 100})
        for (TokenPooling kind : {TokenPooling::kCls, TokenPooling::kMean, TokenPooling::kMax})
          for (bool normalize : {false, true})
            for (bool with_mask : {false, true}) {
              SCOPED_TRACE(::testing::Message() << B << "x" << S << "x" << W << " kind " << int(kind) << " norm "
                                                << normalize << " mask " << with_mask);
              auto h = test::random_floats(B * S * W, 4);
              std::vector<int32_t> mask(B * S, 1);
              for (int64_t b = 0; b < B; ++b)  // row b keeps its first S - b positions (at least one)
                for (int64_t s = std::max<int64_t>(1, S - b); s < S; ++s) mask[b * S + s] = 0;
              std::vector<float> got(B * W, -7.f);
              kernels::PoolArgs a{h.data(), with_mask ? mask.data() : nullptr, got.data(), B, S, W, kind, normalize};
              kernels::pool_tokens_f32_ref(a);
              auto want = expected_pooling(h.data(), with_mask ? mask.data() : nullptr, B, S, W, kind, normalize);
              ASSERT_LE(test::max_abs_diff(got.data(), want.data(), got.size()), 1e-6);
              ASSERT_GT(test::max_abs(got.data(), got.size()), 0.0);
            }
}

TEST(Pooling, MaskedTokensDoNotCountAndEmptyRowsPoolToZero) {
  // Masked positions hold huge values: any leak into mean or max shows.
  const int64_t S = 4, W = 3;
  std::vector<float> h = {1, 2, 3, 3, 2, 1, 1e6f, 1e6f, 1e6f, -1e6f, -1e6f, -1e6f,  // row 0: 2 tokens
                          5, 5, 5, 6, 6, 6, 7, 7, 7, 8, 8, 8};                        // row 1: no token
  std::vector<int32_t> mask = {1, 1, 0, 0, 0, 0, 0, 0};
  std::vector<float> out(2 * W);
  kernels::pool_tokens_f32_ref({h.data(), mask.data(), out.data(), 2, S, W, TokenPooling::kMean, false});
  EXPECT_EQ(std::vector<float>(out.begin(), out.end()), (std::vector<float>{2, 2, 2, 0, 0, 0}));
  kernels::pool_tokens_f32_ref({h.data(), mask.data(), out.data(), 2, S, W, TokenPooling::kMax, false});
  EXPECT_EQ(std::vector<float>(out.begin(), out.end()), (std::vector<float>{3, 2, 3, 0, 0, 0}));
  kernels::pool_tokens_f32_ref({h.data(), mask.data(), out.data(), 2, S, W, TokenPooling::kCls, true});
  EXPECT_NEAR(out[0] * out[0] + out[1] * out[1] + out[2] * out[2], 1.0, 1e-6);
  EXPECT_NEAR(out[3], 1 / std::sqrt(3.0), 1e-6);  // CLS ignores the mask
}

// bert_run --pooling on fixtures of three families, every mode, against the golden last layer.
TEST(Pooling, BertRunMatchesPoolingOfGoldenLastHiddenState) {
  BERT_REQUIRE_SHARED(shared);
  test::TempDir tmp;
  for (const char* fixture : {"bert-base-model", "distilbert-seqcls", "electra-seqcls"}) {
    const auto dir = shared / "fixtures" / fixture;
    const std::string golden_path = (dir / "golden.safetensors").string();
    auto golden = SafetensorsFile::Open(golden_path);
    ASSERT_TRUE(golden.ok()) << golden.status().to_string();
    const Tensor* mask = golden->find("attention_mask");
    ASSERT_NE(mask, nullptr);
    int layers = 0;
    while (golden->find("hidden_states." + std::to_string(layers + 1))) ++layers;
    const Tensor* last = golden->find("hidden_states." + std::to_string(layers));
    ASSERT_NE(last, nullptr);
    const int64_t B = last->shape[0], S = last->shape[1], W = last->shape[2];
    for (auto [mode, kind] : {std::pair{"cls", TokenPooling::kCls}, {"mean", TokenPooling::kMean},
                              {"max", TokenPooling::kMax}})
      for (bool normalize : {false, true}) {
        SCOPED_TRACE(::testing::Message() << fixture << " " << mode << (normalize ? " normalized" : ""));
        const auto out = tmp / "pooled.safetensors";
        auto r = test::run_command((test::tools_dir() / "bert_run").string() + " --model " + dir.string() +
                                   " --inputs " + golden_path + " --outputs " + out.string() + " --pooling " +
                                   mode + (normalize ? " --normalize" : ""));
        ASSERT_EQ(r.exit_code, 0) << r.output;
        auto produced = SafetensorsFile::Open(out.string());
        ASSERT_TRUE(produced.ok());
        const Tensor* got = produced->find("sentence_embedding");
        ASSERT_NE(got, nullptr) << "no sentence_embedding written";
        ASSERT_EQ(got->shape, (std::vector<int64_t>{B, W}));
        auto want = expected_pooling(last->as<float>(), mask->as<int32_t>(), B, S, W, kind, normalize);
        EXPECT_LE(test::relative_l2(got->as<float>(), want.data(), want.size()), 1e-5);
        EXPECT_LE(test::max_abs_diff(got->as<float>(), want.data(), want.size()), 1e-4);
      }
  }
  // --normalize alone is a usage error; a bad mode names itself.
  auto r = test::run_command((test::tools_dir() / "bert_run").string() + " --model x --text hi --normalize");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.output.find("--normalize needs --pooling"), std::string::npos) << r.output;
  r = test::run_command((test::tools_dir() / "bert_run").string() + " --model x --text hi --pooling avg");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.output.find("'avg'"), std::string::npos) << r.output;
}

}  // namespace
}  // namespace bert
