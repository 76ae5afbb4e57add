// convert_weights: a HuggingFace checkpoint (directory, or one weights file in it) -> one engine model file.
//
//   convert_weights <hf_dir | hf_dir/pytorch_model.bin | hf_dir/model.safetensors> <out_file> [--dtype fp32|fp16|bf16]
//   convert_weights --synthetic SHAPE [--architecture A] <out_file>   (SHAPE: bert-base, electra-small, ...)
//       a model of that shape with seeded random weights (for benchmarks and tests)
//   --vocab vocab.txt embeds (or replaces) the tokenizer vocab.
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>

#include "weights/model_file.h"
#include "weights/synthetic.h"
#include "weights/vocab.h"

namespace {

int usage(const char* msg) {
  if (msg) std::fprintf(stderr, "convert_weights: %s\n", msg);
  std::fprintf(stderr,
               "usage: convert_weights <hf_dir | weights file in it> <out_file> [--dtype fp32|fp16|bf16] [--vocab V]\n"
               "       convert_weights --synthetic SHAPE [--architecture A] <out_file> [--dtype ...] [--vocab V]\n"
               "       convert_weights <engine_file> --to-hf <out_dir>   (back to config.json + model.safetensors)\n"
               "  Reads config.json, model.safetensors (or its sharded index) or pytorch_model.bin, vocab.txt\n"
               "  and tokenizer_config.json, and writes one engine file (a safetensors container).\n"
               "  --synthetic makes a model of a known shape with seeded random weights: bert-base, bert-large,\n"
               "  bert-tiny, bert-mini, roberta-base, distilbert-base, electra-small, albert-base,\n"
               "  squeezebert-uncased; --architecture picks its head (default: the family's base model).\n");
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  std::string in, out, dtype_arg = "fp32", synthetic, architecture, vocab_path, to_hf;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--help" || a == "-h") return usage(nullptr), 0;
    if (a == "--dtype") {
      if (++i >= argc) return usage("--dtype needs a value");
      dtype_arg = argv[i];
    } else if (a == "--synthetic" || a == "--architecture" || a == "--vocab" || a == "--to-hf") {
      if (++i >= argc) return usage((a + " needs a value").c_str());
      (a == "--synthetic" ? synthetic : a == "--architecture" ? architecture : a == "--vocab" ? vocab_path : to_hf) = argv[i];
    } else if (a.rfind("--", 0) == 0) {
      return usage(("unknown option " + a).c_str());
    } else if (in.empty()) {
      in = a;
    } else if (out.empty()) {
      out = a;
    } else {
      return usage(("unexpected argument " + a).c_str());
    }
  }
  if (!to_hf.empty()) {  // engine file (or anything loadable) -> HF directory
    if (in.empty() || !out.empty() || !synthetic.empty()) return usage("--to-hf takes one input: convert_weights F --to-hf DIR");
    auto src = bert::load_model_source(in);
    if (!src.ok()) {
      std::fprintf(stderr, "convert_weights: %s\n", src.status().to_string().c_str());
      return 1;
    }
    if (bert::Status st = bert::write_hf_directory(to_hf, *src); !st.ok()) {
      std::fprintf(stderr, "convert_weights: %s\n", st.to_string().c_str());
      return 1;
    }
    std::printf("wrote %s: config.json, model.safetensors%s\n", to_hf.c_str(),
                src->vocab.empty() ? "" : ", vocab.txt, tokenizer_config.json");
    return 0;
  }
  if (!synthetic.empty()) {
    if (!out.empty()) return usage("--synthetic takes only an output file");
    out = in;
  }
  if ((in.empty() && synthetic.empty()) || out.empty()) return usage("need an input and an output");
  bert::DType dtype;
  if (dtype_arg == "fp32") dtype = bert::DType::kF32;
  else if (dtype_arg == "fp16") dtype = bert::DType::kF16;
  else if (dtype_arg == "bf16") dtype = bert::DType::kBF16;
  else return usage(("--dtype must be fp32, fp16 or bf16, not '" + dtype_arg + "'").c_str());

  namespace fs = std::filesystem;
  auto fail = [](const bert::Status& st) {
    std::fprintf(stderr, "convert_weights: %s\n", st.to_string().c_str());
    return 1;
  };
  bert::Result<bert::ModelSource> src = bert::internal_error("unset");
  if (!synthetic.empty()) {
    auto json = bert::synthetic_config_json(synthetic, architecture);
    if (!json.ok()) return fail(json.status());
    auto config = bert::parse_model_config(*json, "--synthetic " + synthetic);
    if (!config.ok()) return fail(config.status());
    src = bert::synthetic_model(*config, 1234);
  } else {
    src = fs::is_directory(in) ? bert::load_hf_directory(in) : bert::load_model_source(in);
  }
  if (!src.ok()) return fail(src.status());
  if (!vocab_path.empty()) {
    auto vocab = bert::read_vocab_file(vocab_path);
    if (!vocab.ok()) return fail(vocab.status());
    if (static_cast<int64_t>(vocab->size()) > src->config.vocab_size)
      return fail(bert::invalid_argument(vocab_path + ": " + std::to_string(vocab->size()) +
                                         " tokens but the model's vocab_size is " +
                                         std::to_string(src->config.vocab_size)));
    src->vocab = std::move(*vocab);
  }
  for (const auto& name : src->unused_hf_tensors)
    std::fprintf(stderr, "convert_weights: note: tensor '%s' is not used by %s\n", name.c_str(),
                 src->config.architecture.empty() ? "this model" : src->config.architecture.c_str());
  if (src->vocab.empty())
    std::fprintf(stderr, "convert_weights: note: no vocab.txt found; the model file will not tokenize text\n");
  if (bert::Status st = bert::write_engine_file(out, *src, dtype); !st.ok()) return fail(st);
  int64_t params = 0;
  for (const auto& [name, t] : src->tensors) params += t.numel();
  std::printf("wrote %s: %s (%s head), %lld layers, hidden %lld, %.2fM parameters as %s, vocab %zu tokens\n",
              out.c_str(), src->config.architecture.empty() ? src->config.model_type.c_str()
                                                            : src->config.architecture.c_str(),
              bert::head_kind_name(src->config.head), static_cast<long long>(src->config.num_layers),
              static_cast<long long>(src->config.hidden_size), params / 1e6, dtype_arg.c_str(), src->vocab.size());
  return 0;
}
