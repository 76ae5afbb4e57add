// Fuzz target: the sharded-checkpoint indexes (model.safetensors.index.json and
// pytorch_model.bin.index.json). The first byte picks the kind; the rest is the index. The
// directory holds a valid config.json and one valid safetensors shard the index may name.
#include <filesystem>

#include "fuzz/fuzz_util.h"
#include "weights/model_file.h"
#include "weights/safetensors.h"

namespace {
const std::string& model_dir() {
  static const std::string dir = [] {
    const std::string d = fuzz::scratch_dir() + "/hf";
    std::filesystem::create_directories(d);
    bert::Tensor t = bert::make_owned_tensor(bert::DType::kF32, {2});
    if (!bert::write_safetensors(d + "/shard.safetensors", {{"a", t}, {"b", t}}, {}).ok()) std::abort();
    fuzz::write_scratch("hf/config.json",
                        R"({"model_type": "bert", "vocab_size": 8, "hidden_size": 4, "num_hidden_layers": 1,
                            "num_attention_heads": 1, "intermediate_size": 4, "max_position_embeddings": 8})");
    return d;
  }();
  return dir;
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const std::string& dir = model_dir();
  if (data[0] & 1) {
    const std::string path = fuzz::write_scratch("hf/model.safetensors.index.json", data + 1, size - 1);
    (void)bert::load_safetensors_index(path);
  } else {
    const std::string path = fuzz::write_scratch("hf/pytorch_model.bin.index.json", data + 1, size - 1);
    (void)bert::load_hf_directory(dir, path);
  }
  return 0;
}
