// The public model-building API (bert/model_builder.h): synthetic models, models from memory,
// checkpoint conversion; over weights/ (synthetic, model_file, layout) and load_model_from_source.
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include "bert/model_builder.h"
#include "engine/core/guard.h"
#include "engine/src/model_impl.h"  // load_model_from_source
#include "kernels/quantize.h"
#include "weights/bert_layout.h"
#include "weights/model_file.h"
#include "weights/synthetic.h"
#include "weights/vocab.h"

namespace bert {
namespace {

// Replaces every occurrence of `from` in the status message by `to` (a temporary path by the name
// the caller knows the bytes by).
Status renamed(const Status& st, const std::string& from, const std::string& to) {
  if (st.ok() || from.empty()) return st;
  std::string m = st.message();
  for (size_t at = 0; (at = m.find(from, at)) != std::string::npos; at += to.size()) m.replace(at, from.size(), to);
  return Status(st.code(), m);
}

// Tokens given in memory, checked as a vocab file is (UTF-8, no duplicates) and free of newlines.
Result<std::vector<std::string>> checked_vocab(const std::vector<std::string>& tokens, const std::string& where) {
  for (size_t i = 0; i < tokens.size(); ++i)
    if (tokens[i].find('\n') != std::string::npos)
      return invalid_argument(where + ": token " + std::to_string(i) + " contains a newline");
  auto checked = split_vocab(join_vocab(tokens));
  if (!checked.ok()) return checked.status().with_context(where);
  return checked;
}

// Attaches spec.vocab / vocab_path to a source.
Status attach_vocab(const SyntheticSpec& spec, ModelSource& src) {
  if (!spec.vocab_path.empty() && !spec.vocab.empty())
    return invalid_argument((spec.origin.empty() ? std::string("synthetic model") : spec.origin) +
                            ": give the vocab as a path or as tokens, not both");
  std::string where = spec.vocab_path;
  std::vector<std::string> tokens = spec.vocab;
  if (!spec.vocab_path.empty()) {
    BERT_ASSIGN_OR_RETURN(tokens, read_vocab_file(spec.vocab_path));
  } else if (!tokens.empty()) {
    where = "the vocab";
    BERT_ASSIGN_OR_RETURN(tokens, checked_vocab(tokens, where));
  } else {
    return Status();
  }
  const int64_t n = static_cast<int64_t>(tokens.size()), v = src.config.vocab_size;
  if (spec.vocab_must_match ? n != v : n > v)
    return invalid_argument(where + ": " + std::to_string(n) + " tokens but the config's vocab_size is " +
                            std::to_string(v));
  src.vocab = std::move(tokens);
  src.lower_case = spec.lower_case;
  return Status();
}

// Synthetic weights are seeded random values for tests, benchmarks and training from scratch; 2^31
// parameters (8 GiB of F32, six times bert-large) is the most one may have.
constexpr int64_t kMaxSyntheticParameters = int64_t{1} << 31;

Result<ModelSource> synthetic_source(const SyntheticSpec& spec) {
  if (spec.preset.empty() == spec.config_json.empty())
    return invalid_argument("synthetic model: give exactly one of a preset (" +
                            [] {
                              std::string s;
                              for (const auto& p : synthetic_shapes()) s += (s.empty() ? "" : ", ") + p;
                              return s;
                            }() +
                            ") or a config.json text");
  std::string json = spec.config_json;
  if (!spec.preset.empty()) {
    BERT_ASSIGN_OR_RETURN(json, synthetic_config_json(spec.preset, spec.architecture));
  } else if (!spec.architecture.empty()) {
    return invalid_argument("synthetic model: the architecture comes from the config text's \"architectures\"; "
                            "architecture '" + spec.architecture + "' goes with a preset");
  }
  const std::string origin = !spec.origin.empty() ? spec.origin : !spec.preset.empty() ? spec.preset : "config.json text";
  BERT_ASSIGN_OR_RETURN(ModelConfig config, parse_model_config(json, origin));
  // Everything that can refuse the model does so before the weights are allocated: the vocab
  // (bert_train checks its size against vocab_size) and the total size.
  ModelSource vocab_only;
  vocab_only.config = config;
  BERT_RETURN_IF_ERROR(attach_vocab(spec, vocab_only));
  int64_t parameters = 0;
  for (const ParamSpec& p : param_specs(config)) {
    if (p.optional) continue;
    int64_t n = 1;
    for (int64_t d : p.shape) n *= d;  // each dim is bounded by parse_model_config: no overflow
    parameters += n;
    if (parameters > kMaxSyntheticParameters)
      return out_of_range(origin + ": the config makes more than " + std::to_string(kMaxSyntheticParameters) +
                          " parameters (" + std::to_string(kMaxSyntheticParameters * 4 >> 30) +
                          " GiB of F32), beyond what a synthetic model is for");
  }
  ModelSource src = synthetic_model(config, spec.seed);
  src.origin = origin;
  src.vocab = std::move(vocab_only.vocab);
  src.lower_case = vocab_only.lower_case;
  return src;
}

std::string origin_of(const SyntheticSpec& spec) {
  return !spec.origin.empty() ? spec.origin : !spec.preset.empty() ? spec.preset : "config.json text";
}

ConvertReport report_of(const ModelSource& src) {
  ConvertReport r;
  r.model_type = src.config.model_type;
  r.architecture = src.config.architecture;
  r.head = head_kind_name(src.config.head);
  r.num_layers = src.config.num_layers;
  r.hidden_size = src.config.hidden_size;
  for (const auto& [name, t] : src.tensors) r.parameters += t.numel();
  r.vocab_tokens = src.vocab.size();
  r.unused_hf_tensors = src.unused_hf_tensors;
  return r;
}

Status check_file_dtype(DType dtype) {
  if (dtype != DType::kF32 && dtype != DType::kF16 && dtype != DType::kBF16 && dtype != DType::kI8)
    return invalid_argument("engine files store F32, F16, BF16 or I8 weights, not " + std::string(dtype_name(dtype)));
  return Status();
}

// Caller tensors become internal ones; views without an owner are copied, since a model may keep
// pointing at F32 weights long after this call.
Result<TensorMap> tensor_map(const std::vector<std::pair<std::string, HostTensor>>& tensors, const std::string& origin) {
  TensorMap out;
  for (const auto& [name, h] : tensors) {
    if (out.count(name)) return invalid_argument(origin + ": tensor '" + name + "' is given twice");
    for (int64_t d : h.shape)
      if (d < 0) return invalid_argument(origin + ": tensor '" + name + "' has a negative dimension");
    if (!h.data && h.numel() > 0) return invalid_argument(origin + ": tensor '" + name + "' has no data");
    Tensor t;
    if (h.owner || h.numel() == 0) {
      t.dtype = h.dtype, t.shape = h.shape, t.data = h.data, t.owner = h.owner;
    } else {
      t = make_owned_tensor(h.dtype, h.shape);
      std::memcpy(mutable_data(t), h.data, h.nbytes());
    }
    out.emplace(name, std::move(t));
  }
  return out;
}

}  // namespace

const std::vector<std::string>& SyntheticPresets() { return synthetic_shapes(); }

namespace {

// The weights an int8 engine file stores as I8: the encoder's linear layers ("layer.<i>.<...>.weight").
bool int8_in_file(const std::string& name, const Tensor& t) {
  return name.starts_with("layer.") && name.ends_with(".weight") && t.shape.size() == 2 &&
         !name.ends_with(".ln.weight");
}

// An engine file in `dtype`; I8: the encoder's linear weights quantised per output channel (8-bit,
// symmetric, kernels/quantize.h) with their scales beside them, everything else F32 (docs/PRECISION.md).
Status write_file(const std::string& path, ModelSource& src, DType dtype) {
  if (dtype != DType::kI8) return write_engine_file(path, src, dtype);
  std::vector<std::pair<std::string, Tensor>> scales;
  for (auto& [name, t] : src.tensors) {
    if (!int8_in_file(name, t)) continue;
    BERT_ASSIGN_OR_RETURN(Tensor f32, to_f32(t, name));
    const int64_t N = t.shape[0], K = t.shape[1];
    Tensor q = make_owned_tensor(DType::kI8, t.shape), s = make_owned_tensor(DType::kF32, {N});
    kernels::quantize_weights_per_channel_i8(f32.as<float>(), N, K, static_cast<int8_t*>(mutable_data(q)),
                                             static_cast<float*>(mutable_data(s)));
    t = std::move(q);
    scales.emplace_back(name + ".int8_scale", std::move(s));
  }
  return write_engine_file(path, src, DType::kF32, scales,
                           {{"int8_weights", "the encoder's linear layers: I8, symmetric per output channel, scales "
                                             "in <name>.int8_scale"}});
}

}  // namespace

Result<std::shared_ptr<const Model>> LoadSynthetic(const SyntheticSpec& spec, const LoadOptions& options) {
  return guarded(origin_of(spec), [&]() -> Result<std::shared_ptr<const Model>> {
    BERT_ASSIGN_OR_RETURN(ModelSource src, synthetic_source(spec));
    return load_model_from_source(std::move(src), options);
  });
}

Result<ConvertReport> WriteSynthetic(const SyntheticSpec& spec, const std::string& dst_path, DType dtype) {
  return guarded(origin_of(spec), [&]() -> Result<ConvertReport> {
    BERT_RETURN_IF_ERROR(check_file_dtype(dtype));
    BERT_ASSIGN_OR_RETURN(ModelSource src, synthetic_source(spec));
    BERT_RETURN_IF_ERROR(write_file(dst_path, src, dtype));
    return report_of(src);
  });
}

namespace {

Result<std::shared_ptr<const Model>> load_from_bytes(std::span<const uint8_t> bytes, const LoadOptions& options,
                                                     const std::string& name) {
  // The engine file reader maps a path: the bytes go into an anonymous in-memory file (memfd), read
  // through /proc/self/fd; the mapping outlives the descriptor and is what the model's tensors use.
  const int fd = memfd_create("bert-engine-bytes", MFD_CLOEXEC);
  if (fd < 0) return io_error(name + ": cannot create an in-memory file: " + std::strerror(errno));
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const std::string why = std::strerror(errno);
      ::close(fd);
      return io_error(name + ": cannot write " + std::to_string(bytes.size()) + " bytes to an in-memory file: " + why);
    }
    done += static_cast<size_t>(n);
  }
  const std::string path = "/proc/self/fd/" + std::to_string(fd);
  Result<ModelSource> src = read_engine_file(path);
  ::close(fd);
  if (!src.ok()) return renamed(src.status(), path, name);
  src->origin = name;
  Result<std::shared_ptr<const Model>> model = load_model_from_source(std::move(*src), options);
  if (!model.ok()) return renamed(model.status(), path, name);
  return model;
}

