// engine/data through bert/data.h: TSV parsing and its line-numbered errors, raw-text documents,
// MLM masking (statistics, determinism, ignore index, special tokens), NSP / SOP pair building,
// shuffling and padded batches.
#include <gtest/gtest.h>

#include <map>
#include <set>

#include "bert/data.h"
#include "tests/test_util.h"

namespace bert {
namespace {

using data::Example;

// Specials, then w0 .. w{n-1}: every "wK" is one token of id 5 + K.
Tokenizer make_tokenizer(int words = 1000, bool with_mask = true) {
  std::vector<std::string> vocab = {"[PAD]", "[UNK]", "[CLS]", "[SEP]"};
  vocab.push_back(with_mask ? "[MASK]" : "[unused0]");
  for (int i = 0; i < words; ++i) vocab.push_back("w" + std::to_string(i));
  auto tok = Tokenizer::FromVocab(vocab);
  EXPECT_TRUE(tok.ok()) << tok.status().to_string();
  return *tok;
}

int32_t word_id(int k) { return 5 + k; }

// ---- TSV ------------------------------------------------------------------------------------------

TEST(Tsv, ParsesSinglesPairsHeaderCarriageReturnsAndBlankLines) {
  Tokenizer tok = make_tokenizer();
  auto ex = data::ParseTsv("sentence\tlabel\nw1 w2\t1\r\n\nw3\tw4 w5\t0\n", "t.tsv", tok, {.max_seq = 16});
  ASSERT_TRUE(ex.ok()) << ex.status().to_string();
  ASSERT_EQ(ex->size(), 2u);
  EXPECT_EQ((*ex)[0].label, 1);
  EXPECT_EQ((*ex)[0].enc.input_ids, (std::vector<int32_t>{tok.cls_id(), word_id(1), word_id(2), tok.sep_id()}));
  EXPECT_EQ((*ex)[1].label, 0);
  EXPECT_EQ((*ex)[1].enc.token_type_ids, (std::vector<int32_t>{0, 0, 0, 1, 1, 1}));
  // Without a header the first line is data; limit stops early; max_seq truncates.
  ex = data::ParseTsv("w1 w2 w3 w4\t1\nw3\t0\nw4\t1\n", "t.tsv", tok,
                      {.max_seq = 4, .limit = 2, .header = false});
  ASSERT_TRUE(ex.ok()) << ex.status().to_string();
  ASSERT_EQ(ex->size(), 2u);
  EXPECT_EQ((*ex)[0].enc.input_ids.size(), 4u);
  // Regression targets.
  ex = data::ParseTsv("h\th\nw1\t0.25\nw2\t-3\n", "r.tsv", tok, {.regression = true, .num_labels = 1});
  ASSERT_TRUE(ex.ok()) << ex.status().to_string();
  EXPECT_FLOAT_EQ((*ex)[0].target, 0.25f);
  EXPECT_FLOAT_EQ((*ex)[1].target, -3.f);
}

TEST(Tsv, MalformedLinesAreNamedByLineNumber) {
  Tokenizer tok = make_tokenizer();
  struct Case {
    std::string text, needle;
    bool regression = false;
  };
  const std::vector<Case> cases = {
      {"h\th\nw1\t1\nno label here\n", "d.tsv:3: expected sentence[<TAB>sentence2]<TAB>label, got 1"},
      {"h\th\nw1\tw2\tw3\t1\n", "d.tsv:2: expected sentence[<TAB>sentence2]<TAB>label, got 4"},
      {"h\th\nw1\t1\n\nw2\tx\n", "d.tsv:4: label 'x' is not an integer"},
      {"h\th\nw1\t7\n", "d.tsv:2: label 7 is outside 0..1 (the model's num_labels)"},
      {"h\th\nw1\t-1\n", "d.tsv:2: label -1 is outside 0..1"},
      {"h\th\nw1\t1.5\n", "d.tsv:2: label '1.5' is not an integer"},
      {"h\th\nw1\t\n", "d.tsv:2: label '' is not an integer"},
      {"h\th\nw1\t0.5x\n", "d.tsv:2: label '0.5x' is not a number", true},
      {"only a header\n", "d.tsv: no examples"},
      {"", "d.tsv: no examples"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.text);
    auto ex = data::ParseTsv(c.text, "d.tsv", tok, {.regression = c.regression, .num_labels = c.regression ? 1 : 2});
    ASSERT_FALSE(ex.ok());
    EXPECT_EQ(ex.status().code(), ErrorCode::kFormatError);
    EXPECT_NE(ex.status().message().find(c.needle), std::string::npos) << ex.status().message();
  }
  auto bad = data::ParseTsv("h\th\nw1\t0\n", "d.tsv", tok, {.num_labels = 0});
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), ErrorCode::kInvalidArgument);
}

