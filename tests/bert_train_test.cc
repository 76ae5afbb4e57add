// tools/bert_train end to end: a CI-sized SST-2 run from scratch (the loss falls, dev accuracy well
// above chance), bit-identical resume from a checkpoint, MLM pre-training on raw text, the trained
// model through bert_run and back to an HF directory, and clear errors for bad data.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <sstream>

#include "tests/test_util.h"
#include "weights/safetensors.h"

namespace bert {
namespace {

namespace fs = std::filesystem;

std::string tool(const char* name) { return (test::tools_dir() / name).string(); }

std::vector<nlohmann::json> json_lines(const std::string& text) {
  std::vector<nlohmann::json> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);)
    if (!line.empty() && line[0] == '{') out.push_back(nlohmann::json::parse(line));
  return out;
}

// A few hundred steps of bert-tiny from scratch on an SST-2 subset: the CI-sized version of the
// issue's bert-mini run (docs/TRAINING.md has the full one).
TEST(BertTrain, Sst2FromScratchLearns) {
  BERT_REQUIRE_SHARED(shared);
  test::TempDir tmp;
  const fs::path data = shared / "data" / "glue-sst2";
  const std::string vocab = (shared / "models" / "bert-base-uncased-tokenizer" / "vocab.txt").string();
  const std::string cmd = tool("bert_train") + " --synthetic bert-tiny --architecture BertForSequenceClassification" +
                          " --vocab " + vocab + " --train " + (data / "train.tsv").string() + " --dev " +
                          (data / "dev.tsv").string() + " --limit-train 9600 --epochs 2 --batch 32 --lr 1e-3" +
                          " --warmup 0.1 --max-seq 64 --threads 2 --out " + (tmp / "sst2.bert").string() +
                          " --log " + (tmp / "log.jsonl").string();
  auto r = test::run_command(cmd);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  auto epochs = json_lines(test::read_file(tmp / "log.jsonl"));
  ASSERT_EQ(epochs.size(), 2u) << r.output;
  std::printf("%s\n%s\n", epochs[0].dump().c_str(), epochs[1].dump().c_str());
  EXPECT_LT(epochs[1]["train_loss"].get<double>(), epochs[0]["train_loss"].get<double>());
  EXPECT_LT(epochs[1]["train_loss"].get<double>(), 0.62);  // chance is ln 2 = 0.693
  EXPECT_GT(epochs[1]["dev_accuracy"].get<double>(), 0.66);  // chance is ~0.51 on SST-2 dev
  EXPECT_GT(epochs[1]["dev_f1"].get<double>(), 0.5);
  // The result is a model bert_run uses.
  auto run = test::run_command(tool("bert_run") + " --model " + (tmp / "sst2.bert").string() +
                               " --text \"a gorgeous, witty, seductive movie.\"");
  ASSERT_EQ(run.exit_code, 0) << run.output;
  EXPECT_NE(run.output.find("\"probabilities\""), std::string::npos) << run.output;
}

// A small TSV written here (no ../shared needed).
std::string write_tsv(const fs::path& p, int lines) {
  std::string text = "sentence\tlabel\n";
  const char* words[] = {"good", "bad", "great", "awful", "fine", "poor", "nice", "terrible"};
  for (int i = 0; i < lines; ++i)
    text += std::string(words[i % 8]) + " movie " + words[(i * 3) % 8] + " plot\t" + std::to_string(i % 8 % 2) + "\n";
  test::write_file(p, text);
  return p.string();
}

std::string write_vocab(const fs::path& p) {
  std::string v = "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\n";
  for (const char* w : {"good", "bad", "great", "awful", "fine", "poor", "nice", "terrible", "movie", "plot"})
    v += std::string(w) + "\n";
  test::write_file(p, v);
  return p.string();
}

std::string tiny_config(const fs::path& p, const char* architecture) {
  test::write_file(p, std::string(R"({"model_type": "bert", "architectures": [")") + architecture +
                          R"("], "vocab_size": 15, "hidden_size": 32, "num_hidden_layers": 2,
                          "num_attention_heads": 4, "intermediate_size": 64, "max_position_embeddings": 32,
                          "type_vocab_size": 2, "hidden_act": "gelu"})");
  return p.string();
}

