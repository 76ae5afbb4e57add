// The CPU optimizer kernels (kernels/optimizer.h) as plain loops the compiler vectorises, compiled once
// per instruction set: optimizer_cpu.cc (the baseline x86-64), optimizer_avx2.cc and optimizer_avx512.cc
// include this file and export their copy as an OptimizerKernels table (kernels/cpu/optimizer_isa.h;
// every definition here has internal linkage). Float arithmetic per element like torch and apex,
// scalars such as bias corrections computed once in double. Deterministic whatever the thread count:
// work is split into fixed-size blocks, element-wise ops do not depend on the split, and reductions sum
// each block in a fixed lane order and then the block results serially in order. The ISA copies are
// compiled without FMA contraction (CMakeLists.txt), so every copy gives the baseline's bits
// (tests/optimizer_test.cc checks it).
#pragma once

#include <cmath>
#include <cstring>
#include <vector>

#if defined(__SSE__)
#include <immintrin.h>
#endif

#include "kernels/cpu/optimizer_isa.h"

namespace bert::kernels::portable_optimizer {
namespace {

constexpr int64_t kBlock = int64_t{1} << 13;        // elements per block (a multiple of kLanes)
constexpr int64_t kParallelMin = int64_t{1} << 15;  // below this, one thread
constexpr int kLanes = 8;                           // independent accumulators of a block sum
constexpr int64_t kTile = 256;                      // elements per stack tile inside a block (divides kBlock)

int64_t block_count(int64_t n) { return (n + kBlock - 1) / kBlock; }

// Runs body(lo, len) over [0, n) in blocks, in parallel when n is large.
template <class Body>
void for_blocks(int64_t n, const Body& body) {
  if (n <= 0) return;
  const int64_t blocks = block_count(n);
#pragma omp parallel for schedule(static) if (n >= kParallelMin)
  for (int64_t b = 0; b < blocks; ++b) {
    const int64_t lo = b * kBlock;
    body(lo, (n - lo < kBlock) ? n - lo : kBlock);
  }
}

// Runs body(lo, len) over the tiles of [lo, lo + len).
template <class Body>
void for_tiles(int64_t lo, int64_t len, const Body& body) {
  for (int64_t t = lo; t < lo + len; t += kTile) body(t, (lo + len - t < kTile) ? lo + len - t : kTile);
}

// x[i] = sqrt(x[i]) for x[i] >= 0. std::sqrt's errno path (compiled in without -fno-math-errno)
// keeps loops that call it scalar, so square roots are taken here, as wide as the ISA allows. Every
// path is correctly rounded, so the result does not depend on which one an element takes.
void sqrt_in_place(float* x, int64_t n) {
  int64_t i = 0;
#if defined(__AVX512F__)
  for (; i + 16 <= n; i += 16) {  // (the masked form: GCC 12 warns about _mm512_sqrt_ps's undefined source)
    const __m512 v = _mm512_loadu_ps(x + i);
    _mm512_storeu_ps(x + i, _mm512_mask_sqrt_ps(v, __mmask16(0xFFFF), v));
  }
#elif defined(__AVX__)
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, _mm256_sqrt_ps(_mm256_loadu_ps(x + i)));
#endif
#if defined(__SSE__)
  for (; i + 4 <= n; i += 4) _mm_storeu_ps(x + i, _mm_sqrt_ps(_mm_loadu_ps(x + i)));
#endif
  for (; i < n; ++i) x[i] = std::sqrt(x[i]);
}

// 1 - beta^t.
double bias_correction(float beta, int64_t step) {
  return 1.0 - std::pow(static_cast<double>(beta), static_cast<double>(step));
}

// Sum of squares of one block, in a fixed order: element i goes to lane i % kLanes, lanes are
// combined pairwise at the end.
double block_sum_squares(const float* x, int64_t len) {
  double acc[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= len; i += kLanes) {
    for (int k = 0; k < kLanes; ++k) {
      const double v = x[i + k];
      acc[k] += v * v;
    }
  }
  for (int k = 0; i < len; ++i, ++k) {
    const double v = x[i];
    acc[k] += v * v;
  }
  for (int width = kLanes / 2; width > 0; width /= 2) {
    for (int k = 0; k < width; ++k) acc[k] += acc[k + width];
  }
  return acc[0];
}

// ---- one tile (at most kTile elements) of each update --------------------------------------------

struct AdamWCoefficients {
  float keep, beta1, one_minus_beta1, beta2, one_minus_beta2, step_size, bc2_sqrt, eps, grad_scale;
  bool zero_grad;
};

void adamw_tile(const AdamWCoefficients& c, float* __restrict param, float* __restrict grad,
                float* __restrict m, float* __restrict v, int64_t len) {
  float root_v[kTile];
  for (int64_t i = 0; i < len; ++i) {
    const float g = grad[i] * c.grad_scale;
    m[i] = c.beta1 * m[i] + c.one_minus_beta1 * g;
    v[i] = c.beta2 * v[i] + c.one_minus_beta2 * g * g;
    root_v[i] = v[i];
  }
  if (c.zero_grad) std::memset(grad, 0, sizeof(float) * static_cast<size_t>(len));  // (the tile is in cache)
  sqrt_in_place(root_v, len);
  for (int64_t i = 0; i < len; ++i) {
    const float denom = root_v[i] / c.bc2_sqrt + c.eps;
    param[i] = param[i] * c.keep - c.step_size * (m[i] / denom);
  }
}

struct LambCoefficients {
  float beta1, one_minus_beta1, beta2, one_minus_beta2, bc1, bc2, eps, weight_decay;
};

void lamb_tile(const LambCoefficients& c, const float* __restrict param, const float* __restrict grad,
               float* __restrict m, float* __restrict v, float* __restrict update, int64_t len) {
  float root_vhat[kTile];
  for (int64_t i = 0; i < len; ++i) {
    const float g = grad[i];
    m[i] = c.beta1 * m[i] + c.one_minus_beta1 * g;
    v[i] = c.beta2 * v[i] + c.one_minus_beta2 * g * g;
    root_vhat[i] = v[i] / c.bc2;
  }
  sqrt_in_place(root_vhat, len);
  for (int64_t i = 0; i < len; ++i) {
    update[i] = (m[i] / c.bc1) / (root_vhat[i] + c.eps) + c.weight_decay * param[i];
  }
}

void adamw_step(const AdamWStepArgs& a) {
  const double bc1 = bias_correction(a.beta1, a.step);
  const double bc2 = bias_correction(a.beta2, a.step);
  // As torch does it: p.mul_(1 - lr * wd); m, v moving averages; p.addcdiv_(m, sqrt(v) / sqrt(bc2) + eps,
  // value=-lr / bc1). keep is exactly 1 when wd == 0, which skips the decay.
  AdamWCoefficients c;
  c.keep = static_cast<float>(1.0 - static_cast<double>(a.lr) * a.weight_decay);
  c.beta1 = a.beta1;
  c.one_minus_beta1 = static_cast<float>(1.0 - a.beta1);
  c.beta2 = a.beta2;
  c.one_minus_beta2 = static_cast<float>(1.0 - a.beta2);
  c.step_size = static_cast<float>(a.lr / bc1);
  c.bc2_sqrt = static_cast<float>(std::sqrt(bc2));
  c.eps = a.eps;
  c.grad_scale = a.grad_scale;
  c.zero_grad = a.zero_grad;
  for_blocks(a.n, [&](int64_t block_lo, int64_t block_len) {
    for_tiles(block_lo, block_len, [&](int64_t lo, int64_t len) {
      adamw_tile(c, a.param + lo, a.grad + lo, a.m + lo, a.v + lo, len);
    });
  });
}

void lamb_update(const LambUpdateArgs& a) {
  // As apex's multi_tensor_lamb stage 1 (MOMENT_MODE_1): u = (m / bc1) / (sqrt(v / bc2) + eps) + wd * p.
  LambCoefficients c;
  c.beta1 = a.beta1;
  c.one_minus_beta1 = static_cast<float>(1.0 - a.beta1);
  c.beta2 = a.beta2;
  c.one_minus_beta2 = static_cast<float>(1.0 - a.beta2);
  c.bc1 = static_cast<float>(bias_correction(a.beta1, a.step));
  c.bc2 = static_cast<float>(bias_correction(a.beta2, a.step));
  c.eps = a.eps;
  c.weight_decay = a.weight_decay;
  for_blocks(a.n, [&](int64_t block_lo, int64_t block_len) {
    for_tiles(block_lo, block_len, [&](int64_t lo, int64_t len) {
      lamb_tile(c, a.param + lo, a.grad + lo, a.m + lo, a.v + lo, a.update + lo, len);
    });
  });
}

void lamb_apply(float* param, const float* update, int64_t n, float step_size) {
  float* __restrict p = param;
  const float* __restrict u = update;
  for_blocks(n, [&](int64_t lo, int64_t len) {
    for (int64_t i = lo; i < lo + len; ++i) p[i] -= step_size * u[i];
  });
}

double sum_squares(const float* x, int64_t n) {
  if (n <= 0) return 0.0;
  const int64_t blocks = block_count(n);
  if (blocks == 1) return block_sum_squares(x, n);
  std::vector<double> partial(static_cast<size_t>(blocks));
  for_blocks(n, [&](int64_t lo, int64_t len) { partial[static_cast<size_t>(lo / kBlock)] = block_sum_squares(x + lo, len); });
  double sum = 0.0;
  for (double s : partial) sum += s;
  return sum;
}

void scale(float* x, int64_t n, float s) {
  float* __restrict p = x;
  for_blocks(n, [&](int64_t lo, int64_t len) {
    for (int64_t i = lo; i < lo + len; ++i) p[i] *= s;
  });
}

bool all_finite(const float* x, int64_t n) {
  if (n <= 0) return true;
  constexpr uint32_t kExponent = 0x7f800000u;  // all ones: Inf or NaN
  const int64_t blocks = block_count(n);
  std::vector<unsigned char> bad(static_cast<size_t>(blocks), 0);
  for_blocks(n, [&](int64_t lo, int64_t len) {
    uint32_t any = 0;
    for (int64_t i = lo; i < lo + len; ++i) {
      uint32_t bits;
      std::memcpy(&bits, x + i, sizeof bits);
      any |= static_cast<uint32_t>((bits & kExponent) == kExponent);
    }
    bad[static_cast<size_t>(lo / kBlock)] = any != 0;
  });
  for (unsigned char b : bad) {
    if (b) return false;
  }
  return true;
}

}  // namespace
}  // namespace bert::kernels::portable_optimizer

// This copy's table, for the file that includes this one (its ISA).
#define BERT_OPTIMIZER_KERNELS_TABLE(name)                                                                \
  const OptimizerKernels name = {portable_optimizer::adamw_step, portable_optimizer::lamb_update,         \
                                 portable_optimizer::lamb_apply, portable_optimizer::sum_squares,         \
                                 portable_optimizer::scale,      portable_optimizer::all_finite}
