// A restricted, non-executing unpickler for the data.pkl of a torch.save zip checkpoint.
// It understands only the opcodes and globals a state dict needs (OrderedDict, _rebuild_tensor_v2,
// _rebuild_parameter, typed storages) and rebuilds tensor *descriptions*; it never calls anything.
// Any other global (os.system, builtins.eval, ...) or opcode is an error.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "bert/dtype.h"
#include "bert/status.h"

namespace bert {

// A storage named by a BINPERSID ('storage', <type>, key, location, numel).
struct TorchStorageRef {
  DType dtype = DType::kF32;
  std::string key;       // the archive holds its bytes at "<prefix>/data/<key>"
  std::string location;  // "cpu", "cuda:0", ...
  int64_t numel = 0;     // elements of `dtype`
};

// A tensor as _rebuild_tensor_v2 describes it: a strided view into a storage.
struct TorchTensorRef {
  TorchStorageRef storage;
  int64_t storage_offset = 0;  // in elements
  std::vector<int64_t> size;
  std::vector<int64_t> stride;  // in elements
};

// Runs the restricted unpickler over `data` (the bytes of data.pkl). The top-level object must be a
// dict of string -> tensor; returns its entries in pickle order (a repeated key keeps the last value).
// `path` names the checkpoint in error messages.
Result<std::vector<std::pair<std::string, TorchTensorRef>>> unpickle_torch_state_dict(
    const uint8_t* data, size_t size, const std::string& path);

}  // namespace bert