TEST(BertTrain, ResumeFromCheckpointIsBitIdentical) {
  test::TempDir tmp;
  const std::string base = tool("bert_train") + " --config " +
                           tiny_config(tmp / "config.json", "BertForSequenceClassification") + " --vocab " +
                           write_vocab(tmp / "vocab.txt") + " --train " + write_tsv(tmp / "train.tsv", 100) +
                           " --epochs 2 --batch 8 --lr 1e-3 --dropout 0.1 --accumulate 2 --threads 1";
  auto full = test::run_command(base + " --out " + (tmp / "full.bert").string());
  ASSERT_EQ(full.exit_code, 0) << full.output;
  // Stop after 5 optimizer steps (mid-epoch: 7 steps per epoch), then resume.
  auto first = test::run_command(base + " --out " + (tmp / "partial.bert").string() + " --checkpoint " +
                                 (tmp / "ckpt.bert").string() + " --checkpoint-every 5 --max-steps 5");
  ASSERT_EQ(first.exit_code, 0) << first.output;
  auto resumed = test::run_command(base + " --out " + (tmp / "resumed.bert").string() + " --resume " +
                                   (tmp / "ckpt.bert").string());
  ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
  EXPECT_NE(resumed.output.find("resumed"), std::string::npos) << resumed.output;

  auto a = SafetensorsFile::Open((tmp / "full.bert").string());
  auto b = SafetensorsFile::Open((tmp / "resumed.bert").string());
  auto p = SafetensorsFile::Open((tmp / "partial.bert").string());
  ASSERT_TRUE(a.ok() && b.ok() && p.ok());
  int compared = 0, differs_from_partial = 0;
  for (const auto& [name, t] : a->tensors()) {
    const Tensor* u = b->find(name);
    ASSERT_NE(u, nullptr) << name;
    ASSERT_EQ(t.nbytes(), u->nbytes());
    EXPECT_EQ(std::memcmp(t.data, u->data, t.nbytes()), 0) << name << " differs after resume";
    differs_from_partial += std::memcmp(t.data, p->find(name)->data, t.nbytes()) != 0;
    ++compared;
  }
  EXPECT_GT(compared, 20);
  EXPECT_GT(differs_from_partial, 20) << "the resumed run did not train further than the checkpoint";
  // The checkpoint is itself a model file bert_run reads.
  auto run = test::run_command(tool("bert_run") + " --model " + (tmp / "ckpt.bert").string() + " --text \"good movie\"");
  EXPECT_EQ(run.exit_code, 0) << run.output;
}

TEST(BertTrain, MaskedLmOnRawTextAndBackToHf) {
  test::TempDir tmp;
  std::string text;
  for (int i = 0; i < 64; ++i) text += std::string(i % 2 ? "good movie nice plot\n" : "bad movie poor plot\n");
  test::write_file(tmp / "corpus.txt", text);
  auto r = test::run_command(tool("bert_train") + " --task mlm --config " +
                             tiny_config(tmp / "config.json", "BertForMaskedLM") + " --vocab " +
                             write_vocab(tmp / "vocab.txt") + " --train " + (tmp / "corpus.txt").string() +
                             " --epochs 30 --batch 16 --lr 2e-3 --warmup 0 --dropout 0 --log " + (tmp / "log.jsonl").string() +
                             " --out " + (tmp / "mlm.bert").string());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  auto epochs = json_lines(test::read_file(tmp / "log.jsonl"));
  ASSERT_EQ(epochs.size(), 30u);
  EXPECT_LT(epochs.back()["train_loss"].get<double>(), 0.5 * epochs.front()["train_loss"].get<double>());
  // Back to an HF directory, and the engine reads that back to the same predictions.
  auto hf = test::run_command(tool("convert_weights") + " " + (tmp / "mlm.bert").string() + " --to-hf " +
                              (tmp / "hf").string());
  ASSERT_EQ(hf.exit_code, 0) << hf.output;
  for (const char* f : {"config.json", "model.safetensors", "vocab.txt", "tokenizer_config.json"})
    EXPECT_TRUE(fs::exists(tmp / "hf" / f)) << f;
  auto from_engine = test::run_command(tool("bert_run") + " --model " + (tmp / "mlm.bert").string() +
                                       " --text \"good [MASK] nice plot\"");
  auto from_hf = test::run_command(tool("bert_run") + " --model " + (tmp / "hf").string() +
                                   " --text \"good [MASK] nice plot\"");
  ASSERT_EQ(from_engine.exit_code, 0) << from_engine.output;
  EXPECT_EQ(from_engine.output, from_hf.output);
}

