// convert_weights: a HuggingFace checkpoint (directory, or one weights file in it) -> one engine model file.
//
//   convert_weights <hf_dir | hf_dir/pytorch_model.bin | hf_dir/model.safetensors> <out_file> [--dtype fp32|fp16|bf16|int8]
//   convert_weights --synthetic SHAPE [--architecture A] <out_file>   (SHAPE: bert-base, electra-small, ...)
//       a model of that shape with seeded random weights (for benchmarks and tests)
//   --vocab vocab.txt embeds (or replaces) the tokenizer vocab.
#include <cstdio>
#include <string>
#include <vector>

#include "bert/model_builder.h"
#include "tools/common/cli.h"

int main(int argc, char** argv) {
  std::string dtype_arg = "fp32", synthetic, architecture, vocab_path, to_hf;
  std::vector<std::string> args;
  cli::Parser p("convert_weights",
                "convert_weights <hf_dir | weights file in it> <out_file> [--dtype fp32|fp16|bf16|int8] [--vocab V]\n"
                "convert_weights --synthetic SHAPE [--architecture A] <out_file> [--dtype ...] [--vocab V]\n"
                "convert_weights <engine_file> --to-hf <out_dir>   (back to config.json + model.safetensors)",
                "Reads config.json, model.safetensors (or its sharded index) or pytorch_model.bin, vocab.txt\n"
                "and tokenizer_config.json, and writes one engine file (a safetensors container).\n"
                "--synthetic makes a model of a known shape with seeded random weights: bert-base, bert-large,\n"
                "bert-tiny, bert-mini, roberta-base, distilbert-base, electra-small, albert-base,\n"
                "squeezebert-uncased; --architecture picks its head (default: the family's base model).");
  p.choice("--dtype", &dtype_arg, {"fp32", "fp16", "bf16", "int8"},
           "storage dtype of the weights in the engine file (int8: the encoder's linear layers, per-channel scales; "
           "the rest fp32)");
  p.string("--synthetic", &synthetic, "SHAPE", "seeded random weights of this shape instead of an input");
  p.string("--architecture", &architecture, "A", "head for --synthetic", "the family's base model");
  p.string("--vocab", &vocab_path, "FILE", "embed (or replace) the tokenizer vocab");
  p.string("--to-hf", &to_hf, "DIR", "write the input back as config.json + model.safetensors in DIR");
  bool allow_non_finite = false;
  p.flag("--allow-non-finite", &allow_non_finite, "convert weights that hold NaN or Inf (an error otherwise)");
  p.positional(&args, 2, "IN OUT");
  if (auto code = p.parse(argc, argv)) return *code;
  auto usage = [&](const std::string& msg) { return p.usage_error(msg); };
  std::string in = args.size() > 0 ? args[0] : "", out = args.size() > 1 ? args[1] : "";
  if (!to_hf.empty()) {  // engine file (or anything loadable) -> HF directory
    if (in.empty() || !out.empty() || !synthetic.empty()) return usage("--to-hf takes one input: convert_weights F --to-hf DIR");
    auto report = bert::ConvertToHf(in, to_hf);
    if (!report.ok()) {
      std::fprintf(stderr, "convert_weights: %s\n", report.status().to_string().c_str());
      return 1;
    }
    std::printf("wrote %s: config.json, model.safetensors%s\n", to_hf.c_str(),
                report->vocab_tokens == 0 ? "" : ", vocab.txt, tokenizer_config.json");
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
  else if (dtype_arg == "int8") dtype = bert::DType::kI8;
  else return usage("--dtype must be fp32, fp16, bf16 or int8, not '" + dtype_arg + "'");

  auto fail = [](const bert::Status& st) {
    std::fprintf(stderr, "convert_weights: %s\n", st.to_string().c_str());
    return 1;
  };
  bert::Result<bert::ConvertReport> report = bert::internal_error("unset");
  if (!synthetic.empty()) {  // seeded random weights of a named shape (seed 1234)
    bert::SyntheticSpec spec;
    spec.preset = synthetic, spec.architecture = architecture, spec.origin = "--synthetic " + synthetic;
    spec.vocab_path = vocab_path;
    report = bert::WriteSynthetic(spec, out, dtype);
  } else {
    report = bert::ConvertCheckpoint(in, out, {.dtype = dtype, .vocab_path = vocab_path, .allow_non_finite = allow_non_finite});
  }
  if (!report.ok()) return fail(report.status());
  for (const auto& name : report->unused_hf_tensors)
    std::fprintf(stderr, "convert_weights: note: tensor '%s' is not used by %s\n", bert::printable(name).c_str(),
                 report->architecture.empty() ? "this model" : report->architecture.c_str());
  if (report->vocab_tokens == 0)
    std::fprintf(stderr, "convert_weights: note: no vocab.txt found; the model file will not tokenize text\n");
  std::printf("wrote %s: %s (%s head), %lld layers, hidden %lld, %.2fM parameters as %s, vocab %zu tokens\n",
              out.c_str(), report->architecture.empty() ? report->model_type.c_str() : report->architecture.c_str(),
              report->head.c_str(), static_cast<long long>(report->num_layers),
              static_cast<long long>(report->hidden_size), report->parameters / 1e6, dtype_arg.c_str(),
              report->vocab_tokens);
  return 0;
}
