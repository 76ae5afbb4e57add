// Example app: load a model file, tokenize two sentences, run them as one padded batch, print outputs.
//   bert_example_app <model file or HF dir> ["first sentence" "second sentence" ...]
#include <bert/engine.h>
#include <bert/tokenizer.h>

#include <cstdio>
#include <string>
#include <vector>

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s <model> [sentence ...]\n", argv[0]);
    return 2;
  }
  auto model = bert::Model::Load(argv[1]);
  if (!model.ok()) {
    std::fprintf(stderr, "error: %s\n", model.status().to_string().c_str());
    return 1;
  }
  std::vector<std::string> texts;
  for (int i = 2; i < argc; ++i) texts.push_back(argv[i]);
  if (texts.empty()) texts = {"hello world", "the engine runs a padded batch of two sentences"};

  // Token ids: from the model's vocab when it has one, else a fixed pattern.
  std::vector<bert::Encoding> encodings;
  int32_t pad_id = 0;
  if (!(*model)->vocab().empty()) {
    bert::TokenizerOptions topts;
    topts.lower_case = (*model)->lower_case();
    auto tok = bert::Tokenizer::FromVocab((*model)->vocab(), topts);
    if (!tok.ok()) return std::fprintf(stderr, "error: %s\n", tok.status().to_string().c_str()), 1;
    pad_id = tok->pad_id();
    for (const auto& t : texts) {
      auto e = tok->Encode(t, std::nullopt, 128);
      if (!e.ok()) return std::fprintf(stderr, "error: %s\n", e.status().to_string().c_str()), 1;
      encodings.push_back(*e);
    }
  } else {
    for (size_t i = 0; i < texts.size(); ++i) {
      bert::Encoding e;
      for (size_t j = 0; j < 4 + 3 * i; ++j) {
        e.input_ids.push_back(static_cast<int32_t>(100 + 7 * j));
        e.token_type_ids.push_back(0);
        e.attention_mask.push_back(1);
      }
      encodings.push_back(e);
    }
  }
  bert::EncodedBatch batch = bert::pad_batch(encodings, pad_id);

  bert::SessionOptions opts;
  opts.max_batch = batch.batch;
  opts.max_seq = batch.seq;
  auto session = bert::Session::Create(*model, opts);
  if (!session.ok()) return std::fprintf(stderr, "error: %s\n", session.status().to_string().c_str()), 1;
  bert::Status st = (*session)->Run({batch.batch, batch.seq, batch.input_ids.data(), batch.attention_mask.data(),
                                     batch.token_type_ids.data()});
  if (!st.ok()) return std::fprintf(stderr, "error: %s\n", st.to_string().c_str()), 1;

  const bert::ModelInfo& info = (*model)->info();
  std::printf("model: %s, %lld layers, hidden %lld, head %s\n", info.architecture.c_str(),
              static_cast<long long>(info.num_layers), static_cast<long long>(info.hidden_size), info.head.c_str());
  for (const std::string& name : (*session)->OutputNames()) {
    auto out = (*session)->Output(name);
    if (!out.ok()) return std::fprintf(stderr, "error: %s\n", out.status().to_string().c_str()), 1;
    std::printf("%s [", name.c_str());
    for (size_t i = 0; i < out->shape.size(); ++i) std::printf("%s%lld", i ? ", " : "", static_cast<long long>(out->shape[i]));
    std::printf("] first values: %.6f %.6f\n", out->data[0], out->data[1]);
  }
  return 0;
}
