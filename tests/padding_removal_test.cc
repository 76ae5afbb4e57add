// Padding removal in the shared network (SessionOptions.remove_padding), on every backend this machine
// runs: the encoder on the real tokens only gives, at every real position, what the padded run gives
// (all families: RoBERTa's positions, ALBERT's projection and shared layers, SqueezeBERT's grouped
// planes, DistilBERT without token types), zeros at padded positions of the hidden states, the same
// pooled / sequence-level outputs, and clear errors for masks it cannot pack. A CUDA backend runs the
// same cases when a GPU is present.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "bert/engine.h"
#include "engine/runtime/backend.h"
#include "engine/src/model_impl.h"
#include "tests/test_util.h"
#include "weights/synthetic.h"

namespace bert {
namespace {

struct Case {
  const char* family;
  const char* architecture;
};

std::shared_ptr<const Model> synthetic(const Case& c, Device device) {
  std::string json = test::tiny_family_config(c.family);
  json.insert(json.rfind('}'), std::string(",\"architectures\":[\"") + c.architecture + "\"]");
  auto config = parse_model_config(json, "test");
  EXPECT_TRUE(config.ok()) << config.status().to_string();
  LoadOptions load;
  load.device = device;
  auto model = load_model_from_source(synthetic_model(*config, 11), load);
  EXPECT_TRUE(model.ok()) << model.status().to_string();
  return model.ok() ? *model : nullptr;
}

// Sequences of the given lengths (real tokens first, then the pad id as tokenizers write it), random
// ids, token types on the second half of each sequence.
struct Batch {
  int B, S;
  std::vector<int32_t> ids, mask, types;
  Batch(int S, std::vector<int> lengths, int32_t vocab, bool with_types, int32_t pad = 0)
      : B(int(lengths.size())), S(S) {
    std::mt19937 rng(5);
    ids.assign(size_t(B) * S, pad), mask.assign(size_t(B) * S, 0), types.assign(size_t(B) * S, 0);
    for (int b = 0; b < B; ++b)
      for (int s = 0; s < lengths[b]; ++s) {
        ids[b * S + s] = 2 + int32_t(rng() % uint32_t(vocab - 2));
        mask[b * S + s] = 1;
        if (with_types && s >= lengths[b] / 2) types[b * S + s] = 1;
      }
  }
  BatchInput input(bool with_types) const {
    return {B, S, ids.data(), mask.data(), with_types ? types.data() : nullptr};
  }
};

bool gpu_present() {
  std::string why;
  return runtime::cuda_available(&why);
}

class PaddingRemoval : public ::testing::TestWithParam<Case> {};

TEST_P(PaddingRemoval, RealPositionsMatchThePaddedRun) {
  const Case c = GetParam();
  for (Device device : {Device::kCpu, Device::kCuda}) {
    if (device == Device::kCuda && !gpu_present()) {
      std::cout << "[ skip ] no CUDA device: the CUDA half of this test was not run\n";
      continue;
    }
    SCOPED_TRACE(device == Device::kCpu ? "cpu" : "cuda");
    auto model = synthetic(c, device);
    ASSERT_NE(model, nullptr);
    const ModelInfo& info = model->info();
    const bool types = info.type_vocab_size > 1;
    const int32_t pad = std::string(c.family) == "roberta" ? 1 : 0;
    Batch batch(24, {24, 3, 1, 17, 9}, int32_t(info.vocab_size), types, pad);
    SessionOptions opts;
    opts.max_batch = 6, opts.max_seq = 24, opts.keep_hidden_states = true, opts.pooling = Pooling::kMean;
    auto padded = Session::Create(model, opts);
    opts.remove_padding = true;
    auto packed = Session::Create(model, opts);
    ASSERT_TRUE(padded.ok() && packed.ok()) << padded.status().to_string() << packed.status().to_string();
    ASSERT_TRUE((*padded)->Run(batch.input(types)).ok());
    Status st = (*packed)->Run(batch.input(types));
    ASSERT_TRUE(st.ok()) << st.to_string();

    for (const std::string& name : (*padded)->OutputNames()) {
      SCOPED_TRACE(name);
      auto want = (*padded)->Output(name);
      auto got = (*packed)->Output(name);
      ASSERT_TRUE(want.ok() && got.ok());
      ASSERT_EQ(want->shape, got->shape);
      const bool per_token = want->shape.size() >= 2 && want->shape[0] == batch.B && want->shape[1] == batch.S;
      const int64_t width = per_token ? want->numel() / (batch.B * batch.S) : want->numel();
      double worst = 0, scale = 0;
      int64_t compared = 0;
      for (int64_t row = 0; row < (per_token ? batch.B * batch.S : 1); ++row) {
        const bool real = !per_token || batch.mask[row] != 0;
        for (int64_t j = 0; j < width; ++j) {
          const float g = got->data[row * width + j], w = want->data[row * width + j];
          if (real) {
            worst = std::max(worst, double(std::fabs(g - w)));
            scale = std::max(scale, double(std::fabs(w)));
            ++compared;
          } else if (name.rfind("hidden_states.", 0) == 0 || name == "last_hidden_state") {
            ASSERT_EQ(g, 0.f) << "padded position " << row << " of a hidden state is not 0";
          }
        }
      }
      ASSERT_GT(compared, 0);
      EXPECT_GT(scale, 0.0);  // not a comparison of zeros
      EXPECT_LE(worst, 2e-5 * std::max(1.0, scale)) << "worst abs difference " << worst << " (scale " << scale << ")";
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Zoo, PaddingRemoval,
                         ::testing::Values(Case{"bert", "BertForSequenceClassification"},
                                           Case{"bert", "BertForTokenClassification"},
                                           Case{"bert", "BertForQuestionAnswering"},
                                           Case{"bert", "BertForPreTraining"},
                                           Case{"roberta", "RobertaForSequenceClassification"},
                                           Case{"distilbert", "DistilBertForTokenClassification"},
                                           Case{"albert", "AlbertForMaskedLM"},
                                           Case{"squeezebert", "SqueezeBertForSequenceClassification"},
                                           Case{"electra", "ElectraForPreTraining"}),
                         [](const auto& info) { return std::string(info.param.architecture); });

TEST(PaddingRemoval, MasksItCannotPackAreNamed) {
  auto model = synthetic({"bert", "BertModel"}, Device::kCpu);
  ASSERT_NE(model, nullptr);
  SessionOptions opts;
  opts.max_batch = 2, opts.max_seq = 8, opts.remove_padding = true;
  auto session = Session::Create(model, opts);
  ASSERT_TRUE(session.ok()) << session.status().to_string();
  Batch batch(8, {8, 5}, 97, false);
  ASSERT_TRUE((*session)->Run(batch.input(false)).ok());
  Batch hole = batch;
  hole.mask[1 * 8 + 6] = 1;  // a real token after padding
  Status st = (*session)->Run(hole.input(false));
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("attention_mask[1][6]"), std::string::npos) << st.to_string();
  EXPECT_FALSE((*session)->Output("last_hidden_state").ok());  // a failed Run publishes nothing
  Batch empty = batch;
  for (int s = 0; s < 8; ++s) empty.mask[8 + s] = 0;  // a sequence without any real token
  st = (*session)->Run(empty.input(false));
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("attention_mask[1][0]"), std::string::npos) << st.to_string();
  // Without a mask every token is real: the same as the padded run.
  ASSERT_TRUE((*session)->Run({2, 8, batch.ids.data()}).ok());
}

}  // namespace
}  // namespace bert
