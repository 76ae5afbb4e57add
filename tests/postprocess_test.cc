// engine/serve/postprocess through bert/predict.h, on hand-made logits: softmax edge cases, class
// and token labels (ties), word grouping, QA spans (best start after best end, length limit, context
// only), top-k per [MASK] (k beyond the vocab, ties), ELECTRA flags, and Predict on a real session.
#include <gtest/gtest.h>

#include <cmath>

#include "bert/model_builder.h"
#include "bert/predict.h"
#include "tests/test_util.h"

namespace bert {
namespace {

TEST(Softmax, SumsToOneHandlesMaskedRowsAndRefusesNan) {
  const std::vector<float> x = {1.f, 2.f, 3.f};
  auto p = Softmax(x);
  ASSERT_TRUE(p.ok());
  const double z = std::exp(-2.0) + std::exp(-1.0) + 1.0;
  EXPECT_NEAR((*p)[2], 1.0 / z, 1e-15);
  EXPECT_NEAR((*p)[0] + (*p)[1] + (*p)[2], 1.0, 1e-15);
  // -inf entries get 0; an all -inf row is uniform.
  auto masked = Softmax(std::vector<float>{-INFINITY, 0.f, -INFINITY});
  ASSERT_TRUE(masked.ok());
  EXPECT_EQ(*masked, (std::vector<double>{0.0, 1.0, 0.0}));
  auto all_masked = Softmax(std::vector<float>{-INFINITY, -INFINITY, -INFINITY, -INFINITY});
  ASSERT_TRUE(all_masked.ok());
  EXPECT_EQ(*all_masked, (std::vector<double>(4, 0.25)));
  auto nan = Softmax(std::vector<float>{0.f, NAN}, "start_logits");
  ASSERT_FALSE(nan.ok());
  EXPECT_NE(nan.status().message().find("start_logits[1] is NaN"), std::string::npos);
  EXPECT_FALSE(Softmax(std::vector<float>{INFINITY}).ok());
  EXPECT_FALSE(Softmax(std::vector<float>{}).ok());
}

TEST(Classify, LabelsProbabilitiesAndTies) {
  auto c = ClassifySequence(std::vector<float>{0.5f, 2.f, -1.f}, {"neg", "pos", "neutral"});
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->label_id, 1);
  EXPECT_EQ(c->label, "pos");
  ASSERT_EQ(c->probabilities.size(), 3u);
  EXPECT_EQ(c->probabilities[2].label, "neutral");
  EXPECT_GT(c->probabilities[1].probability, c->probabilities[0].probability);
  // A tie goes to the lower id; missing names become LABEL_<id>.
  auto tie = ClassifySequence(std::vector<float>{1.f, 3.f, 3.f}, {"a"});
  ASSERT_TRUE(tie.ok());
  EXPECT_EQ(tie->label_id, 1);
  EXPECT_EQ(tie->label, "LABEL_1");
  EXPECT_DOUBLE_EQ(tie->probabilities[1].probability, tie->probabilities[2].probability);
}

TEST(TokenLabels, PerTokenAndPerWord) {
  const std::vector<std::string> tokens = {"[CLS]", "hug", "##ging", "face", "[SEP]"};
  // [5 tokens, 2 labels]: O, B-ORG per row.
  const std::vector<float> logits = {5, 0, 0, 4, 3, 0, 0, 2, 5, 0};
  auto t = ClassifyTokens(logits, 2, tokens, {"O", "B-ORG"});
  ASSERT_TRUE(t.ok()) << t.status().to_string();
  ASSERT_EQ(t->size(), 5u);
  EXPECT_EQ((*t)[1].label, "B-ORG");
  EXPECT_EQ((*t)[2].label, "O");
  EXPECT_EQ((*t)[3].position, 3);
  auto words = GroupWords(*t);
  ASSERT_EQ(words.size(), 2u);
  EXPECT_EQ(words[0].word, "hugging");
  EXPECT_EQ(words[0].first_token, 1);
  EXPECT_EQ(words[0].last_token, 2);
  EXPECT_EQ(words[0].label, "B-ORG");  // the first piece's label
  EXPECT_EQ(words[1].word, "face");
  EXPECT_EQ(words[1].label, "B-ORG");
  // Too few logits for the tokens is an error, not a read past the end.
  auto short_logits = ClassifyTokens(std::vector<float>(9, 0.f), 2, tokens, {});
  ASSERT_FALSE(short_logits.ok());
  EXPECT_NE(short_logits.status().message().find("fewer than the 10"), std::string::npos);
}

// [CLS] q [SEP] c1 c2 c3 c4 [SEP] with the context as segment 1.
Encoding qa_encoding() {
  Encoding e;
  e.input_ids = {2, 10, 3, 11, 12, 13, 14, 3};
  e.token_type_ids = {0, 0, 0, 1, 1, 1, 1, 1};
  e.attention_mask = std::vector<int32_t>(8, 1);
  e.tokens = {"[CLS]", "where", "[SEP]", "in", "par", "##is", "now", "[SEP]"};
  return e;
}

TEST(QuestionAnswering, BestValidSpanInsideTheContext) {
  const Encoding e = qa_encoding();
  // The best start (6) lies after the best end (4): the answer is the best pair with start <= end.
  std::vector<float> st = {9, 9, 9, 0, 1, 0, 5, 9}, en = {9, 9, 9, 0, 4, 0, 1, 9};
  auto a = BestAnswerSpan(st, en, e, 3);
  ASSERT_TRUE(a.ok()) << a.status().to_string();
  EXPECT_EQ(a->start_token, 6);  // 5 + 1 = 6 beats 1 + 4 = 5; the question and [SEP]s never count
  EXPECT_EQ(a->end_token, 6);
  EXPECT_EQ(a->text, "now");
  st = {9, 9, 9, 0, 3, 0, 2, 9};
  a = BestAnswerSpan(st, en, e, 3);
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->start_token, 4);
  EXPECT_EQ(a->end_token, 4);
  EXPECT_EQ(a->text, "par");
  // The length limit: with at most 1 token, "par ##is" (4..5) cannot be chosen.
  st = {0, 0, 0, 0, 5, 0, 0, 0}, en = {0, 0, 0, 0, 0, 5, 0, 0};
  a = BestAnswerSpan(st, en, e, 3);
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->text, "paris");
  auto ps = Softmax(st), pe = Softmax(en);
  EXPECT_DOUBLE_EQ(a->score, (*ps)[4] * (*pe)[5]);
  a = BestAnswerSpan(st, en, e, 3, {.max_answer_tokens = 1});
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->end_token - a->start_token, 0);
  // Ties: the earliest start, then the earliest end.
  std::vector<float> flat(8, 0.f);
  a = BestAnswerSpan(flat, flat, e, 3);
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->start_token, 3);
  EXPECT_EQ(a->end_token, 3);
  // Padding is never part of an answer.
  Encoding padded = e;
  padded.attention_mask = {1, 1, 1, 1, 0, 0, 0, 1};
  st = {0, 0, 0, 0, 5, 0, 0, 0};
  a = BestAnswerSpan(st, en, padded, 3);
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->start_token, 3);
  EXPECT_EQ(a->end_token, 3);
}

