// The CUDA plugin (engine/runtime/cuda_plugin.h): a process that asks for nothing CUDA maps no CUDA
// library, the first request for CUDA loads libbert_engine_cuda.so, and a plugin that cannot be loaded
// makes every CUDA entry point an error naming the file and the loader's reason (never a crash).
// CPU-only builds have no plugin: the CUDA entry points say the build has no CUDA.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <string>

#include "bert/comm.h"
#include "engine/runtime/backend.h"
#include "kernels/registry.h"

namespace bert {
namespace {

// The CUDA libraries (and the plugin) among the files this process has mapped, one per line.
std::string cuda_mappings() {
  std::ifstream maps("/proc/self/maps");
  std::string line, found;
  while (std::getline(maps, line)) {
    for (const char* lib : {"libbert_engine_cuda", "libcublas", "libcudart", "libnccl", "libcuda.so"}) {
      if (line.find(lib) != std::string::npos) {
        found += line.substr(line.find('/') == std::string::npos ? 0 : line.find('/')) + "\n";
        break;
      }
    }
  }
  return found;
}

TEST(CudaPlugin, NothingCudaIsMappedUntilCudaIsAskedFor) {
  // Host work: a CPU backend and host kernel lookups.
  auto cpu = runtime::make_cpu_backend();
  ASSERT_TRUE(cpu.ok()) << cpu.status().to_string();
  ASSERT_TRUE(kernels::resolve_kernel(kernels::Op::kLayerNorm, kernels::Device::kCpu, DType::kF32).ok());
  EXPECT_EQ(cuda_mappings(), "");
  std::string why;
  const bool available = runtime::cuda_available(&why);
#ifdef BERT_HAVE_CUDA
  // Asking loads the plugin (whether or not a GPU is present).
  EXPECT_NE(cuda_mappings().find("libbert_engine_cuda"), std::string::npos) << why;
#else
  EXPECT_FALSE(available);
  EXPECT_EQ(cuda_mappings(), "");
#endif
  (void)available;
}

// In a fresh process (death-test child): the plugin named by $BERT_CUDA_PLUGIN does not exist.
void ask_for_cuda_with_a_missing_plugin() {
  setenv("BERT_CUDA_PLUGIN", "/nonexistent/libbert_engine_cuda.so", 1);
  std::string why;
  const bool available = runtime::cuda_available(&why);
  auto backend = runtime::make_cuda_backend(kernels::GemmCompute::kExact);
  auto comm = Communicator::ForCuda(Communicator::SingleRank());
  auto kernel = kernels::resolve_cuda_kernel(kernels::Op::kLayerNorm, DType::kF32);
  std::cerr << "available=" << available << "\nwhy: " << why << "\nbackend: " << backend.status().to_string()
            << "\ncomm: " << comm.status().to_string() << "\nkernel: " << kernel.status().to_string() << "\n";
  std::exit(!available && !backend.ok() && !comm.ok() && !kernel.ok() ? 0 : 1);
}

TEST(CudaPluginDeathTest, AMissingPluginIsAnErrorNamingTheFile) {
#ifndef BERT_HAVE_CUDA
  GTEST_SKIP() << "a CPU-only build has no CUDA plugin";
#endif
  GTEST_FLAG_SET(death_test_style, "threadsafe");  // a re-executed child: nothing loaded yet
  // Each of the four errors names the file and dlopen's reason.
  EXPECT_EXIT(ask_for_cuda_with_a_missing_plugin(), ::testing::ExitedWithCode(0),
              "why: the CUDA plugin /nonexistent/libbert_engine_cuda.so \\(from \\$BERT_CUDA_PLUGIN\\) could not be "
              "loaded: .*No such file.*\nbackend: .*device cuda: the CUDA plugin /nonexistent/libbert_engine_cuda.so"
              ".*could not be loaded.*\ncomm: .*/nonexistent/libbert_engine_cuda.so.*\nkernel: .*/nonexistent/"
              "libbert_engine_cuda.so");
}

}  // namespace
}  // namespace bert
