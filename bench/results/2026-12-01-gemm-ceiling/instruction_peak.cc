#include <immintrin.h>
#include <chrono>
#include <cstdio>
#include <cstdint>
// Peak vpdpbusd zmm throughput with 12 independent accumulators.
__attribute__((target("avx512f,avx512vnni,avx512bw"), noinline)) int peak(long iters) {
  __m512i acc[12];
  for (int i = 0; i < 12; ++i) acc[i] = _mm512_set1_epi32(i);
  __m512i a = _mm512_set1_epi32(0x01010101), b = _mm512_set1_epi32(0x02020202);
  for (long it = 0; it < iters; ++it) {
#pragma GCC unroll 12
    for (int i = 0; i < 12; ++i) acc[i] = _mm512_dpbusd_epi32(acc[i], a, b);
    asm volatile("" : "+v"(a), "+v"(b));
  }
  __m512i s = acc[0];
  for (int i = 1; i < 12; ++i) s = _mm512_add_epi32(s, acc[i]);
  return _mm512_reduce_add_epi32(s);
}
__attribute__((target("avx512f,avx512bf16,avx512bw"), noinline)) float peak_bf16(long iters) {
  __m512 acc[12];
  for (int i = 0; i < 12; ++i) acc[i] = _mm512_set1_ps(i);
  __m512bh a = (__m512bh)_mm512_set1_epi32(0x3f803f80), b = (__m512bh)_mm512_set1_epi32(0x3f803f80);
  for (long it = 0; it < iters; ++it) {
#pragma GCC unroll 12
    for (int i = 0; i < 12; ++i) acc[i] = _mm512_dpbf16_ps(acc[i], a, b);
  }
  __m512 s = acc[0];
  for (int i = 1; i < 12; ++i) s = _mm512_add_ps(s, acc[i]);
  return _mm512_reduce_add_ps(s);
}
__attribute__((target("avx512f,fma"), noinline)) float peak_fma(long iters) {
  __m512 acc[12];
  for (int i = 0; i < 12; ++i) acc[i] = _mm512_set1_ps(i);
  __m512 a = _mm512_set1_ps(1.0001f), b = _mm512_set1_ps(0.9999f);
  for (long it = 0; it < iters; ++it) {
#pragma GCC unroll 12
    for (int i = 0; i < 12; ++i) acc[i] = _mm512_fmadd_ps(acc[i], a, b);
  }
  __m512 s = acc[0];
  for (int i = 1; i < 12; ++i) s = _mm512_add_ps(s, acc[i]);
  return _mm512_reduce_add_ps(s);
}
int main() {
  const long iters = 50000000;
  for (int r = 0; r < 2; ++r) {
    auto t0 = std::chrono::steady_clock::now(); int x = peak(iters);
    auto t1 = std::chrono::steady_clock::now(); float y = peak_bf16(iters);
    auto t2 = std::chrono::steady_clock::now(); float z = peak_fma(iters);
    auto t3 = std::chrono::steady_clock::now();
    auto s = [](auto a, auto b) { return std::chrono::duration<double>(b - a).count(); };
    printf("vpdpbusd: %.1f GOPS (int8, 128 ops/instr)  vdpbf16ps: %.1f GFLOP/s (64/instr)  vfmadd zmm: %.1f GFLOP/s  [%d %g %g]\n",
           12.0 * iters * 128 / s(t0, t1) / 1e9, 12.0 * iters * 64 / s(t1, t2) / 1e9, 12.0 * iters * 32 / s(t2, t3) / 1e9, x, y, z);
  }
}