Result<std::shared_ptr<const Model>> load_from_parts(const ModelParts& parts, const LoadOptions& options) {
  ModelSource src;
  src.origin = parts.origin;
  BERT_ASSIGN_OR_RETURN(src.config, parse_model_config(parts.config_json, parts.origin));
  BERT_ASSIGN_OR_RETURN(TensorMap tensors, tensor_map(parts.tensors, parts.origin));
  if (parts.hf_names) {
    BERT_ASSIGN_OR_RETURN(ConvertedWeights w, hf_to_engine(src.config, tensors, parts.origin));
    src.tensors = std::move(w.tensors);
    src.unused_hf_tensors = std::move(w.unused);
  } else {
    BERT_RETURN_IF_ERROR(validate_engine_tensors(src.config, tensors, parts.origin));
    src.tensors = std::move(tensors);
  }
  if (!parts.vocab.empty()) {
    BERT_ASSIGN_OR_RETURN(src.vocab, checked_vocab(parts.vocab, parts.origin + ": vocab"));
    if (static_cast<int64_t>(src.vocab.size()) > src.config.vocab_size)
      return invalid_argument(parts.origin + ": vocab has " + std::to_string(src.vocab.size()) +
                              " tokens but the config's vocab_size is " + std::to_string(src.config.vocab_size));
  }
  src.lower_case = parts.lower_case;
  return load_model_from_source(std::move(src), options);
}

