// Loading a PyTorch state dict saved by torch.save (zip format, PyTorch >= 1.6), e.g.
// pytorch_model.bin, without Python and without executing anything from the file.
#pragma once

#include <string>

#include "bert/status.h"
#include "engine/core/tensor.h"

namespace bert {

// Maps `path`, reads its zip directory and the restricted pickle in <prefix>/data.pkl, and returns
// every tensor of the state dict by name. Contiguous, aligned tensors point into the mapping (zero
// copy); strided or misaligned ones are copied into contiguous buffers. Pickles that reference
// anything but tensor data are refused. Legacy (pre-1.6, non-zip) files give an Unsupported error.
Result<TensorMap> load_torch_checkpoint(const std::string& path);

}  // namespace bert