TEST(Tsv, FileReaderMatchesTextReaderAndNamesMissingFiles) {
  Tokenizer tok = make_tokenizer();
  test::TempDir tmp;
  const std::string text = "sentence\tlabel\nw1 w2\t1\nw3\tw4\t0\r\nw5\t1";
  test::write_file(tmp / "a.tsv", text);
  auto from_file = data::ReadTsv((tmp / "a.tsv").string(), tok, {});
  auto from_text = data::ParseTsv(text, (tmp / "a.tsv").string(), tok, {});
  ASSERT_TRUE(from_file.ok() && from_text.ok());
  ASSERT_EQ(from_file->size(), 3u);
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ((*from_file)[i].enc.input_ids, (*from_text)[i].enc.input_ids);
    EXPECT_EQ((*from_file)[i].label, (*from_text)[i].label);
  }
  test::write_file(tmp / "b.tsv", "h\th\nw1\t1\nw2\t9\n");
  auto bad = data::ReadTsv((tmp / "b.tsv").string(), tok, {});
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("b.tsv:3: label 9"), std::string::npos) << bad.status().message();
  auto missing = data::ReadTsv((tmp / "missing.tsv").string(), tok, {});
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), ErrorCode::kNotFound);
  EXPECT_NE(missing.status().message().find("missing.tsv"), std::string::npos);
}

// ---- raw text -------------------------------------------------------------------------------------

TEST(TextLines, BlankLinesSeparateDocuments) {
  auto lines = data::ParseTextLines("a b\nc\r\n \t\r\nd\n\n\ne\n", "c.txt");
  ASSERT_TRUE(lines.ok()) << lines.status().to_string();
  ASSERT_EQ(lines->size(), 4u);
  EXPECT_EQ((*lines)[1].text, "c");  // '\r' dropped
  EXPECT_EQ((*lines)[0].doc, (*lines)[1].doc);
  EXPECT_LT((*lines)[1].doc, (*lines)[2].doc);
  EXPECT_LT((*lines)[2].doc, (*lines)[3].doc);
  auto limited = data::ParseTextLines("a\nb\nc\n", "c.txt", 2);
  ASSERT_TRUE(limited.ok());
  EXPECT_EQ(limited->size(), 2u);
  auto none = data::ParseTextLines("\n  \n", "empty.txt");
  ASSERT_FALSE(none.ok());
  EXPECT_NE(none.status().message().find("empty.txt: no text lines"), std::string::npos);
  test::TempDir tmp;
  test::write_file(tmp / "c.txt", "a b\nc\n\nd\n");
  auto from_file = data::ReadTextLines((tmp / "c.txt").string());
  ASSERT_TRUE(from_file.ok());
  EXPECT_EQ(from_file->size(), 3u);
  EXPECT_EQ(data::ReadTextLines((tmp / "nope.txt").string()).status().code(), ErrorCode::kNotFound);
}

// ---- masking --------------------------------------------------------------------------------------

// n examples of random words (lengths 20..60), so batches pad.
std::vector<Example> random_examples(const Tokenizer& tok, int n, int words, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<Example> out;
  for (int i = 0; i < n; ++i) {
    std::string text;
    const int len = 20 + int(rng() % 41);
    for (int t = 0; t < len; ++t) text += "w" + std::to_string(rng() % words) + " ";
    auto enc = tok.Encode(text, std::nullopt, 128);
    EXPECT_TRUE(enc.ok());
    out.push_back({*enc});
  }
  return out;
}