Result<ConvertReport> convert_checkpoint(const std::string& src_path, const std::string& dst_path,
                                         const ConvertOptions& options) {
  BERT_RETURN_IF_ERROR(check_file_dtype(options.dtype));
  namespace fs = std::filesystem;
  BERT_ASSIGN_OR_RETURN(ModelSource src,
                        fs::is_directory(src_path) ? load_hf_directory(src_path) : load_model_source(src_path));
  if (!options.vocab_path.empty()) {
    BERT_ASSIGN_OR_RETURN(std::vector<std::string> vocab, read_vocab_file(options.vocab_path));
    if (static_cast<int64_t>(vocab.size()) > src.config.vocab_size)
      return invalid_argument(options.vocab_path + ": " + std::to_string(vocab.size()) +
                              " tokens but the model's vocab_size is " + std::to_string(src.config.vocab_size));
    src.vocab = std::move(vocab);
  }
  if (!options.allow_non_finite)  // NaN / Inf weights would convert without a word
    for (const auto& [name, t] : src.tensors)
      if (Status st = check_finite(t, src_path + ": tensor '" + name + "'"); !st.ok())
        return Status(st.code(), st.message() + " (ConvertOptions.allow_non_finite, convert_weights "
                                                "--allow-non-finite, converts it anyway)");
  BERT_RETURN_IF_ERROR(write_file(dst_path, src, options.dtype));
  return report_of(src);
}

}  // namespace

Result<std::shared_ptr<const Model>> LoadFromMemory(std::span<const uint8_t> bytes, const LoadOptions& options,
                                                    const std::string& name) {
  return guarded(name, [&] { return load_from_bytes(bytes, options, name); });
}

Result<std::shared_ptr<const Model>> LoadFromMemory(const ModelParts& parts, const LoadOptions& options) {
  return guarded(parts.origin, [&] { return load_from_parts(parts, options); });
}

Result<ConvertReport> ConvertCheckpoint(const std::string& src_path, const std::string& dst_path,
                                        const ConvertOptions& options) {
  return guarded(src_path, [&] { return convert_checkpoint(src_path, dst_path, options); });
}

Result<ConvertReport> ConvertToHf(const std::string& src_path, const std::string& dst_dir) {
  return guarded(src_path, [&]() -> Result<ConvertReport> {
    BERT_ASSIGN_OR_RETURN(ModelSource src, load_model_source(src_path));
    BERT_RETURN_IF_ERROR(write_hf_directory(dst_dir, src));
    return report_of(src);
  });
}

}  // namespace bert
