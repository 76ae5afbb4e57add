// The Trainer on device cuda (built only with CUDA) against the CPU trainer, which the HF fixtures
// already pin down (tests/grad_parity_test.cc runs those through `bert_run --device cuda --grads`):
// 20 training steps with dropout on give the same loss curve (fp32: 1e-3) and parameters for every
// head, with the materialised or the fused attention, storing or recomputing the activations; fp16 / bf16 / tf32 GEMMs follow the fp32 CPU
// curve within 2e-2; fp16 loss scaling skips overflowing steps and backs off; a checkpoint resumes
// to the same losses; bert_train --device cuda trains end to end; the errors are values. GPU tests skip with a message without a GPU.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <sstream>

#include "bert/train.h"
#include "engine/src/model_impl.h"
#include "tests/cuda_test_util.h"
#include "tests/test_util.h"
#include "weights/synthetic.h"

namespace bert {
namespace {

std::shared_ptr<const Model> tiny(const std::string& shape, const std::string& architecture, Device device,
                                  Precision precision = Precision::kF32) {
  auto config = parse_model_config(*synthetic_config_json(shape, architecture), "test");
  EXPECT_TRUE(config.ok()) << config.status().to_string();
  LoadOptions load;
  load.device = device, load.precision = precision;
  auto model = load_model_from_source(synthetic_model(*config, 3), load);
  EXPECT_TRUE(model.ok()) << model.status().to_string();
  return model.ok() ? *model : nullptr;
}

// A batch for any head: random ids with [CLS] first, varying lengths (padding), and labels.
struct Batch {
  int B, S;
  std::vector<int32_t> ids, mask, types, labels, token_labels, sentence, starts, ends;
  std::vector<float> regression;
  Batch(int B, int S, uint32_t seed) : B(B), S(S), ids(B * S, 0), mask(B * S, 0), types(B * S, 0) {
    std::mt19937 rng(seed);
    for (int b = 0; b < B; ++b) {
      const int len = S - int(rng() % (S / 2));
      for (int s = 0; s < len; ++s) {
        ids[b * S + s] = s == 0 ? 101 : 1000 + int(rng() % 20000);
        mask[b * S + s] = 1;
        types[b * S + s] = s >= len / 2;
      }
      labels.push_back(int(rng() % 2));
      sentence.push_back(int(rng() % 2));
      starts.push_back(int(rng() % len));
      ends.push_back(int(rng() % len));
      regression.push_back(float(rng() % 100) / 50.f - 1.f);
    }
    for (int i = 0; i < B * S; ++i)  // per-token labels: MLM-style with ignored positions, 0/1 elsewhere
      token_labels.push_back(mask[i] && rng() % 3 == 0 ? int(rng() % 2) : -100);
  }
  BatchInput input(bool token_types = true) const {
    return {B, S, ids.data(), mask.data(), token_types ? types.data() : nullptr};
  }
  TrainLabels for_head(const std::string& head) {
    TrainLabels y;
    if (head == "sequence_classification") y.labels = labels.data();
    if (head == "token_classification" || head == "masked_lm") y.labels = token_labels.data();
    if (head == "discriminator") {
      for (auto& l : token_labels) l = l < 0 ? 0 : l;  // every token has a 0/1 label
      y.labels = token_labels.data();
    }
    if (head == "pretraining") y.labels = token_labels.data(), y.sentence_labels = sentence.data();
    if (head == "question_answering") y.start_positions = starts.data(), y.end_positions = ends.data();
    return y;
  }
};

std::vector<float> flat_parameters(const Trainer& t) {
  auto snapshot = t.Snapshot();
  EXPECT_TRUE(snapshot.ok()) << snapshot.status().to_string();
  std::vector<float> all;
  if (!snapshot.ok()) return all;
  for (const auto& [name, tensor] : (*snapshot)->impl().f32)
    all.insert(all.end(), tensor.as<float>(), tensor.as<float>() + tensor.numel());
  return all;
}

struct Case {
  std::string shape, architecture;
  OptimizerKind optimizer;
  TrainPrecision precision = TrainPrecision::kF32;
  bool fused_attention = false;
  bool recompute = false;
};

class CudaTrainerParity : public ::testing::TestWithParam<Case> {};

TEST_P(CudaTrainerParity, TwentyStepsFollowTheCpuLossCurve) {
  BERT_REQUIRE_GPU();
  const Case& c = GetParam();
  auto cpu_model = tiny(c.shape, c.architecture, Device::kCpu);
  auto gpu_model = tiny(c.shape, c.architecture, Device::kCuda);
  ASSERT_TRUE(cpu_model && gpu_model);
  TrainerOptions o;
  o.max_batch = 4, o.max_seq = 24, o.dropout = 0.1f, o.seed = 11;
  o.optimizer.kind = c.optimizer, o.optimizer.lr = 1e-3f;
  auto cpu = Trainer::Create(cpu_model, o);
  TrainerOptions og = o;
  og.precision = c.precision, og.fused_attention = c.fused_attention, og.recompute_activations = c.recompute;
  auto gpu = Trainer::Create(gpu_model, og);
  // fp32 (either attention): summation order only. Tensor-core GEMMs round their operands.
  const double tol = c.precision == TrainPrecision::kF32 ? 1e-3 : 2e-2;
  ASSERT_TRUE(cpu.ok()) << cpu.status().to_string();
  ASSERT_TRUE(gpu.ok()) << gpu.status().to_string();
  const std::string head = cpu_model->info().head;
  const bool types = cpu_model->info().type_vocab_size > 0;  // DistilBERT has none
  double first = 0, last = 0;
  for (int step = 0; step < 20; ++step) {
    Batch batch(step % 3 == 2 ? 3 : 4, step % 2 ? 24 : 17, 100 + step);  // batch and seq vary below the plan
    TrainLabels y = batch.for_head(head);
    auto lc = (*cpu)->ForwardBackward(batch.input(types), y);
    auto lg = (*gpu)->ForwardBackward(batch.input(types), y);
    ASSERT_TRUE(lc.ok()) << lc.status().to_string();
    ASSERT_TRUE(lg.ok()) << lg.status().to_string();
    EXPECT_NEAR(*lg, *lc, tol * std::max(1.0, std::fabs(*lc))) << "step " << step;
    auto nc = (*cpu)->Step(o.optimizer.lr);
    auto ng = (*gpu)->Step(o.optimizer.lr);
    ASSERT_TRUE(nc.ok() && ng.ok()) << nc.status().to_string() << ng.status().to_string();
    EXPECT_NEAR(*ng, *nc, tol * std::max(1.0, *nc)) << "gradient norm, step " << step;
    if (step == 0) first = *lc;
    last = *lc;
  }
  EXPECT_NE(first, last) << "training changed nothing: the comparison would mean little";
  EXPECT_EQ((*gpu)->steps(), 20);
  const std::vector<float> pc = flat_parameters(**cpu), pg = flat_parameters(**gpu);
  ASSERT_EQ(pc.size(), pg.size());
  EXPECT_LE(test::relative_l2(pg.data(), pc.data(), pc.size()), c.precision == TrainPrecision::kF32 ? 1e-4 : 1e-2);
}

INSTANTIATE_TEST_SUITE_P(
    Heads, CudaTrainerParity,
    ::testing::Values(Case{"bert-tiny", "BertForSequenceClassification", OptimizerKind::kAdamW},
                      Case{"bert-tiny", "BertForPreTraining", OptimizerKind::kLamb},
                      Case{"bert-tiny", "BertForMaskedLM", OptimizerKind::kAdamW},
                      Case{"bert-tiny", "BertForQuestionAnswering", OptimizerKind::kAdamW},
                      Case{"bert-tiny", "BertForTokenClassification", OptimizerKind::kAdamW},
                      Case{"electra-small", "ElectraForPreTraining", OptimizerKind::kAdamW},
                      Case{"distilbert-base", "DistilBertForSequenceClassification", OptimizerKind::kAdamW},
                      Case{"squeezebert-uncased", "SqueezeBertForSequenceClassification", OptimizerKind::kAdamW},
                      Case{"albert-base", "AlbertForPreTraining", OptimizerKind::kLamb},
                      Case{"bert-tiny", "BertForPreTraining", OptimizerKind::kLamb, TrainPrecision::kF32, true},
                      Case{"squeezebert-uncased", "SqueezeBertForSequenceClassification", OptimizerKind::kAdamW,
                           TrainPrecision::kF32, true},
                      Case{"bert-tiny", "BertForSequenceClassification", OptimizerKind::kAdamW, TrainPrecision::kF32,
                           false, true},
                      Case{"electra-small", "ElectraForPreTraining", OptimizerKind::kAdamW, TrainPrecision::kF32, true,
                           true},
                      Case{"bert-mini", "BertForSequenceClassification", OptimizerKind::kAdamW, TrainPrecision::kF16},
                      Case{"bert-mini", "BertForPreTraining", OptimizerKind::kLamb, TrainPrecision::kF16, true},
                      Case{"bert-mini", "BertForQuestionAnswering", OptimizerKind::kAdamW, TrainPrecision::kBF16},
                      Case{"bert-mini", "BertForMaskedLM", OptimizerKind::kAdamW, TrainPrecision::kTF32}),
    [](const auto& info) {
      return info.param.architecture + "_" + train_precision_name(info.param.precision) +
             (info.param.fused_attention ? "_fused" : "") + (info.param.recompute ? "_recompute" : "");
    });

TEST(CudaTrainer, Fp16LossScalingSkipsOverflowingStepsAndBacksOff) {
  BERT_REQUIRE_GPU();
  auto model = tiny("bert-tiny", "BertForSequenceClassification", Device::kCuda);
  ASSERT_TRUE(model);
  TrainerOptions o;
  o.max_batch = 4, o.max_seq = 16, o.dropout = 0, o.precision = TrainPrecision::kF16;
  o.loss_scaling.init_scale = 0x1p120f;  // the scaled gradients overflow fp16 (and fp32) at once
  o.loss_scaling.growth_interval = 2;
  auto t = Trainer::Create(model, o);
  ASSERT_TRUE(t.ok()) << t.status().to_string();
  EXPECT_EQ((*t)->loss_scale(), 0x1p120f);
  auto before = flat_parameters(**t);
  int skipped = 0;
  for (int i = 0; i < 200 && (*t)->steps() < 3; ++i) {
    Batch batch(4, 16, 7 + i);
    auto loss = (*t)->ForwardBackward(batch.input(), batch.for_head("sequence_classification"));
    ASSERT_TRUE(loss.ok()) << loss.status().to_string();  // an overflow in the gradients is not an error
    EXPECT_TRUE(std::isfinite(*loss));
    auto norm = (*t)->Step(1e-3f);
    ASSERT_TRUE(norm.ok()) << norm.status().to_string();
    if (std::isinf(*norm) && ++skipped == 1) {
      EXPECT_EQ(flat_parameters(**t), before) << "a skipped step changed the parameters";
    }
  }
  EXPECT_GT(skipped, 0);
  EXPECT_EQ((*t)->steps(), 3) << "the scale never came down far enough to step";
  EXPECT_LT((*t)->loss_scale(), 0x1p120f);
  EXPECT_NE(flat_parameters(**t), before);
}

TEST(CudaTrainer, CheckpointResumesToTheSameLosses) {
  BERT_REQUIRE_GPU();
  auto model = tiny("bert-tiny", "BertForSequenceClassification", Device::kCuda);
  ASSERT_TRUE(model);
  TrainerOptions o;
  o.max_batch = 4, o.max_seq = 16, o.dropout = 0.1f, o.seed = 5;
  auto run = [&](Trainer& t, int from, int to) {
    std::vector<double> losses;
    for (int step = from; step < to; ++step) {
      Batch batch(4, 16, 300 + step);
      auto loss = t.ForwardBackward(batch.input(), batch.for_head("sequence_classification"));
      EXPECT_TRUE(loss.ok()) << loss.status().to_string();
      losses.push_back(loss.ok() ? *loss : NAN);
      EXPECT_TRUE(t.Step(1e-3f).ok());
    }
    return losses;
  };
  auto straight = Trainer::Create(model, o);
  ASSERT_TRUE(straight.ok()) << straight.status().to_string();
  const std::vector<double> want = run(**straight, 0, 6);

  test::TempDir tmp;
  const std::string ckpt = (tmp / "ckpt.bert").string();
  auto first = Trainer::Create(model, o);
  ASSERT_TRUE(first.ok());
  run(**first, 0, 3);
  ASSERT_TRUE((*first)->SaveCheckpoint(ckpt, "{\"step\": 3}").ok());
  auto resumed = Trainer::Create(model, o);
  ASSERT_TRUE(resumed.ok());
  auto state = (*resumed)->LoadCheckpoint(ckpt);
  ASSERT_TRUE(state.ok()) << state.status().to_string();
  EXPECT_EQ(*state, "{\"step\": 3}");
  EXPECT_EQ((*resumed)->steps(), 3);
  const std::vector<double> got = run(**resumed, 3, 6);
  for (int i = 0; i < 3; ++i) EXPECT_NEAR(got[i], want[3 + i], 1e-6 * std::fabs(want[3 + i])) << "step " << 3 + i;
}

TEST(CudaTrainer, BertTrainRunsOnTheGpu) {
  BERT_REQUIRE_GPU();
  BERT_REQUIRE_SHARED(shared);
  test::TempDir tmp;
  const auto data = shared / "data" / "glue-sst2";
  auto r = test::run_command((test::tools_dir() / "bert_train").string() + " --device cuda --synthetic bert-tiny" +
                             " --architecture BertForSequenceClassification --vocab " +
                             (shared / "models" / "bert-base-uncased-tokenizer" / "vocab.txt").string() +
                             " --train " + (data / "train.tsv").string() + " --dev " + (data / "dev.tsv").string() +
                             " --limit-train 512 --limit-dev 128 --epochs 1 --batch 32 --max-seq 64 --lr 1e-3" +
                             " --out " + (tmp / "out.bert").string() + " --log " + (tmp / "log.jsonl").string());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(test::read_file(tmp / "log.jsonl").find("\"dev_accuracy\""), std::string::npos)
      << test::read_file(tmp / "log.jsonl");
}

// MLM + NSP pre-training through bert_train on the GPU with the memory-saving options and fp16 GEMMs:
// the pipeline runs and the loss comes down.
TEST(CudaTrainer, BertTrainPretrainsOnTheGpu) {
  BERT_REQUIRE_GPU();
  BERT_REQUIRE_SHARED(shared);
  test::TempDir tmp;
  std::string docs;
  for (int d = 0; d < 24; ++d)
    docs += d % 2 ? "a good movie .\nthe plot is nice .\na great movie .\n\n" : "a bad movie .\nthe plot is poor .\n"
                                                                             "an awful movie .\n\n";
  test::write_file(tmp / "docs.txt", docs);
  auto r = test::run_command((test::tools_dir() / "bert_train").string() + " --device cuda --task pretrain" +
                             " --synthetic bert-tiny --architecture BertForPreTraining --vocab " +
                             (shared / "models" / "bert-base-uncased-tokenizer" / "vocab.txt").string() +
                             " --train " + (tmp / "docs.txt").string() + " --epochs 12 --batch 16 --lr 2e-3" +
                             " --warmup 0 --dropout 0 --max-seq 128 --precision fp16 --attention fused --recompute yes" +
                             " --out " + (tmp / "pre.bert").string() + " --log " + (tmp / "log.jsonl").string());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  std::vector<double> losses;
  std::istringstream lines(test::read_file(tmp / "log.jsonl"));
  for (std::string line; std::getline(lines, line);) {
    const size_t at = line.find("\"train_loss\":");
    ASSERT_NE(at, std::string::npos) << line;
    losses.push_back(std::stod(line.substr(at + 13)));
  }
  ASSERT_EQ(losses.size(), 12u);
  EXPECT_LT(losses.back(), 0.8 * losses.front());
}

TEST(CudaTrainer, ErrorsAreValues) {
  BERT_REQUIRE_GPU();
  auto fp16 = tiny("bert-tiny", "BertForSequenceClassification", Device::kCuda, Precision::kF16);
  ASSERT_TRUE(fp16);
  auto refused = Trainer::Create(fp16, {});
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.status().message().find("fp32"), std::string::npos) << refused.status().to_string();

  auto model = tiny("bert-tiny", "BertForSequenceClassification", Device::kCuda);
  TrainerOptions o;
  o.max_batch = 2, o.max_seq = 8;
  auto t = Trainer::Create(model, o);
  ASSERT_TRUE(t.ok());
  Batch batch(2, 8, 1);
  batch.labels[1] = 7;  // two labels: 7 is out of range
  auto bad = (*t)->ForwardBackward(batch.input(), batch.for_head("sequence_classification"));
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("labels"), std::string::npos) << bad.status().to_string();
  Batch big(3, 8, 1);
  EXPECT_FALSE((*t)->ForwardBackward(big.input(), big.for_head("sequence_classification")).ok());
  EXPECT_FALSE((*t)->Step(-1.f).ok());
}

}  // namespace
}  // namespace bert
