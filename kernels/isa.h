// The CPU instruction sets the kernels are compiled for, and run-time detection of the best one the
// CPU offers (implemented in kernels/cpu/dispatch.cc). Shared by the op registry and the dispatch table.
#pragma once

namespace bert::kernels {

// Ordered: a CPU that has one also runs every entry needing a lower one.
enum class CpuIsa { kScalar, kAvx2, kAvx512 };

// Best ISA the CPU supports (avx512f+bw+dq+vl; avx2+fma+f16c). The environment variable
// BERT_CPU_ISA=scalar|avx2|avx512 can lower it, never raise it beyond what the CPU has.
CpuIsa detect_cpu_isa();
// Best ISA the CPU supports, ignoring BERT_CPU_ISA.
CpuIsa cpu_isa_supported();
const char* cpu_isa_name(CpuIsa isa);  // "scalar", "avx2", "avx512"

}  // namespace bert::kernels
