// The CUDA plugin's entry point (engine/runtime/cuda_plugin.h): the one C function libbert_engine_cuda.so
// exports for the engine's loader, a table of this plugin's implementations of the CUDA entry points.
#include "engine/runtime/cuda_plugin.h"

#include "engine/runtime/cuda/cuda_backend.h"

namespace {

bert::runtime::CudaPlugin make_table() {
  bert::runtime::CudaPlugin t;
  t.make_backend = &bert::cuda_plugin::make_cuda_backend;
  t.available = &bert::cuda_plugin::cuda_available;
  t.make_optimizer = &bert::cuda_plugin::make_cuda_optimizer;
#ifdef BERT_PLUGIN_HAVE_NCCL
  t.make_nccl_communicator = &bert::cuda_plugin::make_nccl_communicator;
#endif
  t.kernel_entries = &bert::cuda_plugin::cuda_kernel_entries;
  return t;
}

}  // namespace

extern "C" __attribute__((visibility("default"))) const bert::runtime::CudaPlugin* bert_cuda_plugin() {
  static const bert::runtime::CudaPlugin table = make_table();
  return &table;
}
