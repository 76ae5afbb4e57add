// Per-kernel benchmarks, one per registered CPU entry of the op registry (kernels/registry.h), at
// bert-base shapes: bert_bench --benchmark_filter=Kernel/...
//   Kernel/LayerNorm/<entry>   residual + LayerNorm over tokens x 768           bytes/s (x, residual, y)
//   Kernel/Softmax/<entry>     masked softmax, batch x 12 heads x 128 x 128      bytes/s (read + write)
//   Kernel/GELU/<entry>        erf GELU in place over tokens x 3072 (FFN width)  bytes/s (read + write)
//   Kernel/Embedding/<entry>   word + position + type gather + LayerNorm, 768   bytes/s (3 rows in, 1 out)
//   Kernel/Attention/<entry>   fused attention, batch x seq (1x128, 8x128, 1x384), 12 heads x 64, QKV rows
//   Kernel/Attention/attention_bf16_avx512bf16  precision bf16's attention (CPUs with AVX512_BF16 only)
//   Kernel/Attention/unfused   the engine's unfused path: two oneDNN strided batched matmuls around
//                              softmax_masked (as engine/src/session.cc runs it)
//   Kernel/Linear/<fp32|bf16|int8>  one encoder linear layer as the engine runs it (packed weights; bf16 /
//                              int8 including the activations' conversion / quantisation), bert-base
//                              shapes N x K = 2304x768 (QKV), 768x768, 3072x768 (FFN in, GELU), 768x3072,
//                              M tokens: GFLOP/s and pct_ceiling against oneDNN's per-core peak on Zen 4
//                              (fp32 112, bf16 222, int8 454 GFLOP/s per thread) and the oneDNN kernel
// Attention reports FLOP/s counting 4 * batch * heads * seq^2 * head_dim (the two matmuls) for every
// entry, so fused and unfused rates compare directly. Each case runs with 1 OpenMP thread and with all
// of them; the label names the entry, its ISA and the threads. Entries the CPU cannot run are skipped
// with an error naming the ISA they need. Registered at static-initialisation time; bert_bench.cc's
// main() runs them.
#include <benchmark/benchmark.h>
#include <omp.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "kernels/cpu/dispatch.h"
#include "kernels/gemm.h"
#include "kernels/registry.h"