TEST(QuestionAnswering, NoContextOrTooFewLogitsIsAnError) {
  Encoding e;
  e.input_ids = {2, 3, 3};
  e.token_type_ids = {0, 0, 1};
  e.tokens = {"[CLS]", "[SEP]", "[SEP]"};
  auto a = BestAnswerSpan(std::vector<float>(3, 0.f), std::vector<float>(3, 0.f), e, 3);
  ASSERT_FALSE(a.ok());
  EXPECT_NE(a.status().message().find("no context tokens"), std::string::npos);
  a = BestAnswerSpan(std::vector<float>(7, 0.f), std::vector<float>(8, 0.f), qa_encoding(), 3);
  ASSERT_FALSE(a.ok());
  EXPECT_NE(a.status().message().find("start_logits"), std::string::npos);
}

TEST(MaskedLm, TopKPerMaskWithTiesAndKBeyondTheVocab) {
  const std::vector<std::string> vocab = {"[PAD]", "[MASK]", "a", "b"};
  const std::vector<int32_t> ids = {1, 2, 1};
  // [3 tokens, vocab 4]; row 0 has a tie between ids 2 and 3.
  const std::vector<float> logits = {0, 0, 2, 2, 9, 9, 9, 9, 1, 0, 0, 3};
  auto m = TopTokensAtMasks(logits, 4, ids, 1, 10, vocab);
  ASSERT_TRUE(m.ok()) << m.status().to_string();
  ASSERT_EQ(m->size(), 2u);
  EXPECT_EQ((*m)[0].position, 0);
  ASSERT_EQ((*m)[0].candidates.size(), 4u);  // k capped at the vocab
  EXPECT_EQ((*m)[0].candidates[0].id, 2);    // tie: lower id first
  EXPECT_EQ((*m)[0].candidates[1].id, 3);
  EXPECT_EQ((*m)[0].candidates[0].token, "a");
  EXPECT_EQ((*m)[1].position, 2);
  EXPECT_EQ((*m)[1].candidates[0].token, "b");
  EXPECT_EQ((*m)[1].candidates[1].token, "[PAD]");
  double sum = 0;
  for (const auto& c : (*m)[1].candidates) sum += c.probability;
  EXPECT_NEAR(sum, 1.0, 1e-12);
  // An id beyond the embedded vocab has an empty token string.
  auto short_vocab = TopTokensAtMasks(logits, 4, ids, 1, 1, {"[PAD]", "[MASK]"});
  ASSERT_TRUE(short_vocab.ok());
  EXPECT_EQ((*short_vocab)[0].candidates[0].token, "");
  // No [MASK]: nothing; k < 1: an error.
  auto none = TopTokensAtMasks(logits, 4, std::vector<int32_t>{2, 2, 2}, 1, 5, vocab);
  ASSERT_TRUE(none.ok());
  EXPECT_TRUE(none->empty());
  EXPECT_FALSE(TopTokensAtMasks(logits, 4, ids, 1, 0, vocab).ok());
  EXPECT_FALSE(TopTokensAtMasks(std::vector<float>(11, 0.f), 4, ids, 1, 5, vocab).ok());
}

