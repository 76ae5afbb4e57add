// Tests for the WordPiece tokenizer and vocab files: every case of the HF BertTokenizer fixture
// (../shared), plus unit tests on a tiny hand-made vocabulary that need no shared data.
#include "bert/tokenizer.h"

#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "tests/test_util.h"
#include "weights/vocab.h"

namespace {

using bert::Encoding;
using bert::Tokenizer;
using bert::TokenizerOptions;
using Strings = std::vector<std::string>;

template <typename T>
std::string join(const std::vector<T>& v) {
  std::ostringstream os;
  os << "[";
  for (size_t i = 0; i < v.size(); ++i) os << (i ? ", " : "") << v[i];
  os << "]";
  return os.str();
}

// ---- (a) the HF fixture -------------------------------------------------------------------------

TEST(TokenizerFixture, AllCasesMatchHuggingFace) {
  BERT_REQUIRE_SHARED(shared);
  const auto fixture = shared / "fixtures" / "tokenizer_bert_uncased.jsonl";
  const auto vocab = shared / "models" / "bert-base-uncased-tokenizer" / "vocab.txt";
  auto lower = Tokenizer::FromVocabFile(vocab.string(), TokenizerOptions{true, true});
  auto cased = Tokenizer::FromVocabFile(vocab.string(), TokenizerOptions{false, true});
  ASSERT_TRUE(lower.ok()) << lower.status().to_string();
  ASSERT_TRUE(cased.ok()) << cased.status().to_string();
  EXPECT_EQ(lower->vocab_size(), 30522u);
  EXPECT_EQ(lower->pad_id(), 0);
  EXPECT_EQ(lower->unk_id(), 100);
  EXPECT_EQ(lower->cls_id(), 101);
  EXPECT_EQ(lower->sep_id(), 102);
  EXPECT_EQ(lower->mask_id(), 103);

  std::ifstream in(fixture);
  ASSERT_TRUE(in) << "cannot open " << fixture;
  std::string line;
  int line_no = 0, cases = 0, passed = 0;
  while (std::getline(in, line)) {
    ++line_no;
    if (line.empty()) continue;
    ++cases;
    auto j = nlohmann::json::parse(line);
    const Tokenizer& tok = j.at("lower").get<bool>() ? *lower : *cased;
    const std::string text = j.at("text").get<std::string>();
    std::optional<std::string> pair;
    if (j.contains("text_pair") && !j["text_pair"].is_null()) pair = j["text_pair"].get<std::string>();
    const int max_length = j.contains("max_length") ? j["max_length"].get<int>() : 0;
    auto enc = pair ? tok.Encode(text, std::string_view(*pair), max_length) : tok.Encode(text, std::nullopt, max_length);
    if (!enc.ok()) {
      ADD_FAILURE() << "line " << line_no << ": " << enc.status().to_string();
      continue;
    }
    const auto want_ids = j.at("input_ids").get<std::vector<int32_t>>();
    const auto want_types = j.at("token_type_ids").get<std::vector<int32_t>>();
    const auto want_tokens = j.at("tokens").get<Strings>();
    bool ok = true;
    if (enc->input_ids != want_ids) {
      ok = false;
      ADD_FAILURE() << "line " << line_no << " input_ids\n  got  " << join(enc->input_ids) << "\n  want "
                    << join(want_ids);
    }
    if (enc->token_type_ids != want_types) {
      ok = false;
      ADD_FAILURE() << "line " << line_no << " token_type_ids\n  got  " << join(enc->token_type_ids)
                    << "\n  want " << join(want_types);
    }
    if (enc->tokens != want_tokens) {
      ok = false;
      ADD_FAILURE() << "line " << line_no << " tokens\n  got  " << join(enc->tokens) << "\n  want "
                    << join(want_tokens);
    }
    EXPECT_EQ(enc->attention_mask, std::vector<int32_t>(enc->input_ids.size(), 1)) << "line " << line_no;
    if (ok) ++passed;
  }
  std::cout << "tokenizer fixture: " << passed << " / " << cases << " cases match\n";
  EXPECT_EQ(cases, 932);
  EXPECT_EQ(passed, 932);
}

// ---- (b) unit tests on a tiny vocab --------------------------------------------------------------

Strings tiny_vocab() {
  return {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "hello", "world", ",", "!", ".",
          "un",    "##aff", "##able", "aff",  "able",   "a",     "##a",   "cafe", "中", "文",
          "i",     "x",     "##x",   "b",    "c",      "d",     "e",     "f",    "g",  "h",
          "naive", "##b",   "##ab",  "##le", "##f",    "σ",     "ς",     "hel",  "##lo"};
}

Tokenizer make(TokenizerOptions opts = {}) {
  auto t = Tokenizer::FromVocab(tiny_vocab(), opts);
  EXPECT_TRUE(t.ok()) << t.status().to_string();
  return std::move(t).value();
}

TEST(Tokenizer, SpecialIds) {
  Tokenizer t = make();
  EXPECT_EQ(t.pad_id(), 0);
  EXPECT_EQ(t.unk_id(), 1);
  EXPECT_EQ(t.cls_id(), 2);
  EXPECT_EQ(t.sep_id(), 3);
  EXPECT_EQ(t.mask_id(), 4);
  EXPECT_EQ(t.vocab_size(), tiny_vocab().size());
  EXPECT_EQ(t.TokenToId("hello"), 5);
  EXPECT_EQ(t.TokenToId("nope"), std::nullopt);
  EXPECT_EQ(t.IdToToken(6), "world");
  EXPECT_EQ(t.IdToToken(-1), "");
  EXPECT_EQ(t.IdToToken(100000), "");
}

TEST(Tokenizer, PunctuationSplit) {
  Tokenizer t = make();
  EXPECT_EQ(t.Tokenize("Hello,world!"), (Strings{"hello", ",", "world", "!"}));
  EXPECT_EQ(t.Tokenize("hello...world"), (Strings{"hello", ".", ".", ".", "world"}));
  // ASCII symbols count as punctuation too ($ is category Sc).
  EXPECT_EQ(t.Tokenize("a$a"), (Strings{"a", "[UNK]", "a"}));
}

TEST(Tokenizer, WhitespaceAndControlCharacters) {
  Tokenizer t = make();
  EXPECT_EQ(t.Tokenize("  hello\t\tworld\r\n "), (Strings{"hello", "world"}));
  // NUL, BEL and zero-width space (Cf) are dropped without splitting; NBSP (Zs) splits.
  EXPECT_EQ(t.Tokenize(std::string("hel\0lo", 6)), (Strings{"hello"}));
  EXPECT_EQ(t.Tokenize("hel\x07lo"), (Strings{"hello"}));
  EXPECT_EQ(t.Tokenize("hel\u200blo"), (Strings{"hello"}));
  EXPECT_EQ(t.Tokenize("hello\u00a0world"), (Strings{"hello", "world"}));
  // U+2028 (line separator) splits like Python's str.split().
  EXPECT_EQ(t.Tokenize("hello\u2028world"), (Strings{"hello", "world"}));
  EXPECT_TRUE(t.Tokenize("").empty());
  EXPECT_TRUE(t.Tokenize(" \t\n").empty());
}

TEST(Tokenizer, LowercaseAndAccents) {
  Tokenizer t = make();
  EXPECT_EQ(t.Tokenize("Café NAÏVE"), (Strings{"cafe", "naive"}));
  // Decomposed input (e + U+0301) gives the same result.
  EXPECT_EQ(t.Tokenize("Cafe\u0301"), (Strings{"cafe"}));
  // İ lowercases to "i̇" (Python full lowercase), whose dot is then stripped.
  EXPECT_EQ(t.Tokenize("\u0130"), (Strings{"i"}));
  // HF lowercases one character at a time: no final sigma.
  EXPECT_EQ(t.Tokenize("\u03a3"), (Strings{"σ"}));

  Tokenizer cased = make(TokenizerOptions{false, true});
  EXPECT_EQ(cased.Tokenize("Café cafe"), (Strings{"[UNK]", "cafe"}));
  EXPECT_EQ(cased.Tokenize("Hello hello"), (Strings{"[UNK]", "hello"}));
  // Cased keeps accents, but NFC composes e + U+0301 into é.
  EXPECT_EQ(cased.Tokenize("cafe\u0301"), (Strings{"[UNK]"}));
}

TEST(Tokenizer, ChineseCharacters) {
  Tokenizer t = make();
  EXPECT_EQ(t.Tokenize("中文"), (Strings{"中", "文"}));
  EXPECT_EQ(t.Tokenize("hello中world"), (Strings{"hello", "中", "world"}));
  Tokenizer no_cjk = make(TokenizerOptions{true, false});
  EXPECT_EQ(no_cjk.Tokenize("中文"), (Strings{"[UNK]"}));  // "中" then "##文" is not in the vocab
}

TEST(Tokenizer, GreedyLongestMatchFirst) {
  Tokenizer t = make();
  EXPECT_EQ(t.Tokenize("unaffable"), (Strings{"un", "##aff", "##able"}));
  EXPECT_EQ(t.Tokenize("affable"), (Strings{"aff", "##able"}));
  EXPECT_EQ(t.Tokenize("hello"), (Strings{"hello"}));
  EXPECT_EQ(t.Tokenize("hellohello"), (Strings{"[UNK]"}));  // "##hello" is not in the vocab
  EXPECT_EQ(t.Tokenize("hello unzz world"), (Strings{"hello", "[UNK]", "world"}));
  EXPECT_EQ(t.Tokenize("xxx"), (Strings{"x", "##x", "##x"}));
}

TEST(Tokenizer, LongWordIsUnknown) {
  Tokenizer t = make();
  auto hundred = t.Tokenize(std::string(100, 'a'));
  ASSERT_EQ(hundred.size(), 100u);
  EXPECT_EQ(hundred[0], "a");
  EXPECT_EQ(hundred[99], "##a");
  EXPECT_EQ(t.Tokenize(std::string(101, 'a')), (Strings{"[UNK]"}));
  // The limit counts code points, not bytes: 60 two-byte characters are fine in principle.
  std::string accented;
  for (int i = 0; i < 60; ++i) accented += "\u00e1";  // á -> a after accent stripping
  EXPECT_EQ(t.Tokenize(accented).size(), 60u);
}

TEST(Tokenizer, SpecialTokensInText) {
  Tokenizer t = make();
  EXPECT_EQ(t.Tokenize("hello [MASK] world"), (Strings{"hello", "[MASK]", "world"}));
  EXPECT_EQ(t.Tokenize("hello[MASK]world"), (Strings{"hello", "[MASK]", "world"}));
  EXPECT_EQ(t.Tokenize("[mask]"), (Strings{"[UNK]", "[UNK]", "[UNK]"}));  // lowercase is not special
  auto enc = t.Encode("[CLS] hello");
  ASSERT_TRUE(enc.ok());
  EXPECT_EQ(enc->input_ids, (std::vector<int32_t>{2, 2, 5, 3}));
}

TEST(Tokenizer, EncodeSingleAndPair) {
  Tokenizer t = make();
  auto single = t.Encode("hello world");
  ASSERT_TRUE(single.ok());
  EXPECT_EQ(single->input_ids, (std::vector<int32_t>{2, 5, 6, 3}));
  EXPECT_EQ(single->token_type_ids, (std::vector<int32_t>{0, 0, 0, 0}));
  EXPECT_EQ(single->attention_mask, (std::vector<int32_t>{1, 1, 1, 1}));
  EXPECT_EQ(single->tokens, (Strings{"[CLS]", "hello", "world", "[SEP]"}));

  auto pair = t.Encode("hello", std::string_view("world !"));
  ASSERT_TRUE(pair.ok());
  EXPECT_EQ(pair->input_ids, (std::vector<int32_t>{2, 5, 3, 6, 8, 3}));
  EXPECT_EQ(pair->token_type_ids, (std::vector<int32_t>{0, 0, 0, 1, 1, 1}));

  auto empty = t.Encode("", std::string_view(""));
  ASSERT_TRUE(empty.ok());
  EXPECT_EQ(empty->input_ids, (std::vector<int32_t>{2, 3, 3}));
}

TEST(Tokenizer, SingleTruncation) {
  Tokenizer t = make();
  auto enc = t.Encode("b c d e f", std::nullopt, 4);
  ASSERT_TRUE(enc.ok());
  EXPECT_EQ(enc->tokens, (Strings{"[CLS]", "b", "c", "[SEP]"}));
  auto fits = t.Encode("b c", std::nullopt, 10);
  ASSERT_TRUE(fits.ok());
  EXPECT_EQ(fits->tokens, (Strings{"[CLS]", "b", "c", "[SEP]"}));
  auto only_specials = t.Encode("b c", std::nullopt, 2);
  ASSERT_TRUE(only_specials.ok());
  EXPECT_EQ(only_specials->tokens, (Strings{"[CLS]", "[SEP]"}));
}

TEST(Tokenizer, PairTruncationLongestFirst) {
  Tokenizer t = make();
  // a has 5 pieces, b has 3; budget 6 -> both from a.
  auto e1 = t.Encode("b c d e f", std::string_view("g h a"), 9);
  ASSERT_TRUE(e1.ok());
  EXPECT_EQ(e1->tokens, (Strings{"[CLS]", "b", "c", "d", "[SEP]", "g", "h", "a", "[SEP]"}));
  EXPECT_EQ(e1->token_type_ids, (std::vector<int32_t>{0, 0, 0, 0, 0, 1, 1, 1, 1}));
  // Equal lengths 3 and 3, budget 3: b loses first on ties -> a 2, b 1.
  auto e2 = t.Encode("b c d", std::string_view("e f g"), 6);
  ASSERT_TRUE(e2.ok());
  EXPECT_EQ(e2->tokens, (Strings{"[CLS]", "b", "c", "[SEP]", "e", "[SEP]"}));
  // Short a, long b: only b is cut.
  auto e3 = t.Encode("b", std::string_view("c d e f g h"), 7);
  ASSERT_TRUE(e3.ok());
  EXPECT_EQ(e3->tokens, (Strings{"[CLS]", "b", "[SEP]", "c", "d", "e", "[SEP]"}));
  // Everything cut.
  auto e4 = t.Encode("b c", std::string_view("d e"), 3);
  ASSERT_TRUE(e4.ok());
  EXPECT_EQ(e4->tokens, (Strings{"[CLS]", "[SEP]", "[SEP]"}));
  // Truncation counts word pieces, not words.
  auto e5 = t.Encode("unaffable", std::string_view("b"), 5);
  ASSERT_TRUE(e5.ok());
  EXPECT_EQ(e5->tokens, (Strings{"[CLS]", "un", "[SEP]", "b", "[SEP]"}));
}

TEST(Tokenizer, MaxLengthTooSmallIsAnError) {
  Tokenizer t = make();
  auto s1 = t.Encode("hello", std::nullopt, 1);
  EXPECT_FALSE(s1.ok());
  EXPECT_EQ(s1.status().code(), bert::ErrorCode::kInvalidArgument);
  auto p2 = t.Encode("hello", std::string_view("world"), 2);
  EXPECT_FALSE(p2.ok());
  EXPECT_EQ(p2.status().code(), bert::ErrorCode::kInvalidArgument);
  EXPECT_FALSE(t.Encode("hello", std::nullopt, -1).ok());
}

TEST(Tokenizer, InvalidUtf8DoesNotCrash) {
  Tokenizer t = make();
  // Invalid bytes decode to U+FFFD, which is dropped like HF drops it.
  EXPECT_EQ(t.Tokenize("hel\xfflo"), (Strings{"hello"}));
  EXPECT_EQ(t.Tokenize("hello \xc0\xaf world"), (Strings{"hello", "world"}));      // overlong
  EXPECT_EQ(t.Tokenize("hello \xed\xa0\x80 world"), (Strings{"hello", "world"}));  // surrogate
  EXPECT_EQ(t.Tokenize("hello \xe4\xb8"), (Strings{"hello"}));                      // truncated
  EXPECT_EQ(t.Tokenize("\x80\x80\xbf"), Strings{});
  EXPECT_EQ(t.Tokenize("\xf4\x90\x80\x80"), Strings{});  // above U+10FFFF
  // Random bytes: no crash, every id valid.
  std::mt19937 rng(7);
  for (int round = 0; round < 200; ++round) {
    std::string s(static_cast<size_t>(rng() % 64), '\0');
    for (auto& c : s) c = static_cast<char>(rng() & 0xFF);
    auto enc = t.Encode(s, std::string_view(s), 0);
    ASSERT_TRUE(enc.ok());
    for (int32_t id : enc->input_ids) {
      ASSERT_GE(id, 0);
      ASSERT_LT(static_cast<size_t>(id), t.vocab_size());
    }
  }
}

TEST(Tokenizer, MissingSpecialTokens) {
  auto no_cls = Tokenizer::FromVocab({"[PAD]", "[UNK]", "[SEP]", "hello"});
  ASSERT_FALSE(no_cls.ok());
  EXPECT_EQ(no_cls.status().code(), bert::ErrorCode::kInvalidArgument);
  EXPECT_NE(no_cls.status().message().find("[CLS]"), std::string::npos) << no_cls.status().message();

  auto none = Tokenizer::FromVocab({"hello"});
  ASSERT_FALSE(none.ok());
  for (const char* name : {"[CLS]", "[SEP]", "[UNK]", "[PAD]"})
    EXPECT_NE(none.status().message().find(name), std::string::npos) << none.status().message();

  EXPECT_FALSE(Tokenizer::FromVocab({}).ok());
  EXPECT_FALSE(Tokenizer::FromVocab({"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[PAD]"}).ok());

  // [MASK] is optional.
  auto no_mask = Tokenizer::FromVocab({"[PAD]", "[UNK]", "[CLS]", "[SEP]", "hello"});
  ASSERT_TRUE(no_mask.ok()) << no_mask.status().to_string();
  EXPECT_EQ(no_mask->mask_id(), -1);
  auto enc = no_mask->Encode("hello [MASK]");
  ASSERT_TRUE(enc.ok());
  EXPECT_EQ(enc->input_ids, (std::vector<int32_t>{2, 4, 1, 3}));  // [MASK] -> [UNK] id, like HF
}

TEST(Tokenizer, PadBatch) {
  Tokenizer t = make();
  std::vector<Encoding> encs;
  encs.push_back(t.Encode("hello world").value());
  encs.push_back(t.Encode("hello", std::string_view("a")).value());
  encs.push_back(t.Encode("").value());
  auto batch = bert::pad_batch(encs, t.pad_id());
  EXPECT_EQ(batch.batch, 3);
  EXPECT_EQ(batch.seq, 5);
  EXPECT_EQ(batch.input_ids, (std::vector<int32_t>{2, 5, 6, 3, 0, /**/ 2, 5, 3, 15, 3, /**/ 2, 3, 0, 0, 0}));
  EXPECT_EQ(batch.token_type_ids, (std::vector<int32_t>{0, 0, 0, 0, 0, /**/ 0, 0, 0, 1, 1, /**/ 0, 0, 0, 0, 0}));
  EXPECT_EQ(batch.attention_mask, (std::vector<int32_t>{1, 1, 1, 1, 0, /**/ 1, 1, 1, 1, 1, /**/ 1, 1, 0, 0, 0}));
  auto empty = bert::pad_batch({}, 0);
  EXPECT_EQ(empty.batch, 0);
  EXPECT_EQ(empty.seq, 0);
  EXPECT_TRUE(empty.input_ids.empty());
}

// ---- vocab files -------------------------------------------------------------------------------

TEST(Vocab, ReadFile) {
  bert::test::TempDir dir;
  bert::test::write_file(dir / "v.txt", "[PAD]\n[UNK]\n a b \n\nlast");
  auto v = bert::read_vocab_file((dir / "v.txt").string());
  ASSERT_TRUE(v.ok()) << v.status().to_string();
  // Only the newline is stripped: spaces stay, an empty line is the token "".
  EXPECT_EQ(*v, (Strings{"[PAD]", "[UNK]", " a b ", "", "last"}));

  // A final newline adds no empty token; \r\n and \r end lines (Python universal newlines).
  bert::test::write_file(dir / "crlf.txt", "a\r\nb\rc\n");
  auto crlf = bert::read_vocab_file((dir / "crlf.txt").string());
  ASSERT_TRUE(crlf.ok()) << crlf.status().to_string();
  EXPECT_EQ(*crlf, (Strings{"a", "b", "c"}));
}

TEST(Vocab, MissingFile) {
  const std::string path = "/nonexistent/dir/vocab.txt";
  auto v = bert::read_vocab_file(path);
  ASSERT_FALSE(v.ok());
  EXPECT_EQ(v.status().code(), bert::ErrorCode::kNotFound);
  EXPECT_NE(v.status().message().find(path), std::string::npos) << v.status().message();
  auto t = Tokenizer::FromVocabFile(path);
  ASSERT_FALSE(t.ok());
  EXPECT_NE(t.status().message().find(path), std::string::npos) << t.status().message();
}

TEST(Vocab, EmptyAndDuplicate) {
  bert::test::TempDir dir;
  bert::test::write_file(dir / "empty.txt", "");
  auto empty = bert::read_vocab_file((dir / "empty.txt").string());
  ASSERT_FALSE(empty.ok());
  EXPECT_NE(empty.status().message().find("empty.txt"), std::string::npos);

  bert::test::write_file(dir / "dup.txt", "a\nb\nc\nb\n");
  auto dup = bert::read_vocab_file((dir / "dup.txt").string());
  ASSERT_FALSE(dup.ok());
  EXPECT_EQ(dup.status().code(), bert::ErrorCode::kFormatError);
  const std::string& msg = dup.status().message();
  EXPECT_NE(msg.find("dup.txt"), std::string::npos) << msg;
  EXPECT_NE(msg.find("line 4"), std::string::npos) << msg;
  EXPECT_NE(msg.find("'b'"), std::string::npos) << msg;

  bert::test::write_file(dir / "bad.txt", "a\nb\xff\n");
  auto bad = bert::read_vocab_file((dir / "bad.txt").string());
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("line 2"), std::string::npos) << bad.status().message();
}

TEST(Vocab, JoinSplitRoundTrip) {
  Strings v = {"[PAD]", "", " x ", "##y", "中"};
  std::string joined = bert::join_vocab(v);
  EXPECT_EQ(joined, "[PAD]\n\n x \n##y\n中");
  auto back = bert::split_vocab(joined);
  ASSERT_TRUE(back.ok()) << back.status().to_string();
  EXPECT_EQ(*back, v);
  EXPECT_FALSE(bert::split_vocab("").ok());
  EXPECT_FALSE(bert::split_vocab("a\nb\na").ok());
}

TEST(Vocab, FixtureVocabRoundTrip) {
  BERT_REQUIRE_SHARED(shared);
  auto v = bert::read_vocab_file((shared / "models" / "bert-base-uncased-tokenizer" / "vocab.txt").string());
  ASSERT_TRUE(v.ok()) << v.status().to_string();
  EXPECT_EQ(v->size(), 30522u);
  EXPECT_EQ((*v)[1996], "the");
  auto back = bert::split_vocab(bert::join_vocab(*v));
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(*back, *v);
}

}  // namespace
