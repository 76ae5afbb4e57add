// The Trainer API on small synthetic models (no ../shared needed): the loss agrees with the inference
// session's logits, gradient accumulation adds up, dropout follows its seed, steps change the
// model, and bad labels or inputs are errors naming the problem.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "bert/train.h"
#include "engine/src/model_impl.h"
#include "tests/test_util.h"
#include "weights/synthetic.h"

namespace bert {
namespace {

std::shared_ptr<const Model> tiny(const std::string& architecture) {
  auto config = parse_model_config(*synthetic_config_json("bert-tiny", architecture), "test");
  EXPECT_TRUE(config.ok()) << config.status().to_string();
  auto model = load_model_from_source(synthetic_model(*config, 3));
  EXPECT_TRUE(model.ok());
  return *model;
}

struct Data {
  static constexpr int B = 4, S = 9;
  std::vector<int32_t> ids, mask;
  std::vector<int32_t> labels = {0, 1, 1, 0};
  Data() : ids(B * S), mask(B * S, 1) {
    std::mt19937 rng(1);
    for (auto& x : ids) x = 1000 + static_cast<int32_t>(rng() % 20000);
    for (int s = 6; s < S; ++s) mask[1 * S + s] = 0;  // one padded sequence
  }
  BatchInput input(int first = 0, int count = B) const {
    return {count, S, ids.data() + first * S, mask.data() + first * S, nullptr};
  }
};

std::vector<float> flat_gradients(const Trainer& t) {
  std::vector<float> all;
  for (const NamedArray& g : t.Gradients()) all.insert(all.end(), g.values.begin(), g.values.end());
  return all;
}

TEST(TrainerApi, LossMatchesSessionLogitsAndAccumulationAddsUp) {
  auto model = tiny("BertForSequenceClassification");
  Data d;
  TrainerOptions o;
  o.max_batch = Data::B, o.max_seq = Data::S, o.dropout = 0;
  auto trainer = Trainer::Create(model, o);
  ASSERT_TRUE(trainer.ok()) << trainer.status().to_string();
  TrainLabels y;
  y.labels = d.labels.data();
  auto loss = (*trainer)->ForwardBackward(d.input(), y);
  ASSERT_TRUE(loss.ok()) << loss.status().to_string();

  // The same loss from the inference engine's logits.
  auto session = Session::Create(model, {.max_batch = Data::B, .max_seq = Data::S});
  ASSERT_TRUE(session.ok());
  ASSERT_TRUE((*session)->Run(d.input()).ok());
  auto logits = (*session)->Output("logits").value();
  double want = 0;
  for (int b = 0; b < Data::B; ++b) {
    const float* x = logits.data + 2 * b;
    const double mx = std::max(x[0], x[1]);
    want += std::log(std::exp(x[0] - mx) + std::exp(x[1] - mx)) + mx - x[d.labels[b]];
  }
  want /= Data::B;
  EXPECT_NEAR(*loss, want, 1e-5 * std::fabs(want));

  // Two half batches at loss_scale 0.5 accumulate the full batch's gradient.
  const std::vector<float> full = flat_gradients(**trainer);
  ASSERT_GT(test::max_abs(full.data(), full.size()), 0.0);
  (*trainer)->ZeroGrad();
  EXPECT_EQ(test::max_abs(flat_gradients(**trainer).data(), full.size()), 0.0);
  TrainLabels first, second;
  first.labels = d.labels.data(), second.labels = d.labels.data() + 2;
  ASSERT_TRUE((*trainer)->ForwardBackward(d.input(0, 2), first, 0.5f).ok());
  ASSERT_TRUE((*trainer)->ForwardBackward(d.input(2, 2), second, 0.5f).ok());
  const std::vector<float> accumulated = flat_gradients(**trainer);
  EXPECT_LE(test::relative_l2(accumulated.data(), full.data(), full.size()), 1e-5);
}

TEST(TrainerApi, DropoutFollowsTheSeedAndStepsTrain) {
  auto model = tiny("BertForSequenceClassification");
  Data d;
  TrainLabels y;
  y.labels = d.labels.data();
  auto loss_with = [&](uint64_t seed, float dropout) {
    TrainerOptions o;
    o.max_batch = Data::B, o.max_seq = Data::S, o.dropout = dropout, o.seed = seed;
    auto t = Trainer::Create(model, o);
    return (*t)->ForwardBackward(d.input(), y).value();
  };
  EXPECT_EQ(loss_with(7, 0.1f), loss_with(7, 0.1f));
  EXPECT_NE(loss_with(7, 0.1f), loss_with(8, 0.1f));
  EXPECT_NE(loss_with(7, 0.1f), loss_with(7, 0.f));

  // Steps on one batch bring its loss down; the snapshot is a working model.
  TrainerOptions o;
  o.max_batch = Data::B, o.max_seq = Data::S, o.dropout = 0;
  o.optimizer.weight_decay = 0;
  auto t = Trainer::Create(model, o);
  const double before = (*t)->ForwardBackward(d.input(), y).value();
  ASSERT_TRUE((*t)->Step(1e-3f).ok());
  for (int i = 0; i < 9; ++i) {
    ASSERT_TRUE((*t)->ForwardBackward(d.input(), y).ok());
    ASSERT_TRUE((*t)->Step(1e-3f).ok());
  }
  EXPECT_EQ((*t)->steps(), 10);
  const double after = (*t)->ForwardBackward(d.input(), y).value();
  EXPECT_LT(after, 0.5 * before);
  auto snapshot = (*t)->Snapshot();
  ASSERT_TRUE(snapshot.ok());
  auto session = Session::Create(*snapshot, {.max_batch = Data::B, .max_seq = Data::S});
  ASSERT_TRUE((*session)->Run(d.input()).ok());
}

TEST(TrainerApi, BadLabelsAndInputsAreNamed) {
  Data d;
  TrainerOptions o;
  o.max_batch = Data::B, o.max_seq = Data::S;
  auto cls = Trainer::Create(tiny("BertForSequenceClassification"), o);
  ASSERT_TRUE(cls.ok());
  std::vector<int32_t> bad = {0, 5, 1, 0};
  TrainLabels y;
  auto r = (*cls)->ForwardBackward(d.input(), y);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().to_string().find("needs labels 'labels'"), std::string::npos) << r.status().to_string();
  y.labels = bad.data();
  r = (*cls)->ForwardBackward(d.input(), y);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().to_string().find("labels[1] = 5 is outside 0..1"), std::string::npos) << r.status().to_string();
  std::vector<int32_t> ids = d.ids;
  ids[3] = 40000;
  y.labels = d.labels.data();
  r = (*cls)->ForwardBackward({Data::B, Data::S, ids.data(), nullptr, nullptr}, y);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().to_string().find("input_ids[0][3] = 40000"), std::string::npos) << r.status().to_string();
  r = (*cls)->ForwardBackward(d.input(0, Data::B + 1), y);
  EXPECT_FALSE(r.ok());

  auto qa = Trainer::Create(tiny("BertForQuestionAnswering"), o);
  ASSERT_TRUE(qa.ok());
  r = (*qa)->ForwardBackward(d.input(), TrainLabels{});
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().to_string().find("start_positions"), std::string::npos);
  auto base = Trainer::Create(tiny("BertModel"), o);
  ASSERT_TRUE(base.ok());
  EXPECT_FALSE((*base)->ForwardBackward(d.input(), y).ok());
  TrainerOptions bad_dropout = o;
  bad_dropout.dropout = 1.f;
  EXPECT_FALSE(Trainer::Create(tiny("BertModel"), bad_dropout).ok());
}

