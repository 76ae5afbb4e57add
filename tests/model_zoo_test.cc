// The model zoo on small synthetic configs of every family (no ../shared needed): each architecture
// loads, produces its HF outputs with the right shapes, survives an engine-file round trip, gives a
// padded batch the same answers as its sequences alone, and refuses what the family cannot take.
// (HF-exactness itself is parity_test's job, on the fixtures.)
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <random>

#include "bert/engine.h"
#include "engine/src/model_impl.h"
#include "tests/test_util.h"
#include "weights/synthetic.h"

namespace bert {
namespace {

using json = nlohmann::json;

// A tiny config of each family (tests/test_util.h).
json tiny_config(const std::string& family) { return json::parse(test::tiny_family_config(family)); }

std::shared_ptr<const Model> load(const json& config, const std::string& architecture) {
  json j = config;
  j["architectures"] = {architecture};
  auto parsed = parse_model_config(j.dump(), architecture);
  EXPECT_TRUE(parsed.ok()) << parsed.status().to_string();
  if (!parsed.ok()) return nullptr;
  auto model = load_model_from_source(synthetic_model(*parsed, 11));
  EXPECT_TRUE(model.ok()) << model.status().to_string();
  return model.ok() ? *model : nullptr;
}

struct Arch {
  const char* family;
  const char* name;
  std::vector<std::pair<std::string, std::vector<int64_t>>> outputs;  // besides the hidden states
};

// B = 3, S = 9, H = 32, 2 labels, vocab 97.
const std::vector<Arch> kArchs = {
    {"roberta", "RobertaModel", {{"pooler_output", {3, 32}}}},
    {"roberta", "RobertaForSequenceClassification", {{"logits", {3, 2}}}},
    {"roberta", "RobertaForMaskedLM", {{"logits", {3, 9, 97}}}},
    {"roberta", "RobertaForQuestionAnswering", {{"start_logits", {3, 9}}, {"end_logits", {3, 9}}}},
    {"distilbert", "DistilBertModel", {}},
    {"distilbert", "DistilBertForSequenceClassification", {{"logits", {3, 2}}}},
    {"distilbert", "DistilBertForMaskedLM", {{"logits", {3, 9, 97}}}},
    {"distilbert", "DistilBertForTokenClassification", {{"logits", {3, 9, 2}}}},
    {"electra", "ElectraModel", {}},
    {"electra", "ElectraForSequenceClassification", {{"logits", {3, 2}}}},
    {"electra", "ElectraForPreTraining", {{"logits", {3, 9}}}},
    {"electra", "ElectraForMaskedLM", {{"logits", {3, 9, 97}}}},
    {"albert", "AlbertModel", {{"pooler_output", {3, 32}}}},
    {"albert", "AlbertForPreTraining", {{"pooler_output", {3, 32}}, {"prediction_logits", {3, 9, 97}}, {"sop_logits", {3, 2}}}},
    {"albert", "AlbertForSequenceClassification", {{"pooler_output", {3, 32}}, {"logits", {3, 2}}}},
    {"squeezebert", "SqueezeBertModel", {{"pooler_output", {3, 32}}}},
    {"squeezebert", "SqueezeBertForSequenceClassification", {{"pooler_output", {3, 32}}, {"logits", {3, 2}}}},
    {"squeezebert", "SqueezeBertForMaskedLM", {{"logits", {3, 9, 97}}}},
};

class Zoo : public ::testing::TestWithParam<Arch> {};

// Random ids avoiding the pad id (0 or 1); padded positions hold the pad id, as tokenizers write them.
struct Batch {
  static constexpr int B = 3, S = 9;
  int lengths[B] = {9, 4, 1};
  std::vector<int32_t> ids, mask, types;
  explicit Batch(int32_t pad, bool with_types) : ids(B * S, pad), mask(B * S, 0), types(B * S, 0) {
    std::mt19937 rng(5);
    std::uniform_int_distribution<int32_t> id(2, 96);
    for (int b = 0; b < B; ++b)
      for (int s = 0; s < lengths[b]; ++s) {
        ids[b * S + s] = id(rng);
        mask[b * S + s] = 1;
        types[b * S + s] = with_types && s > lengths[b] / 2;
      }
  }
  BatchInput input() const { return {B, S, ids.data(), mask.data(), types.data()}; }
};

TEST_P(Zoo, OutputsShapesRoundTripAndPadding) {
  const Arch& arch = GetParam();
  const json config = tiny_config(arch.family);
  auto model = load(config, arch.name);
  ASSERT_NE(model, nullptr);
  const ModelInfo& info = model->info();
  const int64_t pad = config["pad_token_id"];
  Batch batch(static_cast<int32_t>(pad), info.type_vocab_size > 1);
  SessionOptions opts;
  opts.max_batch = Batch::B, opts.max_seq = Batch::S, opts.keep_hidden_states = true;
  auto session = Session::Create(model, opts);
  ASSERT_TRUE(session.ok()) << session.status().to_string();
  ASSERT_TRUE((*session)->Run(batch.input()).ok());

  // Names and shapes, as HF writes them; nothing all-zero.
  auto names = (*session)->OutputNames();
  std::vector<std::pair<std::string, std::vector<int64_t>>> want = {{"last_hidden_state", {3, 9, 32}}};
  for (int l = 0; l <= 3; ++l) want.push_back({"hidden_states." + std::to_string(l), {3, 9, 32}});
  want.insert(want.end(), arch.outputs.begin(), arch.outputs.end());
  EXPECT_EQ(names.size(), want.size());
  for (const auto& [name, shape] : want) {
    auto out = (*session)->Output(name);
    ASSERT_TRUE(out.ok()) << name << ": " << out.status().to_string();
    EXPECT_EQ(out->shape, shape) << name;
    EXPECT_GT(test::max_abs(out->data, out->numel()), 0.0) << name << " is all zero";
  }

  // The engine file keeps everything (config, grouped weights, shared layers): same outputs after a round trip.
  test::TempDir tmp;
  const std::string path = (tmp / "m.bert").string();
  ASSERT_TRUE(write_engine_file(path, model->impl().source, DType::kF32).ok());
  auto reloaded = Model::Load(path);
  ASSERT_TRUE(reloaded.ok()) << reloaded.status().to_string();
  EXPECT_EQ((*reloaded)->info().family, info.family);
  auto session2 = Session::Create(*reloaded, opts);
  ASSERT_TRUE(session2.ok());
  ASSERT_TRUE((*session2)->Run(batch.input()).ok());
  for (const auto& [name, shape] : want) {
    auto a = (*session)->Output(name).value(), b = (*session2)->Output(name).value();
    EXPECT_EQ(test::max_abs_diff(a.data, b.data, a.numel()), 0.0) << name << " changed across the engine file";
  }

  // A padded batch gives each sequence what it gets alone (masks, and RoBERTa's pad-aware positions).
  auto all = (*session)->Output("last_hidden_state").value();
  auto single = Session::Create(model, opts);
  ASSERT_TRUE(single.ok());
  for (int b = 0; b < Batch::B; ++b) {
    const int n = batch.lengths[b];
    ASSERT_TRUE((*single)->Run({1, n, batch.ids.data() + b * Batch::S, nullptr, batch.types.data() + b * Batch::S}).ok());
    auto one = (*single)->Output("last_hidden_state").value();
    EXPECT_LE(test::relative_l2(all.data + b * Batch::S * 32, one.data, size_t(n) * 32), 1e-6) << "sequence " << b;
  }
}

INSTANTIATE_TEST_SUITE_P(Architectures, Zoo, ::testing::ValuesIn(kArchs),
                         [](const auto& info) { return std::string(info.param.name); });

TEST(ZooConfig, FamilyDifferencesAreData) {
  auto parse = [](const json& j) { return parse_model_config(j.dump(), "config.json"); };
  auto albert = parse(tiny_config("albert"));
  ASSERT_TRUE(albert.ok());
  EXPECT_EQ(albert->num_layer_weights(), 1);  // one set shared by the 3 layers
  EXPECT_TRUE(albert->embedding_projection);
  json two_groups = tiny_config("albert");
  two_groups["num_hidden_groups"] = 2;
  auto albert2 = parse(two_groups);
  ASSERT_TRUE(albert2.ok());
  EXPECT_EQ(albert2->layer_weights_index(0), 0);  // int(i / (3 / 2)): 0, 0, 1
  EXPECT_EQ(albert2->layer_weights_index(1), 0);
  EXPECT_EQ(albert2->layer_weights_index(2), 1);
  auto roberta = parse(tiny_config("roberta"));
  ASSERT_TRUE(roberta.ok());
  EXPECT_EQ(roberta->max_sequence_length(), 40 - 1 - 1);  // positions start at pad_token_id + 1
  auto distil = parse(tiny_config("distilbert"));
  ASSERT_TRUE(distil.ok());
  EXPECT_FALSE(distil->has_token_types());
  EXPECT_EQ(distil->hidden_act, HiddenAct::kRelu);
  auto electra = parse(tiny_config("electra"));
  ASSERT_TRUE(electra.ok());
  EXPECT_EQ(electra->embedding_size, 16);
  EXPECT_EQ(electra->classifier_act, HiddenAct::kGeluErf);
}

TEST(ZooConfig, UnsupportedOptionsAreNamed) {
  struct Case {
    const char* family;
    std::function<void(json&)> edit;
    const char* needle;
  };
  const std::vector<Case> cases = {
      {"bert", [](json& j) { j["model_type"] = "deberta-v2"; }, "model_type 'deberta-v2' is not supported"},
      {"albert", [](json& j) { j["inner_group_num"] = 2; }, "inner_group_num 2"},
      {"albert", [](json& j) { j["num_hidden_groups"] = 4; }, "num_hidden_groups 4 exceeds num_hidden_layers 3"},
      {"albert", [](json& j) { j.erase("embedding_size"); }, "missing field 'embedding_size'"},
      {"squeezebert", [](json& j) { j["q_groups"] = 3; }, "q_groups 3 does not divide"},
      {"squeezebert", [](json& j) { j["embedding_size"] = 16; }, "embedding_size 16 != hidden_size 32"},
      {"roberta", [](json& j) { j["position_embedding_type"] = "relative_key"; }, "position_embedding_type"},
      {"roberta", [](json& j) { j["architectures"] = {"BertForMaskedLM"}; },
       "'BertForMaskedLM' is for model_type 'bert', not 'roberta'"},
      {"roberta", [](json& j) { j["max_position_embeddings"] = 2; }, "leaves no positions after pad_token_id"},
      {"distilbert", [](json& j) { j["activation"] = "swish"; }, "activation 'swish'"},
      {"distilbert", [](json& j) { j.erase("dim"); }, "missing field 'dim'"},
      {"electra", [](json& j) { j["architectures"] = {"ElectraForMultipleChoice"}; }, "'ElectraForMultipleChoice'"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.needle);
    json j = tiny_config(c.family);
    c.edit(j);
    auto parsed = parse_model_config(j.dump(), "config.json");
    ASSERT_FALSE(parsed.ok());
    EXPECT_NE(parsed.status().to_string().find(c.needle), std::string::npos) << parsed.status().to_string();
    EXPECT_NE(parsed.status().to_string().find("config.json"), std::string::npos);
  }
}

TEST(ZooInputs, FamilyInputRulesAreEnforced) {
  // DistilBERT has no token types: zeros are accepted (generic pipelines send them), anything else is refused.
  auto distil = load(tiny_config("distilbert"), "DistilBertModel");
  ASSERT_NE(distil, nullptr);
  auto s = Session::Create(distil, {});
  ASSERT_TRUE(s.ok());
  std::vector<int32_t> ids = {2, 5, 7}, zeros = {0, 0, 0}, ones = {0, 1, 1};
  EXPECT_TRUE((*s)->Run({1, 3, ids.data(), nullptr, zeros.data()}).ok());
  Status st = (*s)->Run({1, 3, ids.data(), nullptr, ones.data()});
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.to_string().find("token_type_ids[0][1] = 1: distilbert models have no token types"), std::string::npos)
      << st.to_string();
  // RoBERTa: the position table allows max_position_embeddings - pad_token_id - 1 tokens.
  auto roberta = load(tiny_config("roberta"), "RobertaModel");
  ASSERT_NE(roberta, nullptr);
  EXPECT_EQ(roberta->info().max_seq, 38);
  SessionOptions too_long;
  too_long.max_seq = 39;
  auto r = Session::Create(roberta, too_long);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().to_string().find("1..38"), std::string::npos) << r.status().to_string();
  EXPECT_TRUE(Session::Create(roberta, {}).ok());
  EXPECT_EQ((*Session::Create(roberta, {}))->options().max_seq, 38);
}

// Every named synthetic shape parses and reports the parameter count of the real model.
TEST(ZooShapes, SyntheticShapesHaveTheRealSizes) {
  for (const std::string& shape : synthetic_shapes()) {
    SCOPED_TRACE(shape);
    auto j = synthetic_config_json(shape);
    ASSERT_TRUE(j.ok());
    auto c = parse_model_config(*j, shape);
    ASSERT_TRUE(c.ok()) << c.status().to_string();
  }
  auto c = parse_model_config(*synthetic_config_json("squeezebert-uncased"), "s");
  ASSERT_TRUE(c.ok());
  EXPECT_TRUE(c->groups.any());
  EXPECT_EQ(c->groups.intermediate, 4);
  EXPECT_FALSE(synthetic_config_json("gpt2").ok());
}

}  // namespace
}  // namespace bert
