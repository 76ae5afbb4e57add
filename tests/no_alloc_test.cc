// "No allocation per call": after the first Run of a shape, Session::Run allocates no buffers, and a
// training step (Trainer::ForwardBackward + Step) allocates none either.
// operator new is tracked in this test binary. oneDNN's execute() builds small argument maps on
// every call (tens of bytes each), which we cannot avoid; nothing the size of an activation may appear.
#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <new>

#include "bert/engine.h"
#include "bert/train.h"
#include "engine/src/model_impl.h"
#include "weights/synthetic.h"

namespace {
std::atomic<long> g_news{0};
std::atomic<size_t> g_largest{0};
}

void* operator new(size_t n) {
  ++g_news;
  size_t prev = g_largest.load();
  while (n > prev && !g_largest.compare_exchange_weak(prev, n)) {
  }
  if (void* p = std::malloc(n ? n : 1)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, size_t) noexcept { std::free(p); }

namespace bert {
namespace {

TEST(NoAlloc, RunAllocatesNothingAfterTheFirstCallOfAShape) {
  for (const char* arch : {"BertForPreTraining", "BertForQuestionAnswering", "BertForTokenClassification"}) {
    SCOPED_TRACE(arch);
    auto config = parse_model_config(*synthetic_config_json("bert-tiny", arch), "test");
    ASSERT_TRUE(config.ok());
    auto model = load_model_from_source(synthetic_model(*config, 3));
    ASSERT_TRUE(model.ok());
    SessionOptions opts;
    opts.max_batch = 4, opts.max_seq = 64, opts.keep_hidden_states = true;
    auto session = Session::Create(*model, opts);
    ASSERT_TRUE(session.ok());
    std::vector<int32_t> ids(4 * 64, 1234), mask(4 * 64, 1);
    ASSERT_TRUE((*session)->Run({4, 64, ids.data(), mask.data()}).ok());
    ASSERT_TRUE((*session)->Run({1, 9, ids.data(), mask.data()}).ok());
    const long before = g_news.load();
    g_largest = 0;
    for (int i = 0; i < 3; ++i) {
      Status st = (*session)->Run({4, 64, ids.data(), mask.data()});
      ASSERT_TRUE(st.ok());
      st = (*session)->Run({1, 9, ids.data(), mask.data()});
      ASSERT_TRUE(st.ok());
    }
    const size_t smallest_activation = 9 * 128 * sizeof(float);  // [1, 9, hidden 128]
    EXPECT_LT(g_largest.load(), smallest_activation)
        << (g_news.load() - before) << " allocations during planned runs, the largest " << g_largest.load() << " bytes";
  }
}

TEST(NoAlloc, TrainingStepAllocatesNothingAfterTheFirst) {
  for (const char* arch : {"BertForSequenceClassification", "BertForMaskedLM", "BertForQuestionAnswering"}) {
    SCOPED_TRACE(arch);
    auto config = parse_model_config(*synthetic_config_json("bert-tiny", arch), "test");
    ASSERT_TRUE(config.ok());
    auto model = load_model_from_source(synthetic_model(*config, 3));
    ASSERT_TRUE(model.ok());
    TrainerOptions opts;
    opts.max_batch = 4, opts.max_seq = 32, opts.dropout = 0.1f;
    auto trainer = Trainer::Create(*model, opts);
    ASSERT_TRUE(trainer.ok()) << trainer.status().to_string();
    std::vector<int32_t> ids(4 * 32, 1234), mask(4 * 32, 1), labels(4 * 32, 7), positions(4, 3);
    for (size_t i = 0; i < labels.size(); i += 2) labels[i] = -100;
    TrainLabels y;
    y.labels = std::string(arch) == "BertForSequenceClassification" ? positions.data() : labels.data();
    for (int32_t& l : positions) l = 1;
    y.start_positions = positions.data(), y.end_positions = positions.data();
    auto step = [&](int batch, int seq) {
      auto loss = (*trainer)->ForwardBackward({batch, seq, ids.data(), mask.data()}, y);
      ASSERT_TRUE(loss.ok()) << loss.status().to_string();
      auto norm = (*trainer)->Step(1e-3f);
      ASSERT_TRUE(norm.ok()) << norm.status().to_string();
    };
    step(4, 32), step(2, 9);
    const long before = g_news.load();
    g_largest = 0;
    for (int i = 0; i < 2; ++i) step(4, 32), step(2, 9);
    const size_t smallest_activation = 2 * 9 * 128 * sizeof(float);  // [2, 9, hidden 128]
    EXPECT_LT(g_largest.load(), smallest_activation)
        << (g_news.load() - before) << " allocations during planned steps, the largest " << g_largest.load() << " bytes";
  }
}

}  // namespace
}  // namespace bert
