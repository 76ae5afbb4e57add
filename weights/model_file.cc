// Reading HF directories and engine files into a ModelSource, and writing engine files.
#include "weights/model_file.h"

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "weights/bert_layout.h"
#include "weights/json_keys.h"
#include "weights/mapped_file.h"
#include "weights/safetensors.h"
#include "weights/torch_checkpoint.h"
#include "weights/vocab.h"

namespace bert {

namespace fs = std::filesystem;

namespace {

// Sharded pytorch_model.bin.index.json: weight_map name -> shard file.
Result<TensorMap> load_torch_index(const std::string& index_path) {
  BERT_RETURN_IF_ERROR(check_regular_file(index_path, "sharded checkpoint index (pytorch_model.bin.index.json)"));
  std::ifstream f(index_path);
  if (!f) return not_found(index_path + ": cannot open");
  const std::string text((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  BERT_RETURN_IF_ERROR(check_unique_keys(text, index_path));
  auto j = nlohmann::json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object() || !j.contains("weight_map") || !j["weight_map"].is_object())
    return format_error(index_path + ": not a valid index (needs an object 'weight_map')");
  std::map<std::string, TensorMap> shards;
  TensorMap out;
  const fs::path dir = fs::path(index_path).parent_path();
  for (auto& [name, shard] : j["weight_map"].items()) {
    if (!shard.is_string()) return format_error(index_path + ": weight_map entry '" + name + "' is not a file name");
    std::string file = shard.get<std::string>();
    // As the safetensors index: a shard is a path inside the index's directory, nothing else.
    const fs::path rel(file);
    if (file.empty() || rel.is_absolute())
      return format_error(index_path + ": weight_map entry for tensor '" + name + "' names shard '" + file +
                          "', which is not a path relative to the index's directory");
    for (const auto& part : rel)
      if (part == "..")
        return format_error(index_path + ": weight_map entry for tensor '" + name + "' names shard '" + file +
                            "', which leaves the index's directory");
    if (!shards.count(file)) {
      BERT_ASSIGN_OR_RETURN(shards[file], load_torch_checkpoint((dir / file).string()));
    }
    auto it = shards[file].find(name);
    if (it == shards[file].end())
      return format_error(index_path + ": tensor '" + name + "' is not in shard " + file);
    out[name] = it->second;
  }
  return out;
}

Result<TensorMap> load_hf_weights(const fs::path& dir, const std::string& weights_file, std::string* which) {
  struct Candidate {
    const char* file;
    Result<TensorMap> (*load)(const std::string&);
  };
  static const Candidate kCandidates[] = {
      {"model.safetensors",
       [](const std::string& p) -> Result<TensorMap> {
         BERT_ASSIGN_OR_RETURN(SafetensorsFile f, SafetensorsFile::Open(p));
         return f.tensors();
       }},
      {"model.safetensors.index.json", load_safetensors_index},
      {"pytorch_model.bin", load_torch_checkpoint},
      {"pytorch_model.bin.index.json", load_torch_index},
  };
  if (!weights_file.empty()) {
    const std::string name = fs::path(weights_file).filename().string();
    for (const auto& c : kCandidates)
      if (name.ends_with(c.file) || (std::string(c.file).ends_with(".bin") && name.ends_with(".bin")) ||
          (std::string(c.file) == "model.safetensors" && name.ends_with(".safetensors"))) {
        *which = weights_file;
        if (!fs::exists(weights_file)) return not_found(weights_file + ": no such file");
        return c.load(weights_file);
      }
    return unsupported(weights_file + ": not a recognised HF weights file (*.safetensors, *.bin, *.index.json)");
  }
  for (const auto& c : kCandidates) {
    fs::path p = dir / c.file;
    if (fs::exists(p)) {
      *which = p.string();
      return c.load(p.string());
    }
  }
  return not_found(dir.string() + ": no model.safetensors, model.safetensors.index.json, pytorch_model.bin "
                   "or pytorch_model.bin.index.json");
}

// tokenizer_config.json's do_lower_case, when the directory has one.
Result<bool> read_lower_case(const fs::path& dir) {
  fs::path p = dir / "tokenizer_config.json";
  if (!fs::exists(p)) return true;
  BERT_RETURN_IF_ERROR(check_regular_file(p.string(), "tokenizer_config.json"));
  std::ifstream f(p);
  auto j = nlohmann::json::parse(f, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return format_error(p.string() + ": not valid JSON");
  if (auto it = j.find("do_lower_case"); it != j.end()) {
    if (!it->is_boolean()) return format_error(p.string() + ": do_lower_case must be true or false");
    return it->get<bool>();
  }
  return true;
}

}  // namespace

Result<ModelSource> load_hf_directory(const std::string& dir_str, const std::string& weights_file) {
  const fs::path dir(dir_str);
  if (!fs::is_directory(dir)) return not_found(dir_str + ": not a directory");
  ModelSource m;
  m.origin = dir_str;
  BERT_ASSIGN_OR_RETURN(m.config, read_model_config((dir / "config.json").string()));
  std::string weights_path;
  BERT_ASSIGN_OR_RETURN(TensorMap hf, load_hf_weights(dir, weights_file, &weights_path));
  BERT_ASSIGN_OR_RETURN(ConvertedWeights w, hf_to_engine(m.config, hf, weights_path));
  m.tensors = std::move(w.tensors);
  m.unused_hf_tensors = std::move(w.unused);
  if (fs::exists(dir / "vocab.txt")) {
    BERT_ASSIGN_OR_RETURN(m.vocab, read_vocab_file((dir / "vocab.txt").string()));
    if (static_cast<int64_t>(m.vocab.size()) > m.config.vocab_size)
      return format_error((dir / "vocab.txt").string() + ": " + std::to_string(m.vocab.size()) +
                          " tokens but config vocab_size is " + std::to_string(m.config.vocab_size));
  }
  BERT_ASSIGN_OR_RETURN(m.lower_case, read_lower_case(dir));
  return m;
}

namespace {

// I8 tensors with their "<name>.int8_scale" rows -> F32 (q[r, c] * scale[r]); the scales are dropped.
Status dequantize_int8_tensors(ModelSource& m, const std::string& path) {
  const std::string suffix = ".int8_scale";
  for (auto& [name, t] : m.tensors) {
    if (t.dtype != DType::kI8) continue;
    const std::string what = path + ": int8 tensor '" + name + "'";
    auto s = m.tensors.find(name + suffix);
    if (t.shape.size() != 2) return format_error(what + " has shape " + shape_string(t.shape) + "; int8 weights are 2-D");
    if (s == m.tensors.end()) return format_error(what + " has no scales ('" + name + suffix + "')");
    const Tensor& scales = s->second;
    if (scales.dtype != DType::kF32 || scales.shape != std::vector<int64_t>{t.shape[0]})
      return format_error(what + ": its scales must be F32 [" + std::to_string(t.shape[0]) + "], not " +
                          std::string(dtype_name(scales.dtype)) + " " + shape_string(scales.shape));
    Tensor f = make_owned_tensor(DType::kF32, t.shape);
    float* out = static_cast<float*>(mutable_data(f));
    const int8_t* q = t.as<int8_t>();
    const float* scale = scales.as<float>();
    for (int64_t r = 0; r < t.shape[0]; ++r)
      for (int64_t c = 0; c < t.shape[1]; ++c) out[r * t.shape[1] + c] = float(q[r * t.shape[1] + c]) * scale[r];
    t = std::move(f);
    m.stored_dtype = "I8";
  }
  for (auto it = m.tensors.begin(); it != m.tensors.end();)
    if (it->first.ends_with(suffix)) {
      const std::string weight = it->first.substr(0, it->first.size() - suffix.size());
      auto w = m.tensors.find(weight);
      if (w == m.tensors.end() || w->second.dtype != DType::kF32 || m.stored_dtype.empty())
        return format_error(path + ": scales '" + it->first + "' belong to no int8 tensor");
      it = m.tensors.erase(it);
    } else {
      ++it;
    }
  return Status::Ok();
}

}  // namespace

Result<ModelSource> read_engine_file(const std::string& path) {
  BERT_ASSIGN_OR_RETURN(SafetensorsFile f, SafetensorsFile::Open(path));
  const auto& md = f.metadata();
  auto get = [&](const char* key) -> const std::string* {
    auto it = md.find(key);
    return it == md.end() ? nullptr : &it->second;
  };
  const std::string* format = get("format");
  if (!format || *format != kEngineFormat)
    return format_error(path + ": not an engine model file (no __metadata__ format=\"bert-engine\"); "
                        "convert an HF directory with tools/convert_weights, or pass the directory");
  const std::string* version = get("format_version");
  if (!version || *version != kEngineFormatVersion)
    return unsupported(path + ": engine file format_version " + (version ? *version : std::string("(none)")) +
                       " is not supported (this build reads " + kEngineFormatVersion + ")");
  const std::string* config = get("config");
  if (!config) return format_error(path + ": metadata has no 'config'");
  ModelSource m;
  m.origin = path;
  BERT_ASSIGN_OR_RETURN(m.config, parse_model_config(*config, path + " (metadata 'config')"));
  if (const std::string* vocab = get("vocab"); vocab && !vocab->empty()) {
    BERT_ASSIGN_OR_RETURN(m.vocab, split_vocab(*vocab));
    if (static_cast<int64_t>(m.vocab.size()) > m.config.vocab_size)
      return format_error(path + ": vocab has " + std::to_string(m.vocab.size()) +
                          " tokens but config vocab_size is " + std::to_string(m.config.vocab_size));
  }
  if (const std::string* lc = get("lower_case")) m.lower_case = *lc != "false";
  m.tensors = f.tensors();
  BERT_RETURN_IF_ERROR(dequantize_int8_tensors(m, path));
  BERT_RETURN_IF_ERROR(validate_engine_tensors(m.config, m.tensors, path));
  return m;
}

Result<ModelSource> load_model_source(const std::string& path) {
  if (fs::is_directory(path)) return load_hf_directory(path);
  if (!fs::exists(path)) return not_found(path + ": no such file or directory");
  const fs::path p(path);
  const fs::path dir = p.parent_path().empty() ? fs::path(".") : p.parent_path();
  const std::string name = p.filename().string();
  const bool hf_weights = name.ends_with(".bin") || name.ends_with(".index.json");
  if (hf_weights && fs::exists(dir / "config.json"))
    return load_hf_directory(dir.string(), path);
  if (name.ends_with(".safetensors") && fs::exists(dir / "config.json")) {
    BERT_ASSIGN_OR_RETURN(SafetensorsFile f, SafetensorsFile::Open(path));
    auto it = f.metadata().find("format");
    if (it == f.metadata().end() || it->second != kEngineFormat)
      return load_hf_directory(dir.string(), path);
  }
  return read_engine_file(path);
}

Status write_engine_file(const std::string& path, const ModelSource& m, DType dtype,
                         const std::vector<std::pair<std::string, Tensor>>& extra,
                         const std::map<std::string, std::string>& extra_metadata) {
  std::vector<std::pair<std::string, Tensor>> tensors;
  for (const ParamSpec& spec : param_specs(m.config)) {
    auto it = m.tensors.find(spec.name);
    if (it == m.tensors.end()) {
      if (spec.optional) continue;
      return internal_error("write_engine_file: missing tensor '" + spec.name + "'");
    }
    if (it->second.dtype == DType::kI8) {  // quantised by the caller (ConvertOptions.dtype I8), scales in `extra`
      tensors.emplace_back(spec.name, it->second);
      continue;
    }
    BERT_ASSIGN_OR_RETURN(Tensor f32, to_f32(it->second, spec.name));
    BERT_ASSIGN_OR_RETURN(Tensor stored, from_f32(f32, dtype, spec.name));
    tensors.emplace_back(spec.name, std::move(stored));
  }
  std::map<std::string, std::string> metadata = {
      {"format", kEngineFormat},
      {"format_version", kEngineFormatVersion},
      {"config", m.config.json},
      {"vocab", join_vocab(m.vocab)},
      {"lower_case", m.lower_case ? "true" : "false"},
  };
  for (const auto& [k, v] : extra_metadata)
    if (!metadata.emplace(k, v).second) return internal_error("write_engine_file: metadata key '" + k + "' is reserved");
  tensors.insert(tensors.end(), extra.begin(), extra.end());
  return write_safetensors(path, tensors, metadata);
}

Status write_hf_directory(const std::string& dir, const ModelSource& m) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return io_error(dir + ": cannot create directory: " + ec.message());
  const ModelConfig& c = m.config;
  const std::string prefix = c.head == HeadKind::kNone ? "" : hf_base_prefix(c);
  std::vector<std::pair<std::string, Tensor>> tensors;
  for (const ParamSpec& spec : param_specs(c, prefix)) {
    auto it = m.tensors.find(spec.name);
    if (it == m.tensors.end()) {
      if (spec.optional) continue;  // tied decoder: transformers ties it on load
      return internal_error("write_hf_directory: missing tensor '" + spec.name + "'");
    }
    BERT_ASSIGN_OR_RETURN(Tensor f32, to_f32(it->second, spec.name));
    const int64_t parts = static_cast<int64_t>(spec.hf_names.size());
    const size_t part_bytes = f32.nbytes() / parts;
    for (int64_t i = 0; i < parts; ++i) {
      Tensor t = f32;  // a view of part i (rows i*N/parts ..), kept alive by f32's owner
      t.shape[0] /= parts;
      if (spec.conv1d) t.shape.push_back(1);
      t.data = static_cast<const uint8_t*>(f32.data) + i * part_bytes;
      tensors.emplace_back(spec.hf_names[i], t);
    }
  }
  BERT_RETURN_IF_ERROR(write_safetensors((fs::path(dir) / "model.safetensors").string(), tensors, {{"format", "pt"}}));
  std::ofstream config(fs::path(dir) / "config.json");
  config << c.json;
  if (!config) return io_error(dir + "/config.json: write failed");
  if (!m.vocab.empty()) {
    std::ofstream vocab(fs::path(dir) / "vocab.txt");
    for (const std::string& token : m.vocab) vocab << token << '\n';
    std::ofstream tok(fs::path(dir) / "tokenizer_config.json");
    tok << "{\"do_lower_case\": " << (m.lower_case ? "true" : "false") << "}\n";
    if (!vocab || !tok) return io_error(dir + ": writing vocab.txt / tokenizer_config.json failed");
  }
  return Status::Ok();
}

}  // namespace bert
