// CUDA builds: the engine's CUDA entry points, each forwarding to the CUDA plugin (libbert_engine_cuda.so,
// engine/runtime/cuda_plugin.h), which is dlopen()ed on the first of them. Until then no CUDA library is
// mapped. A plugin that is missing, fails to load or is of another version makes each entry point an
// error naming the file and the reason. CPU-only builds compile engine/runtime/no_cuda and
// engine/dist/no_nccl instead.
#include <dlfcn.h>

#include <cstdlib>
#include <string>

#include "engine/dist/comm_impl.h"
#include "engine/runtime/cuda_plugin.h"

namespace bert {
namespace runtime {
namespace {

// The directory of the object this function is in (libbert_engine), with a trailing '/'; empty when
// dladdr cannot say (dlopen then searches the usual library path).
std::string engine_dir() {
  Dl_info info{};
  if (!dladdr(reinterpret_cast<void*>(&engine_dir), &info) || !info.dli_fname) return "";
  const std::string path = info.dli_fname;
  const size_t slash = path.rfind('/');
  return slash == std::string::npos ? std::string() : path.substr(0, slash + 1);
}

struct Loaded {
  const CudaPlugin* plugin = nullptr;
  Status error;  // why plugin is null
};

Loaded load() {
  Loaded l;
  const char* env = std::getenv(kCudaPluginEnv);
  const bool from_env = env && *env;
  const std::string path = from_env ? std::string(env) : engine_dir() + kCudaPluginFile;
  const std::string file = "the CUDA plugin " + path + (from_env ? std::string(" (from $") + kCudaPluginEnv + ")" : "");
  dlerror();
  void* handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!handle) {
    const char* e = dlerror();
    l.error = unsupported(file + " could not be loaded: " + (e ? e : "unknown dlopen error"));
    return l;
  }
  using Entry = const CudaPlugin* (*)();
  auto entry = reinterpret_cast<Entry>(dlsym(handle, kCudaPluginSymbol));
  if (!entry) {
    const char* e = dlerror();
    l.error = unsupported(file + " has no entry point " + kCudaPluginSymbol + ": " + (e ? e : "not found"));
    dlclose(handle);
    return l;
  }
  const CudaPlugin* p = entry();
  if (!p || p->abi != kCudaPluginAbi || p->size != sizeof(CudaPlugin) || !p->make_backend || !p->available ||
      !p->make_optimizer || !p->kernel_entries) {
    l.error = unsupported(file + " is of another version than this libbert_engine (plugin interface " +
                          std::to_string(p ? p->abi : 0) + ", expected " + std::to_string(kCudaPluginAbi) +
                          "): install the plugin built with it");
    return l;  // the handle stays open: the plugin's code may already have run
  }
  l.plugin = p;
  return l;
}

}  // namespace

Result<const CudaPlugin*> cuda_plugin() {
  static const Loaded loaded = load();  // once per process, thread-safe
  if (!loaded.plugin) return loaded.error;
  return loaded.plugin;
}

Result<std::unique_ptr<Backend>> make_cuda_backend(GemmCompute compute) {
  auto p = cuda_plugin();
  if (!p.ok()) return unsupported("device cuda: " + p.status().message() + "; use device cpu");
  return (*p)->make_backend(compute);
}

bool cuda_available(std::string* why) {
  auto p = cuda_plugin();
  if (!p.ok()) {
    if (why) *why = p.status().message();
    return false;
  }
  return (*p)->available(why);
}

}  // namespace runtime

Result<std::unique_ptr<ParamOptimizer>> make_cuda_optimizer(runtime::Backend& backend, ParamArena& arena,
                                                            const TrainerOptions& options) {
  BERT_ASSIGN_OR_RETURN(const runtime::CudaPlugin* p, runtime::cuda_plugin());
  return p->make_optimizer(backend, arena, options);
}

Result<std::shared_ptr<Communicator>> make_nccl_communicator(std::shared_ptr<Communicator> host) {
  auto p = runtime::cuda_plugin();
  if (!p.ok()) return unsupported("GPU ranks cannot communicate: " + p.status().message());
  if (!(*p)->make_nccl_communicator)
    return unsupported("this build has no NCCL (a CUDA build finds it in the CUDA toolkit): GPU ranks cannot "
                       "communicate");
  return (*p)->make_nccl_communicator(std::move(host));
}

namespace kernels::detail {

std::span<const KernelEntry> cuda_kernel_entries() {
  auto p = runtime::cuda_plugin();
  if (!p.ok()) return {};
  return (*p)->kernel_entries();
}

}  // namespace kernels::detail

}  // namespace bert