TEST(TrainerApi, OptionsTheCpuBackendLacksAreRefused) {
  TrainerOptions o;
  o.max_batch = Data::B, o.max_seq = Data::S;
  o.precision = TrainPrecision::kF16;
  auto fp16 = Trainer::Create(tiny("BertForSequenceClassification"), o);
  ASSERT_FALSE(fp16.ok());
  EXPECT_NE(fp16.status().to_string().find("the CPU trains in fp32 or bf16"), std::string::npos)
      << fp16.status().to_string();
  o.precision = TrainPrecision::kF32, o.fused_attention = true;
  auto fused = Trainer::Create(tiny("BertForSequenceClassification"), o);
  ASSERT_FALSE(fused.ok());
  EXPECT_NE(fused.status().to_string().find("fused attention for training has no kernel on cpu"), std::string::npos)
      << fused.status().to_string();
  o.fused_attention = false, o.loss_scaling.backoff = 2.f;
  auto scaling = Trainer::Create(tiny("BertForSequenceClassification"), o);
  ASSERT_FALSE(scaling.ok());
  EXPECT_NE(scaling.status().to_string().find("loss_scaling"), std::string::npos);
  o.loss_scaling = {};
  auto ok = Trainer::Create(tiny("BertForSequenceClassification"), o);
  ASSERT_TRUE(ok.ok()) << ok.status().to_string();
  EXPECT_EQ((*ok)->loss_scale(), 1.f);
}