TEST(Masking, FollowsBertsRatesAndIgnoresUnmaskedTokens) {
  Tokenizer tok = make_tokenizer(1000);
  auto examples = random_examples(tok, 400, 1000, 7);
  std::vector<int64_t> order = data::ShuffledOrder(examples.size(), 3, 0);
  int64_t eligible = 0, predicted = 0, to_mask = 0, to_random = 0, kept = 0;
  for (size_t begin = 0; begin < examples.size(); begin += 32) {
    const size_t end = std::min(examples.size(), begin + 32);
    auto b = data::MakeBatch(examples, order, begin, end, tok.pad_id());
    ASSERT_TRUE(b.ok()) << b.status().to_string();
    const std::vector<int32_t> before = b->enc.input_ids;
    auto labels = data::MaskTokens(*b, order, begin, tok, {.seed = 5, .epoch = 0, .vocab_size = 1005});
    ASSERT_TRUE(labels.ok()) << labels.status().to_string();
    ASSERT_EQ(labels->size(), before.size());
    for (size_t i = 0; i < before.size(); ++i) {
      const int32_t id = before[i], now = b->enc.input_ids[i], label = (*labels)[i];
      const bool special = id == tok.cls_id() || id == tok.sep_id() || id == tok.pad_id();
      if (special || !b->enc.attention_mask[i]) {
        EXPECT_EQ(label, data::kIgnoreIndex);  // never predicted, never changed
        EXPECT_EQ(now, id);
        continue;
      }
      ++eligible;
      if (label == data::kIgnoreIndex) {
        EXPECT_EQ(now, id) << "an unpredicted token changed";
        continue;
      }
      EXPECT_EQ(label, id) << "the label is the original token";
      ++predicted;
      if (now == tok.mask_id()) ++to_mask;
      else if (now != id) {
        ++to_random;
        EXPECT_GE(now, 0);
        EXPECT_LT(now, 1005);
      } else {
        ++kept;
      }
    }
  }
  ASSERT_GT(eligible, 10000);
  const double rate = double(predicted) / eligible;
  EXPECT_NEAR(rate, 0.15, 0.01);
  EXPECT_NEAR(double(to_mask) / predicted, 0.8, 0.03);
  EXPECT_NEAR(double(to_random) / predicted, 0.1, 0.02);  // a random draw equal to the token counts as kept
  EXPECT_NEAR(double(kept) / predicted, 0.1, 0.02);
}

TEST(Masking, DependsOnSeedEpochAndExampleNotOnBatchPosition) {
  Tokenizer tok = make_tokenizer(50);
  auto examples = random_examples(tok, 8, 50, 11);
  auto masked = [&](std::vector<int64_t> order, size_t begin, size_t end, uint64_t seed, int epoch) {
    auto b = data::MakeBatch(examples, order, begin, end, tok.pad_id());
    EXPECT_TRUE(b.ok());
    auto labels = data::MaskTokens(*b, order, begin, tok, {.seed = seed, .epoch = epoch, .vocab_size = 55});
    EXPECT_TRUE(labels.ok());
    return std::make_pair(b->enc.input_ids, *labels);
  };
  const std::vector<int64_t> order = {0, 1, 2, 3, 4, 5, 6, 7};
  auto a = masked(order, 0, 8, 1, 0);
  EXPECT_EQ(a, masked(order, 0, 8, 1, 0));  // deterministic
  EXPECT_NE(a, masked(order, 0, 8, 2, 0));  // another seed
  EXPECT_NE(a, masked(order, 0, 8, 1, 1));  // another epoch
  // Example 5 alone in a batch of one is masked as it was in row 5 of the full batch.
  auto alone = masked({5}, 0, 1, 1, 0);
  const size_t seq = a.first.size() / 8;
  const size_t n = examples[5].enc.input_ids.size();
  for (size_t s = 0; s < n; ++s) {
    EXPECT_EQ(alone.first[s], a.first[5 * seq + s]) << s;
    EXPECT_EQ(alone.second[s], a.second[5 * seq + s]) << s;
  }
}

