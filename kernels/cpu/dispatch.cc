// Run-time selection of the CPU kernel table (scalar refs / AVX2 / AVX-512). Compiled for baseline
// x86-64: it only takes the addresses of the ISA-specific functions, never runs them itself.
#include "kernels/cpu/dispatch.h"

#include <cstdlib>
#include <cstring>

namespace bert::kernels {

CpuIsa cpu_isa_supported() {
  __builtin_cpu_init();
  if (!(__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c"))) {
    return CpuIsa::kScalar;
  }
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq") &&
      __builtin_cpu_supports("avx512vl")) {
    return CpuIsa::kAvx512;
  }
  return CpuIsa::kAvx2;
}

CpuIsa detect_cpu_isa() {
  const CpuIsa best = cpu_isa_supported();
  const char* env = std::getenv("BERT_CPU_ISA");
  if (env == nullptr || *env == '\0') return best;
  CpuIsa want = best;
  if (std::strcmp(env, "scalar") == 0 || std::strcmp(env, "ref") == 0) {
    want = CpuIsa::kScalar;
  } else if (std::strcmp(env, "avx2") == 0) {
    want = CpuIsa::kAvx2;
  } else if (std::strcmp(env, "avx512") == 0) {
    want = CpuIsa::kAvx512;
  }
  return static_cast<int>(want) < static_cast<int>(best) ? want : best;
}

const char* cpu_isa_name(CpuIsa isa) {
  switch (isa) {
    case CpuIsa::kScalar:
      return "scalar";
    case CpuIsa::kAvx2:
      return "avx2";
    case CpuIsa::kAvx512:
      return "avx512";
  }
  return "unknown";
}

namespace {

constexpr CpuKernels kScalarKernels{CpuIsa::kScalar,         layernorm_f32_ref,      softmax_masked_f32_ref,
                                    activation_f32_ref,      embed_f32_ref,          convert_f16_to_f32_ref,
                                    convert_bf16_to_f32_ref, convert_f32_to_f16_ref, convert_f32_to_bf16_ref};
constexpr CpuKernels kAvx2Kernels{
    CpuIsa::kAvx2,           layernorm_f32_avx2,       softmax_masked_f32_avx2, activation_f32_avx2,     embed_f32_avx2,
    convert_f16_to_f32_avx2, convert_bf16_to_f32_avx2, convert_f32_to_f16_avx2, convert_f32_to_bf16_avx2};
constexpr CpuKernels kAvx512Kernels{
    CpuIsa::kAvx512,           layernorm_f32_avx512,      softmax_masked_f32_avx512,  activation_f32_avx512,
    embed_f32_avx512,          convert_f16_to_f32_avx512, convert_bf16_to_f32_avx512, convert_f32_to_f16_avx512,
    convert_f32_to_bf16_avx512};

}  // namespace

const CpuKernels& cpu_kernels(CpuIsa isa) {
  switch (isa) {
    case CpuIsa::kAvx512:
      return kAvx512Kernels;
    case CpuIsa::kAvx2:
      return kAvx2Kernels;
    case CpuIsa::kScalar:
      break;
  }
  return kScalarKernels;
}

const CpuKernels& cpu_kernels() {
  static const CpuKernels& chosen = cpu_kernels(detect_cpu_isa());
  return chosen;
}

}  // namespace bert::kernels
