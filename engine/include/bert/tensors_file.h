// Named arrays in and out of safetensors files (bert_run's --inputs / --outputs, gradients, any
// tool's tensors), through the engine's own validated reader and atomic writer. Public header.
//
//   auto f = bert::ReadTensorsFile("in.safetensors");
//   auto ids = bert::TensorToInt32(*f->find("input_ids"), "input_ids");      // I32 or I64 -> int32
//   bert::Status st = bert::WriteTensorsFile("out.safetensors", {{"logits", bert::FloatTensor(v, {2, 3})}});
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "bert/dtype.h"
#include "bert/status.h"
#include "bert/tensor.h"

namespace bert {


// Tensors owning a copy of `values`; InvalidArgument when the shape does not hold values.size().
Result<HostTensor> FloatTensor(std::vector<float> values, std::vector<int64_t> shape);
Result<HostTensor> Int32Tensor(std::vector<int32_t> values, std::vector<int64_t> shape);
Result<HostTensor> Int64Tensor(std::vector<int64_t> values, std::vector<int64_t> shape);
// A view of float memory someone else keeps alive (no copy).
HostTensor FloatView(const float* data, std::vector<int64_t> shape);

// "[2, 3, 4]"
std::string ShapeString(const std::vector<int64_t>& shape);

// An I32 or I64 tensor as int32 values (I64 values beyond int32 are an error naming `what` and the
// value; other dtypes are an error naming the dtype).
Result<std::vector<int32_t>> TensorToInt32(const HostTensor& t, const std::string& what);

// A safetensors file, read and validated whole (header, dtypes, shapes, offsets, overlaps); the
// tensors point into a read-only mapping of it.
struct TensorsFile {
  std::string path;
  std::map<std::string, std::string> metadata;  // __metadata__
  std::map<std::string, HostTensor> tensors;
  const HostTensor* find(const std::string& name) const {
    auto it = tensors.find(name);
    return it == tensors.end() ? nullptr : &it->second;
  }
};
Result<TensorsFile> ReadTensorsFile(const std::string& path);

// Writes a standard safetensors file, tensors in the given order, atomically (temporary + rename).
Status WriteTensorsFile(const std::string& path, const std::vector<std::pair<std::string, HostTensor>>& tensors,
                        const std::map<std::string, std::string>& metadata = {});

}  // namespace bert
