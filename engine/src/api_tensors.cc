// The public tensors-file API (bert/tensors_file.h) over the engine's safetensors reader and writer.
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "bert/tensors_file.h"
#include "weights/safetensors.h"
#include "engine/core/tensor.h"

namespace bert {
namespace {

// A tensor owning a copy of `values` laid out as `shape`.
template <typename T>
Result<HostTensor> owned(std::vector<T> values, std::vector<int64_t> shape, DType dtype) {
  int64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0) return invalid_argument("tensor shape " + ShapeString(shape) + " has a negative dimension");
    n *= d;
  }
  if (n != static_cast<int64_t>(values.size()))
    return invalid_argument("tensor shape " + ShapeString(shape) + " holds " + std::to_string(n) + " values, not " +
                            std::to_string(values.size()));
  auto buffer = std::make_shared<std::vector<T>>(std::move(values));
  HostTensor h;
  h.dtype = dtype;
  h.shape = std::move(shape);
  h.data = buffer->data();
  h.owner = std::shared_ptr<const void>(buffer, buffer->data());
  return h;
}

}  // namespace

Result<HostTensor> FloatTensor(std::vector<float> values, std::vector<int64_t> shape) {
  return owned(std::move(values), std::move(shape), DType::kF32);
}
Result<HostTensor> Int32Tensor(std::vector<int32_t> values, std::vector<int64_t> shape) {
  return owned(std::move(values), std::move(shape), DType::kI32);
}
Result<HostTensor> Int64Tensor(std::vector<int64_t> values, std::vector<int64_t> shape) {
  return owned(std::move(values), std::move(shape), DType::kI64);
}

HostTensor FloatView(const float* data, std::vector<int64_t> shape) {
  HostTensor h;
  h.dtype = DType::kF32;
  h.shape = std::move(shape);
  h.data = data;
  return h;
}

std::string ShapeString(const std::vector<int64_t>& shape) { return shape_string(shape); }

Result<std::vector<int32_t>> TensorToInt32(const HostTensor& t, const std::string& what) {
  std::vector<int32_t> out(static_cast<size_t>(t.numel()));
  if (t.dtype == DType::kI32) {
    if (!out.empty()) std::memcpy(out.data(), t.data, t.nbytes());
  } else if (t.dtype == DType::kI64) {
    const int64_t* v = t.as<int64_t>();
    for (int64_t i = 0; i < t.numel(); ++i) {
      if (v[i] < INT32_MIN || v[i] > INT32_MAX)
        return invalid_argument(what + " holds " + std::to_string(v[i]) + ", beyond int32");
      out[i] = static_cast<int32_t>(v[i]);
    }
  } else {
    return invalid_argument(what + " has dtype " + std::string(dtype_name(t.dtype)) + "; expected I32 or I64");
  }
  return out;
}

Result<TensorsFile> ReadTensorsFile(const std::string& path) {
  BERT_ASSIGN_OR_RETURN(SafetensorsFile f, SafetensorsFile::Open(path));
  TensorsFile out;
  out.path = path;
  out.metadata = f.metadata();
  for (const auto& [name, t] : f.tensors()) out.tensors.emplace(name, t);
  return out;
}

Status WriteTensorsFile(const std::string& path, const std::vector<std::pair<std::string, HostTensor>>& tensors,
                        const std::map<std::string, std::string>& metadata) {
  std::vector<std::pair<std::string, Tensor>> internal;
  internal.reserve(tensors.size());
  for (const auto& [name, h] : tensors) {
    if (!h.data && h.numel() > 0) return invalid_argument(path + ": tensor '" + name + "' has no data");
    internal.emplace_back(name, h);
  }
  return write_safetensors(path, internal, metadata);
}

}  // namespace bert