// Recomputation is a decision of the shared model, so it runs on every backend: keeping only each
// layer's input and recomputing its activations (dropout masks regenerated from the same sites) gives
// the gradients of the run that kept everything, bit for bit, for every head kind.
TEST(TrainerApi, RecomputedActivationsGiveTheSameGradients) {
  Data d;
  std::vector<int32_t> token_labels(Data::B * Data::S, 1);
  for (size_t i = 0; i < token_labels.size(); i += 3) token_labels[i] = 0;
  for (const char* arch : {"BertForSequenceClassification", "BertForTokenClassification", "BertForMaskedLM"}) {
    SCOPED_TRACE(arch);
    auto model = tiny(arch);
    TrainLabels y;
    const bool per_token = std::string(arch) != "BertForSequenceClassification";
    y.labels = per_token ? token_labels.data() : d.labels.data();
    std::vector<float> grads[2];
    double losses[2];
    for (int recompute = 0; recompute < 2; ++recompute) {
      TrainerOptions o;
      o.max_batch = Data::B, o.max_seq = Data::S, o.dropout = 0.1f, o.seed = 5;
      o.recompute_activations = recompute;
      auto trainer = Trainer::Create(model, o);
      ASSERT_TRUE(trainer.ok()) << trainer.status().to_string();
      auto loss = (*trainer)->ForwardBackward(d.input(), y);
      ASSERT_TRUE(loss.ok()) << loss.status().to_string();
      losses[recompute] = *loss;
      grads[recompute] = flat_gradients(**trainer);
    }
    EXPECT_EQ(losses[0], losses[1]);
    ASSERT_EQ(grads[0].size(), grads[1].size());
    double norm = 0;
    for (size_t i = 0; i < grads[0].size(); ++i) {
      ASSERT_EQ(grads[0][i], grads[1][i]) << "gradient element " << i;
      norm += double(grads[0][i]) * grads[0][i];
    }
    EXPECT_GT(norm, 0.0);  // the comparison is not between two zero vectors
  }
}

