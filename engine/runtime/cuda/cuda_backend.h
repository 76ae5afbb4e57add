// What the CUDA runtime's other parts (the device optimizer) need of a CUDA backend: its stream.
#pragma once

#include <memory>
#include <span>
#include <string>

#include "bert/comm.h"
#include "engine/runtime/backend.h"
#include "engine/train/param_optimizer.h"
#include "kernels/registry.h"

namespace bert::runtime {

// The cudaStream_t (as void*) every op of this backend runs on; `backend` must be a CUDA backend.
void* cuda_stream(Backend& backend);

}  // namespace bert::runtime

// The plugin's implementations of the engine's CUDA entry points (engine/runtime/cuda_plugin.h lists
// them; engine/runtime/cuda/plugin.cc exports them). Their own namespace keeps them apart from the
// engine's forwarding functions of the same purpose (engine/runtime/cuda_loader).
namespace bert::cuda_plugin {

Result<std::unique_ptr<runtime::Backend>> make_cuda_backend(runtime::GemmCompute compute);
bool cuda_available(std::string* why);
Result<std::unique_ptr<ParamOptimizer>> make_cuda_optimizer(runtime::Backend& backend, ParamArena& arena,
                                                            const TrainerOptions& options);
// Defined only when the plugin is built with NCCL (engine/dist/nccl/nccl_comm.cc).
Result<std::shared_ptr<Communicator>> make_nccl_communicator(std::shared_ptr<Communicator> host);
std::span<const kernels::KernelEntry> cuda_kernel_entries();  // kernels/cuda/registry_cuda.cc

}  // namespace bert::cuda_plugin
