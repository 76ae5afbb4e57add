// Prototype (not built by CMake): hand-written AVX-512 GEMM micro-kernels beside oneDNN 2.6's matmul on
// BERT's linear shapes, 1 thread, same process. int8: u8 x s8 -> s32 (vpdpbusd, VNNI); bf16: bf16 pairs ->
// fp32 (vdpbf16ps); fp32: vfmadd231ps. B (the weights) packed once into panels of NR columns; A row-major.
// Only the inner product: no quantisation, epilogue or threading. Results are checked against a scalar sum.
#include <immintrin.h>
#include <dnnl.hpp>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <tuple>
#include <vector>
#define TGT __attribute__((target("avx512f,avx512vnni,avx512bw,avx512dq,avx512vl,avx512bf16,fma")))

// ---- int8 ----
template <int MR, int NV>
TGT inline void micro_i8(const uint8_t* A, int lda, const int8_t* Bp, int K, int32_t* C, int ldc) {
  __m512i acc[MR][NV];
#pragma GCC unroll 16
  for (int m = 0; m < MR; ++m)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) acc[m][v] = _mm512_setzero_si512();
  for (int k = 0; k < K; k += 4) {
    __m512i b[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) b[v] = _mm512_loadu_si512(Bp + (size_t)k * 16 * NV + v * 64);
#pragma GCC unroll 16
    for (int m = 0; m < MR; ++m) {
      const __m512i a = _mm512_set1_epi32(*reinterpret_cast<const int32_t*>(A + (size_t)m * lda + k));
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) acc[m][v] = _mm512_dpbusd_epi32(acc[m][v], a, b[v]);
    }
  }
#pragma GCC unroll 16
  for (int m = 0; m < MR; ++m)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) _mm512_storeu_si512(C + (size_t)m * ldc + v * 16, acc[m][v]);
}
// ---- bf16 (pairs of k) ----
template <int MR, int NV>
TGT inline void micro_bf16(const uint16_t* A, int lda, const uint16_t* Bp, int K, float* C, int ldc) {
  __m512 acc[MR][NV];
#pragma GCC unroll 16
  for (int m = 0; m < MR; ++m)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) acc[m][v] = _mm512_setzero_ps();
  for (int k = 0; k < K; k += 2) {
    __m512bh b[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) b[v] = (__m512bh)_mm512_loadu_si512(Bp + (size_t)k * 16 * NV + v * 32);
#pragma GCC unroll 16
    for (int m = 0; m < MR; ++m) {
      const __m512bh a = (__m512bh)_mm512_set1_epi32(*reinterpret_cast<const int32_t*>(A + (size_t)m * lda + k));
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) acc[m][v] = _mm512_dpbf16_ps(acc[m][v], a, b[v]);
    }
  }
#pragma GCC unroll 16
  for (int m = 0; m < MR; ++m)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) _mm512_storeu_ps(C + (size_t)m * ldc + v * 16, acc[m][v]);
}
// ---- fp32 ----
template <int MR, int NV>
TGT inline void micro_f32(const float* A, int lda, const float* Bp, int K, float* C, int ldc) {
  __m512 acc[MR][NV];
#pragma GCC unroll 16
  for (int m = 0; m < MR; ++m)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) acc[m][v] = _mm512_setzero_ps();
  for (int k = 0; k < K; ++k) {
    __m512 b[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) b[v] = _mm512_loadu_ps(Bp + (size_t)k * 16 * NV + v * 16);
#pragma GCC unroll 16
    for (int m = 0; m < MR; ++m) {
      const __m512 a = _mm512_set1_ps(A[(size_t)m * lda + k]);
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) acc[m][v] = _mm512_fmadd_ps(a, b[v], acc[m][v]);
    }
  }
#pragma GCC unroll 16
  for (int m = 0; m < MR; ++m)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) _mm512_storeu_ps(C + (size_t)m * ldc + v * 16, acc[m][v]);
}