TEST(Masking, RefusesBadOptions) {
  Tokenizer tok = make_tokenizer(20);
  auto examples = random_examples(tok, 2, 20, 1);
  const std::vector<int64_t> order = {0, 1};
  auto b = data::MakeBatch(examples, order, 0, 2, tok.pad_id());
  ASSERT_TRUE(b.ok());
  for (data::MaskingOptions o : {data::MaskingOptions{.vocab_size = 0}, data::MaskingOptions{.vocab_size = 25, .probability = 1.5},
                                 data::MaskingOptions{.vocab_size = 25, .mask_fraction = 0.95, .random_fraction = 0.1},
                                 data::MaskingOptions{.vocab_size = 25, .probability = std::nan("")}}) {
    auto r = data::MaskTokens(*b, order, 0, tok, o);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), ErrorCode::kInvalidArgument) << r.status().to_string();
  }
  auto short_order = data::MaskTokens(*b, order, 1, tok, {.vocab_size = 25});
  EXPECT_FALSE(short_order.ok());
  Tokenizer no_mask = make_tokenizer(20, false);
  auto r = data::MaskTokens(*b, order, 0, no_mask, {.vocab_size = 25});
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("[MASK]"), std::string::npos);
}

// ---- NSP / SOP ------------------------------------------------------------------------------------

// Documents of 3 lines; line k is the single word wk, so a pair's tokens say which lines it joined.
std::vector<data::TextLine> numbered_lines(int docs, int per_doc) {
  std::vector<data::TextLine> lines;
  for (int d = 0; d < docs; ++d)
    for (int i = 0; i < per_doc; ++i) lines.push_back({"w" + std::to_string(d * per_doc + i), d});
  return lines;
}

// (line of A, line of B) from [CLS] wA [SEP] wB [SEP].
std::pair<int, int> pair_lines(const Example& e) {
  EXPECT_EQ(e.enc.input_ids.size(), 5u);
  return {e.enc.input_ids[1] - 5, e.enc.input_ids[3] - 5};
}

TEST(SentencePairs, NextSentencePredictionIsBalancedAndBuiltRight) {
  Tokenizer tok = make_tokenizer(1000);
  auto lines = numbered_lines(300, 3);
  auto pairs = data::MakeSentencePairs(lines, tok, 16, data::SentenceTask::kNextSentence, 42, 0);
  ASSERT_TRUE(pairs.ok()) << pairs.status().to_string();
  ASSERT_EQ(pairs->size(), lines.size());  // one pair per line
  int positives = 0, with_next = 0;
  for (size_t i = 0; i < pairs->size(); ++i) {
    auto [a, b] = pair_lines((*pairs)[i]);
    EXPECT_EQ(a, int(i));
    const bool has_next = i % 3 != 2;
    if (!has_next) {
      EXPECT_EQ((*pairs)[i].label, 1) << "a document's last line gets a random sentence";
      continue;
    }
    ++with_next;
    if ((*pairs)[i].label == 0) {
      ++positives;
      EXPECT_EQ(b, a + 1) << "label 0: B follows A";
    }
    EXPECT_EQ((*pairs)[i].enc.token_type_ids, (std::vector<int32_t>{0, 0, 0, 1, 1}));
  }
  EXPECT_NEAR(double(positives) / with_next, 0.5, 0.06);
  // Deterministic per (seed, epoch); a new epoch draws new pairs.
  auto again = data::MakeSentencePairs(lines, tok, 16, data::SentenceTask::kNextSentence, 42, 0);
  auto next_epoch = data::MakeSentencePairs(lines, tok, 16, data::SentenceTask::kNextSentence, 42, 1);
  ASSERT_TRUE(again.ok() && next_epoch.ok());
  int same = 0, differ = 0;
  for (size_t i = 0; i < pairs->size(); ++i) {
    EXPECT_EQ((*pairs)[i].enc.input_ids, (*again)[i].enc.input_ids);
    EXPECT_EQ((*pairs)[i].label, (*again)[i].label);
    ((*pairs)[i].enc.input_ids == (*next_epoch)[i].enc.input_ids ? same : differ)++;
  }
  EXPECT_GT(differ, 100);
}