// Batches of 256 tokens and more run the backward GEMMs of layers with 2^19 weights and more on oneDNN's
// blocked layout of their b operand (engine/model/network.cc, kReorderMinRows / kReorderMinWeights);
// smaller ones on the plain layout. A model whose FFN layers are 128 x 8192 (2^20 weights), a batch of
// 320 tokens and its two halves (loss_scale 1/2 each, accumulated) must give the same gradients.
TEST(TrainerApi, LargeBatchGradientsMatchAccumulatedHalves) {
  constexpr int B = 8, S = 40;
  std::vector<int32_t> ids(B * S), labels = {0, 1, 1, 0, 1, 0, 0, 1};
  std::mt19937 rng(4);
  for (auto& x : ids) x = 1000 + static_cast<int32_t>(rng() % 20000);
  std::string json = *synthetic_config_json("bert-tiny", "BertForSequenceClassification");
  const size_t at = json.find("\"intermediate_size\"");
  ASSERT_NE(at, std::string::npos) << json;
  const size_t value = json.find_first_of("0123456789", at), end = json.find_first_not_of("0123456789", value);
  json.replace(value, end - value, "8192");
  auto config = parse_model_config(json, "test");
  ASSERT_TRUE(config.ok()) << config.status().to_string();
  ASSERT_EQ(config->intermediate_size * config->hidden_size, int64_t{1} << 20);
  auto loaded = load_model_from_source(synthetic_model(*config, 3));
  ASSERT_TRUE(loaded.ok()) << loaded.status().to_string();
  auto model = *loaded;
  std::vector<float> grads[2];
  for (int halves = 0; halves < 2; ++halves) {
    TrainerOptions o;
    o.max_batch = B, o.max_seq = S, o.dropout = 0.f;
    auto trainer = Trainer::Create(model, o);
    ASSERT_TRUE(trainer.ok()) << trainer.status().to_string();
    TrainLabels y;
    if (!halves) {
      y.labels = labels.data();
      ASSERT_TRUE((*trainer)->ForwardBackward({B, S, ids.data(), nullptr, nullptr}, y).ok());
    } else {
      for (int h = 0; h < 2; ++h) {
        y.labels = labels.data() + h * B / 2;
        ASSERT_TRUE((*trainer)->ForwardBackward({B / 2, S, ids.data() + h * B / 2 * S, nullptr, nullptr}, y, 0.5f).ok());
      }
    }
    grads[halves] = flat_gradients(**trainer);
  }
  ASSERT_EQ(grads[0].size(), grads[1].size());
  double diff = 0, norm = 0;
  for (size_t i = 0; i < grads[0].size(); ++i) {
    diff += (double(grads[0][i]) - grads[1][i]) * (double(grads[0][i]) - grads[1][i]);
    norm += double(grads[0][i]) * grads[0][i];
  }
  EXPECT_GT(norm, 0.0);
  EXPECT_LE(std::sqrt(diff / norm), 1e-5);
}

// TrainerOptions.profile: the network's ops (GEMM ops naming their implementation), the gradient check
// and the optimizer; nothing when off. A profiled Session names its GEMMs' implementations too.
TEST(TrainerApi, ProfileNamesOpsAndGemmImplementations) {
  Data d;
  auto model = tiny("BertForSequenceClassification");
  TrainLabels y;
  y.labels = d.labels.data();
  for (bool profile : {false, true}) {
    TrainerOptions o;
    o.max_batch = Data::B, o.max_seq = Data::S, o.profile = profile;
    auto trainer = Trainer::Create(model, o);
    ASSERT_TRUE(trainer.ok()) << trainer.status().to_string();
    ASSERT_TRUE((*trainer)->ForwardBackward(d.input(), y).ok());
    ASSERT_TRUE((*trainer)->Step(1e-4f).ok());
    const std::vector<OpProfile> ops = (*trainer)->Profile();
    if (!profile) {
      EXPECT_TRUE(ops.empty());
      continue;
    }
    auto find = [&](const std::string& name) -> const OpProfile* {
      for (const OpProfile& p : ops)
        if (p.op == name) return &p;
      return nullptr;
    };
    for (const char* gemm : {"gemm.qkv", "gemm.ffn_in", "backward.gemm.ffn_in.dx", "backward.gemm.ffn_in.dW"}) {
      const OpProfile* p = find(gemm);
      ASSERT_NE(p, nullptr) << gemm;
      EXPECT_FALSE(p->impl.empty()) << gemm;
      EXPECT_EQ(p->display_name(), p->op + " [" + p->impl + "]");
      EXPECT_GT(p->calls, 0);
    }
    for (const char* other : {"layernorm", "backward.layernorm", "backward.gemm.ffn_in.db", "optimizer.step",
                              "check.finite"}) {
      const OpProfile* p = find(other);
      ASSERT_NE(p, nullptr) << other;
      EXPECT_TRUE(p->impl.empty()) << other << ": " << p->impl;
      EXPECT_EQ(p->display_name(), p->op);
    }
  }
  SessionOptions so;
  so.max_batch = Data::B, so.max_seq = Data::S, so.profile = true;
  auto session = Session::Create(model, so);
  ASSERT_TRUE(session.ok()) << session.status().to_string();
  ASSERT_TRUE((*session)->Run(d.input()).ok());
  bool named = false;
  for (const OpProfile& p : (*session)->Profile())
    if (p.op == "gemm.qkv") named = !p.impl.empty();
  EXPECT_TRUE(named) << "gemm.qkv has no implementation in the session's profile";
}

}  // namespace
}  // namespace bert
