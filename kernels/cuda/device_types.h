// The element types of device tensors are the engine's one dtype enum (bert/dtype.h): the CUDA
// kernels take kF32 and kF16 (fp16 stored as uint16_t bits), int8 GEMMs kI8. No CUDA types here, so
// engine code compiled by the host compiler can include it.
#pragma once

#include "bert/dtype.h"
