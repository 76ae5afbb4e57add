// Run-time selection of the CPU kernel table (scalar refs / AVX2 / AVX-512), built from the op registry
// (kernels/registry.cc). Compiled for baseline x86-64: it only takes the addresses of the ISA-specific
// functions, never runs them itself.
#include "kernels/cpu/dispatch.h"

#include "kernels/attention.h"
#include "kernels/registry.h"

#include <cpuid.h>

#include <cstdio>
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

// kernels/attention.h. Here, in baseline code: the AVX512_BF16 file may use AVX-512 anywhere.
bool attention_bf16_supported() {
  static const bool has = [] {
    unsigned a = 0, b = 0, c = 0, d = 0;
    return __get_cpuid_count(7, 1, &a, &b, &c, &d) && ((a >> 5) & 1u);  // CPUID.(7,1):EAX[5] AVX512_BF16
  }();
  return has && detect_cpu_isa() == CpuIsa::kAvx512;
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

// The function of resolve_kernel(op, kCpu, dtype, isa); every field has at least a ref entry, so a
// failure is a broken table (a bug), reported and aborted on at first use.
template <class F>
F pick(Op op, DType dtype, CpuIsa isa) {
  auto e = resolve_kernel(op, Device::kCpu, dtype, isa);
  if (!e.ok()) {
    std::fprintf(stderr, "bert kernels: %s\n", e.status().to_string().c_str());
    std::abort();
  }
  return (*e)->fn_as<F>();
}

CpuKernels build(CpuIsa isa) {
  CpuKernels k{};
  k.isa = isa;
  k.layernorm = pick<decltype(k.layernorm)>(Op::kLayerNorm, DType::kF32, isa);
  k.softmax_masked = pick<decltype(k.softmax_masked)>(Op::kSoftmaxMasked, DType::kF32, isa);
  k.activation = pick<decltype(k.activation)>(Op::kActivation, DType::kF32, isa);
  k.embed = pick<decltype(k.embed)>(Op::kEmbed, DType::kF32, isa);
  k.convert_f16_to_f32 = pick<ConvertToF32Fn>(Op::kConvertToF32, DType::kF16, isa);
  k.convert_bf16_to_f32 = pick<ConvertToF32Fn>(Op::kConvertToF32, DType::kBF16, isa);
  k.convert_f32_to_f16 = pick<ConvertFromF32Fn>(Op::kConvertFromF32, DType::kF16, isa);
  k.convert_f32_to_bf16 = pick<ConvertFromF32Fn>(Op::kConvertFromF32, DType::kBF16, isa);
  return k;
}

}  // namespace

const CpuKernels& cpu_kernels(CpuIsa isa) {
  static const CpuKernels tables[3] = {build(CpuIsa::kScalar), build(CpuIsa::kAvx2), build(CpuIsa::kAvx512)};
  switch (isa) {
    case CpuIsa::kAvx512:
      return tables[2];
    case CpuIsa::kAvx2:
      return tables[1];
    case CpuIsa::kScalar:
      break;
  }
  return tables[0];
}

const CpuKernels& cpu_kernels() {
  static const CpuKernels& chosen = cpu_kernels(detect_cpu_isa());
  return chosen;
}

}  // namespace bert::kernels