TEST(SentencePairs, SentenceOrderUsesConsecutiveLinesInOrderOrSwapped) {
  Tokenizer tok = make_tokenizer(1000);
  auto lines = numbered_lines(300, 3);
  auto pairs = data::MakeSentencePairs(lines, tok, 16, data::SentenceTask::kSentenceOrder, 42, 0);
  ASSERT_TRUE(pairs.ok()) << pairs.status().to_string();
  ASSERT_EQ(pairs->size(), 600u);  // two consecutive pairs per 3-line document
  int swapped = 0;
  for (const Example& e : *pairs) {
    auto [a, b] = pair_lines(e);
    if (e.label == 0) {
      EXPECT_EQ(b, a + 1);
    } else {
      ++swapped;
      EXPECT_EQ(a, b + 1);
    }
    EXPECT_EQ(std::min(a, b) / 3, std::max(a, b) / 3) << "both from one document";
  }
  EXPECT_NEAR(swapped / 600.0, 0.5, 0.06);
  // One-line documents make no SOP pair.
  auto none = data::MakeSentencePairs(numbered_lines(5, 1), tok, 16, data::SentenceTask::kSentenceOrder, 1, 0);
  ASSERT_FALSE(none.ok());
  EXPECT_NE(none.status().message().find("documents of two or more lines"), std::string::npos);
  EXPECT_FALSE(data::MakeSentencePairs({}, tok, 16, data::SentenceTask::kNextSentence, 1, 0).ok());
}

// ---- shuffling and batches ------------------------------------------------------------------------

TEST(Batching, ShuffleIsASeededPermutationAndBatchesPad) {
  auto o = data::ShuffledOrder(100, 9, 0);
  EXPECT_EQ(std::set<int64_t>(o.begin(), o.end()).size(), 100u);
  EXPECT_EQ(*std::min_element(o.begin(), o.end()), 0);
  EXPECT_EQ(*std::max_element(o.begin(), o.end()), 99);
  EXPECT_EQ(o, data::ShuffledOrder(100, 9, 0));
  EXPECT_NE(o, data::ShuffledOrder(100, 9, 1));
  EXPECT_NE(o, data::ShuffledOrder(100, 10, 0));

  Tokenizer tok = make_tokenizer();
  auto ex = data::ParseTsv("h\th\nw1 w2 w3\t1\nw4\t0\n", "t.tsv", tok, {});
  ASSERT_TRUE(ex.ok());
  const std::vector<int64_t> order = {1, 0};
  auto b = data::MakeBatch(*ex, order, 0, 2, tok.pad_id());
  ASSERT_TRUE(b.ok()) << b.status().to_string();
  EXPECT_EQ(b->batch, 2);
  EXPECT_EQ(b->seq, 5);
  EXPECT_EQ(b->labels, (std::vector<int32_t>{0, 1}));
  EXPECT_EQ(b->enc.input_ids, (std::vector<int32_t>{2, word_id(4), 3, 0, 0, 2, word_id(1), word_id(2), word_id(3), 3}));
  EXPECT_EQ(b->enc.attention_mask, (std::vector<int32_t>{1, 1, 1, 0, 0, 1, 1, 1, 1, 1}));
  BatchInput in = b->input(false);
  EXPECT_EQ(in.token_type_ids, nullptr);
  EXPECT_EQ(in.input_ids, b->enc.input_ids.data());
  EXPECT_FALSE(data::MakeBatch(*ex, order, 1, 1, 0).ok());  // empty
  EXPECT_FALSE(data::MakeBatch(*ex, order, 0, 3, 0).ok());  // beyond the order
  const std::vector<int64_t> bad = {0, 5};
  auto r = data::MakeBatch(*ex, bad, 0, 2, 0);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("example index 5"), std::string::npos);
}

}  // namespace
}  // namespace bert