// Packs B [K, N] into panels of NR columns, KG consecutive k per column (4 int8, 2 bf16, 1 fp32).
template <class E, int NR, int KG> std::vector<E> pack(const E* B, int K, int N) {
  std::vector<E> out(size_t(K) * N);
  size_t o = 0;
  for (int p = 0; p < N; p += NR)
    for (int k = 0; k < K; k += KG)
      for (int n = 0; n < NR; ++n)
        for (int kk = 0; kk < KG; ++kk) out[o++] = B[size_t(k + kk) * N + p + n];
  return out;
}

template <int MR, int NV, class EA, class EB, class EC, class Micro>
void gemm(const EA* A, const EB* Bp, EC* C, int M, int N, int K, Micro micro, Micro micro1) {
  constexpr int NR = 16 * NV;
  for (int p = 0; p < N; p += NR) {
    const EB* panel = Bp + (size_t)p * K;
    int m = 0;
    for (; m + MR <= M; m += MR) micro(A + (size_t)m * K, K, panel, K, C + (size_t)m * N + p, N);
    for (; m < M; ++m) micro1(A + (size_t)m * K, K, panel, K, C + (size_t)m * N + p, N);
  }
}

template <class F> double median_ms(F f) {
  f();
  std::vector<double> ts;
  for (int r = 0; r < 11; ++r) {
    auto t0 = std::chrono::steady_clock::now();
    f();
    ts.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(ts.begin(), ts.end());
  return ts[5] * 1e3;
}

// oneDNN 2.6 matmul, weights in the layout it asks for (reordered once), plain src/dst.
double onednn_ms(dnnl::memory::data_type src_t, dnnl::memory::data_type wei_t, dnnl::memory::data_type dst_t, int M,
                 int N, int K, std::string* impl) {
  using namespace dnnl;
  static engine eng(engine::kind::cpu, 0);
  static stream s(eng);
  memory::desc a({M, K}, src_t, memory::format_tag::ab), b_any({K, N}, wei_t, memory::format_tag::any),
      b({K, N}, wei_t, memory::format_tag::ab), c({M, N}, dst_t, memory::format_tag::ab);
  matmul::primitive_desc pd(matmul::desc(a, b_any, c), eng);
  *impl = pd.impl_info_str();
  memory A(a, eng), B(b, eng), Bp(pd.weights_desc(), eng), C(c, eng);
  std::memset(A.get_data_handle(), 1, a.get_size());
  std::memset(B.get_data_handle(), 1, b.get_size());
  reorder(B, Bp).execute(s, B, Bp);
  matmul mm(pd);
  return median_ms([&] {
    mm.execute(s, {{DNNL_ARG_SRC, A}, {DNNL_ARG_WEIGHTS, Bp}, {DNNL_ARG_DST, C}});
    s.wait();
  });
}

uint16_t to_bf16(float x) { uint32_t u; std::memcpy(&u, &x, 4); return uint16_t((u + 0x7fff + ((u >> 16) & 1)) >> 16); }
float from_bf16(uint16_t h) { uint32_t u = uint32_t(h) << 16; float x; std::memcpy(&x, &u, 4); return x; }

int main() {
  using dt = dnnl::memory::data_type;
  std::mt19937 g(1);
  std::printf("%-6s %5s %5s %5s | %10s %8s | %10s %8s | %s\n", "type", "M", "N", "K", "hand ms", "GOPS", "oneDNN ms", "GOPS", "oneDNN impl");
  for (auto [M, N, K] : std::vector<std::tuple<int, int, int>>{{128, 2304, 768}, {128, 768, 768}, {128, 3072, 768},
                                                                {128, 768, 3072}, {1024, 3072, 768}, {1024, 768, 3072}}) {
    const double ops = 2.0 * M * N * K;
    std::string impl;
    {  // int8
      std::vector<uint8_t> A(size_t(M) * K);
      std::vector<int8_t> B(size_t(K) * N);
      for (auto& x : A) x = uint8_t(g() % 256);
      for (auto& x : B) x = int8_t(int(g() % 255) - 127);
      auto Bp = pack<int8_t, 48, 4>(B.data(), K, N);
      std::vector<int32_t> C(size_t(M) * N);
      auto run = [&] { gemm<8, 3>(A.data(), Bp.data(), C.data(), M, N, K, micro_i8<8, 3>, micro_i8<1, 3>); };
      const double t = median_ms(run);
      for (int s = 0; s < 50; ++s) {
        const int m = int(g() % M), n = int(g() % N);
        int64_t want = 0;
        for (int k = 0; k < K; ++k) want += int(A[size_t(m) * K + k]) * int(B[size_t(k) * N + n]);
        if (want != C[size_t(m) * N + n]) std::printf("int8 MISMATCH\n");
      }
      const double o = onednn_ms(dt::u8, dt::s8, dt::s32, M, N, K, &impl);
      std::printf("%-6s %5d %5d %5d | %10.3f %8.1f | %10.3f %8.1f | %s\n", "int8", M, N, K, t, ops / t / 1e6, o, ops / o / 1e6, impl.c_str());
    }
    {  // bf16
      std::vector<uint16_t> A(size_t(M) * K), B(size_t(K) * N);
      std::uniform_real_distribution<float> u(-1, 1);
      for (auto& x : A) x = to_bf16(u(g));
      for (auto& x : B) x = to_bf16(u(g));
      auto Bp = pack<uint16_t, 48, 2>(B.data(), K, N);
      std::vector<float> C(size_t(M) * N);
      auto run = [&] { gemm<8, 3>(A.data(), Bp.data(), C.data(), M, N, K, micro_bf16<8, 3>, micro_bf16<1, 3>); };
      const double t = median_ms(run);
      for (int s = 0; s < 50; ++s) {
        const int m = int(g() % M), n = int(g() % N);
        double want = 0;
        for (int k = 0; k < K; ++k) want += double(from_bf16(A[size_t(m) * K + k])) * from_bf16(B[size_t(k) * N + n]);
        if (std::fabs(want - C[size_t(m) * N + n]) > 1e-3 * (1 + std::fabs(want))) std::printf("bf16 MISMATCH\n");
      }
      const double o = onednn_ms(dt::bf16, dt::bf16, dt::f32, M, N, K, &impl);
      std::printf("%-6s %5d %5d %5d | %10.3f %8.1f | %10.3f %8.1f | %s\n", "bf16", M, N, K, t, ops / t / 1e6, o, ops / o / 1e6, impl.c_str());
    }
    {  // fp32
      std::vector<float> A(size_t(M) * K), B(size_t(K) * N);
      std::uniform_real_distribution<float> u(-1, 1);
      for (auto& x : A) x = u(g);
      for (auto& x : B) x = u(g);
      auto Bp = pack<float, 48, 1>(B.data(), K, N);
      std::vector<float> C(size_t(M) * N);
      auto run = [&] { gemm<8, 3>(A.data(), Bp.data(), C.data(), M, N, K, micro_f32<8, 3>, micro_f32<1, 3>); };
      const double t = median_ms(run);
      for (int s = 0; s < 50; ++s) {
        const int m = int(g() % M), n = int(g() % N);
        double want = 0;
        for (int k = 0; k < K; ++k) want += double(A[size_t(m) * K + k]) * B[size_t(k) * N + n];
        if (std::fabs(want - C[size_t(m) * N + n]) > 1e-3 * (1 + std::fabs(want))) std::printf("fp32 MISMATCH\n");
      }
      const double o = onednn_ms(dt::f32, dt::f32, dt::f32, M, N, K, &impl);
      std::printf("%-6s %5d %5d %5d | %10.3f %8.1f | %10.3f %8.1f | %s\n", "fp32", M, N, K, t, ops / t / 1e6, o, ops / o / 1e6, impl.c_str());
    }
  }
}