// MLM + NSP (BERT) and MLM + SOP (ALBERT) pre-training on documents of sentences.
TEST(BertTrain, PretrainingWithSentenceHeadsLearns) {
  test::TempDir tmp;
  std::string text;
  for (int d = 0; d < 24; ++d)
    text += std::string(d % 2 ? "good movie\nnice plot\ngreat movie\n\n" : "bad movie\npoor plot\nawful movie\n\n");
  test::write_file(tmp / "docs.txt", text);
  const std::string vocab = write_vocab(tmp / "vocab.txt");
  test::write_file(tmp / "albert.json", R"({"model_type": "albert", "architectures": ["AlbertForPreTraining"],
      "vocab_size": 15, "embedding_size": 16, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
      "intermediate_size": 64, "max_position_embeddings": 32, "type_vocab_size": 2, "hidden_act": "gelu_new"})");
  // The gradients themselves are checked against transformers in grad_parity_test; this checks the
  // pipeline (pairs, masking, both sentence heads) trains. ALBERT's E=16 bottleneck learns slower
  // on this toy corpus (measured 3.35 -> 2.64 over 25 epochs; BERT 3.30 -> 1.98).
  for (auto [config, ratio] : {std::pair{tiny_config(tmp / "bert.json", "BertForPreTraining"), 0.7},
                               std::pair{(tmp / "albert.json").string(), 0.85}}) {
    SCOPED_TRACE(config);
    auto r = test::run_command(tool("bert_train") + " --task pretrain --config " + config + " --vocab " + vocab +
                               " --train " + (tmp / "docs.txt").string() + " --epochs 25 --batch 16 --lr 2e-3" +
                               " --warmup 0 --dropout 0 --log " + (tmp / "log.jsonl").string() + " --out " +
                               (tmp / "pre.bert").string());
    ASSERT_EQ(r.exit_code, 0) << r.output;
    auto epochs = json_lines(test::read_file(tmp / "log.jsonl"));
    ASSERT_EQ(epochs.size(), 25u);
    EXPECT_LT(epochs.back()["train_loss"].get<double>(), ratio * epochs.front()["train_loss"].get<double>());
    auto run = test::run_command(tool("bert_run") + " --model " + (tmp / "pre.bert").string() +
                                 " --text \"good [MASK]\" --text-pair \"nice plot\"");
    EXPECT_EQ(run.exit_code, 0) << run.output;
  }
  // A classifier is refused for --task pretrain, naming what it needs.
  auto r = test::run_command(tool("bert_train") + " --task pretrain --config " +
                             tiny_config(tmp / "cls.json", "BertForSequenceClassification") + " --vocab " + vocab +
                             " --train " + (tmp / "docs.txt").string() + " --out " + (tmp / "x.bert").string());
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.output.find("needs a pre-training model"), std::string::npos) << r.output;
}

TEST(BertTrain, BadDataAndArgumentsAreNamed) {
  test::TempDir tmp;
  const std::string model_args = " --config " + tiny_config(tmp / "config.json", "BertForSequenceClassification") +
                                 " --vocab " + write_vocab(tmp / "vocab.txt") + " --out " + (tmp / "o.bert").string();
  test::write_file(tmp / "bad.tsv", "sentence\tlabel\ngood movie\t1\nno label here\n");
  auto r = test::run_command(tool("bert_train") + model_args + " --train " + (tmp / "bad.tsv").string());
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.output.find("bad.tsv:3"), std::string::npos) << r.output;
  test::write_file(tmp / "bad2.tsv", "sentence\tlabel\ngood movie\t7\n");
  r = test::run_command(tool("bert_train") + model_args + " --train " + (tmp / "bad2.tsv").string());
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.output.find("bad2.tsv:2: label 7 is outside 0..1"), std::string::npos) << r.output;
  r = test::run_command(tool("bert_train") + model_args + " --train " + (tmp / "missing.tsv").string());
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.output.find("missing.tsv"), std::string::npos) << r.output;
  r = test::run_command(tool("bert_train") + model_args + " --train x --optimizer sgd");
  EXPECT_EQ(r.exit_code, 2);
  r = test::run_command(tool("bert_train") + model_args + " --train " + (tmp / "bad2.tsv").string() +
                        " --resume " + (tmp / "config.json").string());
  EXPECT_EQ(r.exit_code, 1);
}

}  // namespace
}  // namespace bert
