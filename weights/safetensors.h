// Reading and writing safetensors files (https://github.com/huggingface/safetensors format):
// an 8-byte little-endian header length, a JSON header, then the raw tensor bytes.
// The reader maps the file once and validates the whole header before handing out any tensor;
// tensors point into the mapping (zero copy) and keep it alive through Tensor.owner.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "bert/status.h"
#include "engine/core/tensor.h"

namespace bert {

class MappedFile;

class SafetensorsFile {
 public:
  // Maps and validates `path`. Every error names the file and, where relevant, the tensor.
  static Result<SafetensorsFile> Open(const std::string& path);

  const std::string& path() const { return path_; }
  // The optional "__metadata__" object (string -> string); empty when the file has none.
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const TensorMap& tensors() const { return tensors_; }
  // nullptr when the file holds no tensor of that name.
  const Tensor* find(const std::string& name) const;

 private:
  SafetensorsFile() = default;
  std::string path_;
  std::map<std::string, std::string> metadata_;
  TensorMap tensors_;
  std::shared_ptr<const MappedFile> file_;
};

// Writes a standard safetensors file: header JSON padded with spaces to a multiple of 8 bytes,
// then the tensors' bytes contiguous in the given order. Written to "<path>.tmp.<pid>", fsync'ed
// and renamed over `path`, so readers never see a partial file.
Status write_safetensors(const std::string& path,
                         const std::vector<std::pair<std::string, Tensor>>& tensors,
                         const std::map<std::string, std::string>& metadata);

// A sharded checkpoint: `model.safetensors.index.json` with {"weight_map": {name: shard file}}.
// Shards are relative to the index's directory; each is opened once. Returns exactly the tensors
// the weight_map names (each kept alive by its shard's mapping).
Result<TensorMap> load_safetensors_index(const std::string& index_json_path);

}  // namespace bert