namespace {

using namespace bert::kernels;

constexpr int64_t kHidden = 768, kFfn = 3072, kHeads = 12, kHeadDim = 64, kSeq = 128, kVocab = 30522;

std::vector<float> randoms(size_t n, uint32_t seed, float lo = -1.f, float hi = 1.f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> d(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

// Sets the OpenMP thread count for one benchmark and restores it after.
struct ThreadScope {
  int saved;
  explicit ThreadScope(int64_t n) : saved(omp_get_max_threads()) { omp_set_num_threads(static_cast<int>(n)); }
  ~ThreadScope() { omp_set_num_threads(saved); }
};

bool runnable(const KernelEntry& e, benchmark::State& state) {
  if (static_cast<int>(e.isa) <= static_cast<int>(detect_cpu_isa())) return true;
  state.SkipWithError((std::string(e.name) + " needs " + cpu_isa_name(e.isa) + "; this CPU (BERT_CPU_ISA) allows " +
                       cpu_isa_name(detect_cpu_isa()))
                          .c_str());
  return false;
}

void label(benchmark::State& state, const char* name, CpuIsa isa, int64_t threads) {
  state.SetLabel(std::string(name) + " isa=" + cpu_isa_name(isa) + " threads=" + std::to_string(threads));
}

void set_bytes(benchmark::State& state, double bytes_per_iter) {
  state.counters["bytes_per_second"] =
      benchmark::Counter(bytes_per_iter * static_cast<double>(state.iterations()), benchmark::Counter::kIsRate,
                         benchmark::Counter::kIs1024);
}

void set_flops(benchmark::State& state, double flops_per_iter) {
  state.counters["FLOP/s"] = benchmark::Counter(flops_per_iter * static_cast<double>(state.iterations()),
                                                benchmark::Counter::kIsRate);
}

void bm_layernorm(benchmark::State& state, const KernelEntry* e) {
  if (!runnable(*e, state)) return;
  const int64_t tokens = state.range(0);
  ThreadScope threads(state.range(1));
  const size_t n = static_cast<size_t>(tokens * kHidden);
  const auto x = randoms(n, 1), r = randoms(n, 2), g = randoms(kHidden, 3, 0.5f, 1.5f), b = randoms(kHidden, 4);
  std::vector<float> y(n);
  const LayerNormArgs a{x.data(), r.data(), g.data(), b.data(), y.data(), tokens, kHidden};
  const auto fn = e->fn_as<OpTraits<LayerNormArgs>::Fn>();
  for (auto _ : state) {
    fn(a);
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  set_bytes(state, 3.0 * double(n) * sizeof(float));
  label(state, e->name, e->isa, state.range(1));
}

void bm_softmax(benchmark::State& state, const KernelEntry* e) {
  if (!runnable(*e, state)) return;
  const int64_t batch = state.range(0);
  ThreadScope threads(state.range(1));
  const size_t n = static_cast<size_t>(batch * kHeads * kSeq * kSeq);
  std::vector<float> s = randoms(n, 5, -8.f, 8.f);
  std::vector<int32_t> mask(static_cast<size_t>(batch * kSeq), 1);
  for (int64_t b = 0; b < batch; ++b)  // padded tails, as in a real batch
    for (int64_t j = kSeq - 8 * (b % 4); j < kSeq; ++j) mask[static_cast<size_t>(b * kSeq + j)] = 0;
  const SoftmaxMaskedArgs a{s.data(), mask.data(), batch, kHeads, kSeq, kSeq, 0.125f};
  const auto fn = e->fn_as<OpTraits<SoftmaxMaskedArgs>::Fn>();
  for (auto _ : state) {
    fn(a);  // in place: later iterations normalise probabilities, the same work
    benchmark::DoNotOptimize(s.data());
    benchmark::ClobberMemory();
  }
  set_bytes(state, 2.0 * double(n) * sizeof(float));
  label(state, e->name, e->isa, state.range(1));
}

void bm_gelu(benchmark::State& state, const KernelEntry* e) {
  if (!runnable(*e, state)) return;
  const int64_t tokens = state.range(0);
  ThreadScope threads(state.range(1));
  const size_t n = static_cast<size_t>(tokens * kFfn);
  const auto x0 = randoms(n, 6, -4.f, 4.f);
  std::vector<float> x = x0;
  const ActivationArgs a{x.data(), static_cast<int64_t>(n), Activation::kGeluErf};
  const auto fn = e->fn_as<OpTraits<ActivationArgs>::Fn>();
  for (auto _ : state) {
    state.PauseTiming();
    std::memcpy(x.data(), x0.data(), n * sizeof(float));  // same inputs every time
    state.ResumeTiming();
    fn(a);
    benchmark::DoNotOptimize(x.data());
    benchmark::ClobberMemory();
  }
  set_bytes(state, 2.0 * double(n) * sizeof(float));
  label(state, e->name, e->isa, state.range(1));
}

void bm_embedding(benchmark::State& state, const KernelEntry* e) {
  if (!runnable(*e, state)) return;
  const int64_t tokens = state.range(0);
  ThreadScope threads(state.range(1));
  static const std::vector<float> word = randoms(static_cast<size_t>(kVocab * kHidden), 7);
  const auto pos = randoms(static_cast<size_t>(512 * kHidden), 8), type = randoms(2 * kHidden, 9);
  const auto g = randoms(kHidden, 10, 0.5f, 1.5f), b = randoms(kHidden, 11);
  std::vector<int32_t> ids(static_cast<size_t>(tokens)), positions(ids.size()), types(ids.size(), 0);
  std::mt19937 rng(12);
  for (int64_t t = 0; t < tokens; ++t) {
    ids[static_cast<size_t>(t)] = static_cast<int32_t>(rng() % kVocab);
    positions[static_cast<size_t>(t)] = static_cast<int32_t>(t % kSeq);
  }
  std::vector<float> out(static_cast<size_t>(tokens * kHidden));
  const EmbedArgs a{ids.data(), positions.data(), types.data(), word.data(), pos.data(), type.data(),
                    g.data(),   b.data(),         out.data(),   tokens,      kHidden};
  const auto fn = e->fn_as<OpTraits<EmbedArgs>::Fn>();
  for (auto _ : state) {
    fn(a);
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  set_bytes(state, 4.0 * double(tokens * kHidden) * sizeof(float));
  label(state, e->name, e->isa, state.range(1));
}

struct AttentionData {
  int64_t batch, seq;
  std::vector<float> qkv, out;
  std::vector<int32_t> mask;
  AttentionData(int64_t b, int64_t S)
      : batch(b),
        seq(S),
        qkv(randoms(static_cast<size_t>(b * S * 3 * kHidden), 13, -2.f, 2.f)),
        out(static_cast<size_t>(b * S * kHidden)),
        mask(static_cast<size_t>(b * S), 1) {
    for (int64_t s = 0; s < b; ++s)
      for (int64_t j = S - 8 * (s % 4); j < S; ++j) mask[static_cast<size_t>(s * S + j)] = 0;
  }
  double flops() const { return 4.0 * double(batch) * kHeads * seq * seq * kHeadDim; }
};

void bm_attention(benchmark::State& state, const KernelEntry* e) {
  if (!runnable(*e, state)) return;
  ThreadScope threads(state.range(2));
  AttentionData d(state.range(0), state.range(1));
  AttentionArgs a;
  a.q = d.qkv.data(), a.k = d.qkv.data() + kHidden, a.v = d.qkv.data() + 2 * kHidden, a.ld = 3 * kHidden;
  a.key_mask = d.mask.data(), a.out = d.out.data();
  a.batch = d.batch, a.seq = d.seq, a.heads = kHeads, a.head_dim = kHeadDim, a.scale = 0.125f;
  if (bert::Status st = check(a); !st.ok()) return state.SkipWithError(st.to_string().c_str());
  const auto fn = e->fn_as<OpTraits<AttentionArgs>::Fn>();
  for (auto _ : state) {
    fn(a);
    benchmark::DoNotOptimize(d.out.data());
    benchmark::ClobberMemory();
  }
  set_flops(state, d.flops());
  label(state, e->name, e->isa, state.range(2));
}

// The engine's unfused attention (engine/src/session.cc): scores = Q K^T (oneDNN), softmax_masked
// with the scale folded in (the dispatch table's kernel), context = P V (oneDNN).
void bm_attention_unfused(benchmark::State& state) {
  ThreadScope threads(state.range(2));
  AttentionData d(state.range(0), state.range(1));
  const int64_t B = d.batch, S = d.seq, nh = kHeads, dh = kHeadDim, H = kHidden, ld = 3 * H;
  std::vector<float> scores(static_cast<size_t>(B * nh * S * S));
  GemmPlanner gemm;
  BatchedMatmulArgs qk;
  qk.a = d.qkv.data(), qk.b = d.qkv.data() + H, qk.c = scores.data();
  qk.batch0 = B, qk.batch1 = nh, qk.M = S, qk.N = S, qk.K = dh;
  const int64_t qs[4] = {S * ld, dh, ld, 1}, ks[4] = {S * ld, dh, 1, ld}, ss[4] = {nh * S * S, S * S, S, 1};
  std::memcpy(qk.a_strides, qs, sizeof qs), std::memcpy(qk.b_strides, ks, sizeof ks);
  std::memcpy(qk.c_strides, ss, sizeof ss);
  BatchedMatmulArgs pv;
  pv.a = scores.data(), pv.b = d.qkv.data() + 2 * H, pv.c = d.out.data();
  pv.batch0 = B, pv.batch1 = nh, pv.M = S, pv.N = dh, pv.K = S;
  const int64_t vs[4] = {S * ld, dh, ld, 1}, cs[4] = {S * H, dh, H, 1};
  std::memcpy(pv.a_strides, ss, sizeof ss), std::memcpy(pv.b_strides, vs, sizeof vs);
  std::memcpy(pv.c_strides, cs, sizeof cs);
  const CpuKernels& k = cpu_kernels();
  const SoftmaxMaskedArgs sm{scores.data(), d.mask.data(), B, nh, S, S, 0.125f};
  if (!gemm.batched_matmul(qk) || !gemm.batched_matmul(pv)) return state.SkipWithError("oneDNN could not plan");
  for (auto _ : state) {
    gemm.batched_matmul(qk);
    k.softmax_masked(sm);
    gemm.batched_matmul(pv);
    benchmark::DoNotOptimize(d.out.data());
    benchmark::ClobberMemory();
  }
  set_flops(state, d.flops());
  state.SetLabel(std::string("unfused: oneDNN ") + gemm.last_impl() + " x2 + softmax isa=" + cpu_isa_name(k.isa) +
                 " threads=" + std::to_string(state.range(2)));
}

// One linear layer as the engine runs it: args (N, K, tokens, threads); the entry's weight type.
void bm_linear(benchmark::State& state, WeightType type) {
  const int64_t N = state.range(0), K = state.range(1), M = state.range(2);
  omp_set_num_threads(static_cast<int>(state.range(3)));
  auto x = randoms(size_t(M * K), 1), w = randoms(size_t(N * K), 2, -0.05f, 0.05f), b = randoms(size_t(N), 3);
  std::vector<float> y(size_t(M * N));
  PackedWeightsPtr packed;
  if (type == WeightType::kF32) {
    packed = pack_linear_weights(w.data(), N, K);
  } else {
    auto p = pack_linear_weights_lowp(w.data(), N, K, type);
    if (!p.ok()) return state.SkipWithError(p.status().to_string().c_str());
    packed = std::move(*p);
  }
  GemmPlanner planner;
  const Activation act = N == kFfn ? Activation::kGeluErf : Activation::kIdentity;
  LinearArgs a{x.data(), w.data(), b.data(), y.data(), M, N, K, 0, 0, act, packed.get()};
  if (!planner.linear(a)) return state.SkipWithError("oneDNN could not plan the layer");
  for (auto _ : state) benchmark::DoNotOptimize(planner.linear(a));
  const double flops = 2.0 * double(M) * double(N) * double(K), ceiling = type == WeightType::kF32 ? 112e9
                                                                         : type == WeightType::kBF16 ? 222e9 : 454e9;
  state.counters["GFLOP/s"] = benchmark::Counter(flops / 1e9, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["pct_ceiling"] = benchmark::Counter(100.0 * flops / (ceiling * double(state.range(3))),
                                                     benchmark::Counter::kIsIterationInvariantRate);
  state.SetLabel(std::string(weight_type_name(type)) + " " + planner.last_impl() + (planner.last_packed() ? " packed" : " plain"));
}

void apply_args(benchmark::internal::Benchmark* b, const char* first, std::initializer_list<int64_t> sizes) {
  const int procs = omp_get_num_procs();
  b->ArgNames({first, "threads"});
  for (int64_t s : sizes) {
    b->Args({s, 1});
    if (procs > 1) b->Args({s, procs});
  }
  b->UseRealTime()->Unit(benchmark::kMicrosecond);
}

// Attention: (batch, seq) at 1x128, 8x128 and 1x384, on 1 thread and on all.
void apply_attention_args(benchmark::internal::Benchmark* b) {
  const int procs = omp_get_num_procs();
  b->ArgNames({"batch", "seq", "threads"});
  for (auto [batch, seq] : {std::pair<int64_t, int64_t>{1, kSeq}, {8, kSeq}, {1, 3 * kSeq}}) {
    b->Args({batch, seq, 1});
    if (procs > 1) b->Args({batch, seq, procs});
  }
  b->UseRealTime()->Unit(benchmark::kMicrosecond);
}

const bool registered = [] {
  for (const KernelEntry& e : kernel_registry()) {
    if (e.device == Device::kCuda) continue;
    const std::string name = e.name;
    switch (e.op) {
      case Op::kLayerNorm:
        apply_args(benchmark::RegisterBenchmark(("Kernel/LayerNorm/" + name).c_str(), bm_layernorm, &e), "tokens",
                   {kSeq, 8 * kSeq});
        break;
      case Op::kSoftmaxMasked:
        apply_args(benchmark::RegisterBenchmark(("Kernel/Softmax/" + name).c_str(), bm_softmax, &e), "batch", {1, 8});
        break;
      case Op::kActivation:
        apply_args(benchmark::RegisterBenchmark(("Kernel/GELU/" + name).c_str(), bm_gelu, &e), "tokens",
                   {kSeq, 8 * kSeq});
        break;
      case Op::kEmbed:
        apply_args(benchmark::RegisterBenchmark(("Kernel/Embedding/" + name).c_str(), bm_embedding, &e), "tokens",
                   {kSeq, 8 * kSeq});
        break;
      case Op::kAttention:
        if (e.device == Device::kRef) break;  // the double-precision spec: ~1 s per batch-8 call
        apply_attention_args(benchmark::RegisterBenchmark(("Kernel/Attention/" + name).c_str(), bm_attention, &e));
        break;
      default:
        break;
    }
  }
  apply_attention_args(benchmark::RegisterBenchmark("Kernel/Attention/unfused", bm_attention_unfused));
  // Precision bf16's attention (bf16 products; outside the registry), where the CPU has AVX512_BF16.
  static const KernelEntry bf16_attention{"attention_bf16_avx512bf16", Op::kAttention, Device::kCpu,
                                          bert::DType::kBF16, CpuIsa::kAvx512, "",
                                          reinterpret_cast<AnyKernelFn>(attention_bf16_avx512bf16), nullptr};
  if (attention_bf16_supported())
    apply_attention_args(
        benchmark::RegisterBenchmark("Kernel/Attention/attention_bf16_avx512bf16", bm_attention, &bf16_attention));
  for (WeightType type : {WeightType::kF32, WeightType::kBF16, WeightType::kInt8}) {
    auto* b = benchmark::RegisterBenchmark((std::string("Kernel/Linear/") + weight_type_name(type)).c_str(), bm_linear, type);
    b->ArgNames({"N", "K", "tokens", "threads"});
    for (auto [N, K] : {std::pair<int64_t, int64_t>{3 * kHidden, kHidden}, {kHidden, kHidden}, {kFfn, kHidden}, {kHidden, kFfn}})
      for (int64_t M : {int64_t{128}, int64_t{1024}}) {
        b->Args({N, K, M, 1});
        if (omp_get_num_procs() > 1) b->Args({N, K, M, omp_get_num_procs()});
      }
    b->UseRealTime()->Unit(benchmark::kMicrosecond);
  }
  return true;
}();

}  // namespace
