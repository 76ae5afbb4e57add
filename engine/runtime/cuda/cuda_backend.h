// What the CUDA runtime's other parts (the device optimizer) need of a CUDA backend: its stream.
#pragma once

#include "engine/runtime/backend.h"

namespace bert::runtime {

// The cudaStream_t (as void*) every op of this backend runs on; `backend` must be a CUDA backend.
void* cuda_stream(Backend& backend);

}  // namespace bert::runtime
