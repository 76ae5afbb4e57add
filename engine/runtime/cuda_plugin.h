// The CUDA plugin: in CUDA builds the CUDA backend (engine/runtime/cuda, kernels/cuda, the NCCL
// communicator of engine/dist/nccl) is a shared library of its own, libbert_engine_cuda.so, beside
// libbert_engine. The engine dlopen()s it on the first request for CUDA (make_cuda_backend,
// cuda_available, the CUDA optimizer, Communicator::ForCuda, a kCuda registry lookup), so a process
// that never asks for CUDA maps no CUDA library. The plugin exports one C function, bert_cuda_plugin(),
// returning this table; the loader is engine/runtime/cuda_loader/cuda_loader.cc. Where it is found:
// $BERT_CUDA_PLUGIN (a path) when set, else next to libbert_engine (docs/CUDA.md).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "bert/comm.h"
#include "engine/runtime/backend.h"
#include "engine/train/param_optimizer.h"
#include "kernels/registry.h"

namespace bert::runtime {

// Raised whenever the table below changes; the loader refuses a plugin of another version.
inline constexpr uint32_t kCudaPluginAbi = 1;
inline constexpr char kCudaPluginFile[] = "libbert_engine_cuda.so";
inline constexpr char kCudaPluginSymbol[] = "bert_cuda_plugin";
inline constexpr char kCudaPluginEnv[] = "BERT_CUDA_PLUGIN";

struct CudaPlugin {
  uint32_t abi = kCudaPluginAbi;
  uint32_t size = sizeof(CudaPlugin);
  Result<std::unique_ptr<Backend>> (*make_backend)(GemmCompute compute) = nullptr;
  bool (*available)(std::string* why) = nullptr;
  Result<std::unique_ptr<ParamOptimizer>> (*make_optimizer)(Backend& backend, ParamArena& arena,
                                                            const TrainerOptions& options) = nullptr;
  // nullptr when the plugin was built without NCCL.
  Result<std::shared_ptr<Communicator>> (*make_nccl_communicator)(std::shared_ptr<Communicator> host) = nullptr;
  std::span<const kernels::KernelEntry> (*kernel_entries)() = nullptr;
};

// The plugin's table, loaded on the first call (later calls return the same table or the same error:
// the file tried and dlerror(), or a version mismatch).
Result<const CudaPlugin*> cuda_plugin();

}  // namespace bert::runtime

// The plugin's one exported entry point (engine/runtime/cuda/plugin.cc).
extern "C" const bert::runtime::CudaPlugin* bert_cuda_plugin();