TEST(Electra, ReplacedTokenFlags) {
  auto r = ReplacedTokens(std::vector<float>{-3.f, 0.f, 2.f}, {"[CLS]", "ate", "[SEP]"});
  ASSERT_TRUE(r.ok());
  ASSERT_EQ(r->size(), 3u);
  EXPECT_FALSE((*r)[0].replaced);
  EXPECT_FALSE((*r)[1].replaced);  // exactly 0.5 is not above the threshold
  EXPECT_DOUBLE_EQ((*r)[1].replaced_probability, 0.5);
  EXPECT_TRUE((*r)[2].replaced);
  EXPECT_NEAR((*r)[2].replaced_probability, 1.0 / (1.0 + std::exp(-2.0)), 1e-15);
  EXPECT_FALSE(ReplacedTokens(std::vector<float>{0.f}, {"a", "b"}).ok());
}

// Predict on a real session of a synthetic model: the parts its head has, from row 1 of a padded batch.
TEST(Predict, ReadsOneRowOfASessionForEachHead) {
  std::vector<std::string> vocab = {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "cat", "sat", "on", "mat"};
  auto tok = Tokenizer::FromVocab(vocab);
  ASSERT_TRUE(tok.ok());
  const std::string config_base = R"({"model_type": "bert", "vocab_size": 10, "hidden_size": 16,
      "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 32,
      "max_position_embeddings": 32, "type_vocab_size": 2, "architectures": [")";
  auto short_enc = tok->Encode("the cat", std::string_view("on"));
  auto long_enc = tok->Encode("the [MASK] sat", std::string_view("on the mat"));
  ASSERT_TRUE(short_enc.ok() && long_enc.ok());
  const EncodedBatch batch = pad_batch({*short_enc, *long_enc}, 0);
  for (const char* arch : {"BertForSequenceClassification", "BertForTokenClassification", "BertForQuestionAnswering",
                           "BertForMaskedLM", "BertForPreTraining", "BertModel"}) {
    SCOPED_TRACE(arch);
    auto model = LoadSynthetic({.config_json = config_base + arch + "\"]}", .seed = 3, .vocab = vocab});
    ASSERT_TRUE(model.ok()) << model.status().to_string();
    auto session = Session::Create(*model, {.max_batch = 2, .max_seq = batch.seq});
    ASSERT_TRUE(session.ok());
    ASSERT_TRUE((*session)->Run({2, batch.seq, batch.input_ids.data(), batch.attention_mask.data(),
                                 batch.token_type_ids.data()}).ok());
    auto p = Predict(**session, **model, *tok, *long_enc, 1);
    ASSERT_TRUE(p.ok()) << p.status().to_string();
    EXPECT_EQ(p->tokens, long_enc->tokens);
    const std::string head = (*model)->info().head;
    EXPECT_EQ(p->head, head);
    EXPECT_EQ(p->classification.has_value(), head == "sequence_classification");
    EXPECT_EQ(p->token_labels.has_value(), head == "token_classification");
    EXPECT_EQ(p->answer.has_value(), head == "question_answering");
    EXPECT_EQ(p->masks.has_value(), head == "masked_lm" || head == "pretraining");
    EXPECT_EQ(p->is_next_probability.has_value(), head == "pretraining");
    EXPECT_EQ(p->pooler_output.has_value(), head == "none");
    if (p->classification) {  // the same numbers as the row's logits give directly
      auto logits = (*session)->Output("logits");
      auto direct = ClassifySequence(std::span<const float>(logits->data + 2, 2), (*model)->info().labels);
      EXPECT_EQ(p->classification->probabilities[0].probability, direct->probabilities[0].probability);
    }
    if (p->token_labels) {
      EXPECT_EQ(p->token_labels->size(), long_enc->tokens.size());
    }
    if (p->answer) {
      EXPECT_GE(p->answer->start_token, 5);  // "on the mat" starts at 5
    }
    if (p->masks) {
      ASSERT_EQ(p->masks->size(), 1u);
      EXPECT_EQ((*p->masks)[0].position, 2);
      EXPECT_EQ((*p->masks)[0].candidates.size(), 5u);
    }
    if (p->pooler_output) {
      EXPECT_EQ(p->pooler_output->size(), 16u);
    }
    EXPECT_FALSE(Predict(**session, **model, *tok, *long_enc, 2).ok());  // no row 2
  }
}

}  // namespace
}  // namespace bert
