// Shared by the CPU emulation of the CUDA device (kernels/cuda_emu/*.cc): the error record behind
// cuda_last_error(), element-type conversion of host rows, and a row-chunked OpenMP loop. Not a public API.
#pragma once

#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <string>

#include "kernels/cuda/device_types.h"

namespace bert::kernels::cuda::emu {

// Records `what` as this thread's cuda_last_error() and returns false (for `return fail(...)`).
bool fail(const std::string& what);

// dst[i] = src[i] as fp32 (src of element type e; fp16 as bits, converted like convert_f16_to_f32_ref).
void to_f32(const void* src, Elem e, float* dst, int64_t n);
// dst[i] = src[i] as element type e (fp16: round to nearest even, like convert_f32_to_f16_ref).
void from_f32(const float* src, void* dst, Elem e, int64_t n);

// Below this many elements of work a loop runs on one thread.
constexpr int64_t kParallelMinWork = int64_t{1} << 15;

// Calls f(begin, end) over [0, n) split into contiguous chunks, in parallel (OpenMP) when work >= kParallelMinWork.
template <typename F>
void parallel_chunks(int64_t n, int64_t work, F&& f) {
  if (n <= 0) return;
  if (work < kParallelMinWork || n == 1) {
    f(int64_t{0}, n);
    return;
  }
#pragma omp parallel
  {
    const int64_t threads = omp_get_num_threads(), t = omp_get_thread_num();
    const int64_t per = (n + threads - 1) / threads;
    const int64_t b = std::min(n, t * per), e = std::min(n, b + per);
    if (b < e) f(b, e);
  }
}

}  // namespace bert::kernels::cuda::emu
