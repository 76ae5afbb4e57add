// Scalar references for the GEMM calls: double accumulation, the spec GemmPlanner is tested against.
#include <cmath>

#include "kernels/gemm.h"

namespace bert::kernels {

void linear_f32_ref(const LinearArgs& a) {
  const int64_t ldx = a.ldx ? a.ldx : a.K, ldy = a.ldy ? a.ldy : a.N;
  // Group g owns output columns [g*Ng, (g+1)*Ng) and reads input columns [g*Kg, (g+1)*Kg).
  const int64_t Kg = a.K / a.groups, Ng = a.N / a.groups;
  for (int64_t m = 0; m < a.M; ++m) {
    for (int64_t n = 0; n < a.N; ++n) {
      const float* x = a.x + m * ldx + (n / Ng) * Kg;
      double acc = a.bias ? a.bias[n] : 0.0;
      for (int64_t k = 0; k < Kg; ++k) acc += double(x[k]) * double(a.w[n * Kg + k]);
      a.y[m * ldy + n] = static_cast<float>(acc);
    }
    activation_f32_ref(ActivationArgs{a.y + m * ldy, a.N, a.act});
  }
}

void batched_matmul_f32_ref(const BatchedMatmulArgs& a) {
  const int64_t* as = a.a_strides;
  const int64_t* bs = a.b_strides;
  const int64_t* cs = a.c_strides;
  for (int64_t i = 0; i < a.batch0; ++i)
    for (int64_t j = 0; j < a.batch1; ++j)
      for (int64_t m = 0; m < a.M; ++m)
        for (int64_t n = 0; n < a.N; ++n) {
          float& out = a.c[i * cs[0] + j * cs[1] + m * cs[2] + n * cs[3]];
          double acc = a.accumulate ? out : 0.0;
          for (int64_t k = 0; k < a.K; ++k)
            acc += double(a.a[i * as[0] + j * as[1] + m * as[2] + k * as[3]]) *
                   double(a.b[i * bs[0] + j * bs[1] + k * bs[2] + n * bs[3]]);
          out = static_cast<float>(acc);
        }
}

const char* gemm_compute_name(GemmCompute c) {
  switch (c) {
    case GemmCompute::kExact: return "fp32";
    case GemmCompute::kTF32: return "tf32";
    case GemmCompute::kF16: return "fp16";
    case GemmCompute::kBF16: return "bf16";
  }
  return "?";
}

}  // namespace bert::kernels
