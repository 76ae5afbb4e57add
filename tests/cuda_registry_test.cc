// The op registry's CUDA rows (kernels/cuda/registry_cuda.cc): without a GPU, that every op the CUDA
// backend resolves has a kCuda f32 entry of the right shape and that host lookups refuse them; with a
// GPU, every kCuda entry of the registry run through its CudaFn against its reference
// (kernels::reference_of) at awkward sizes on random non-zero inputs, with per-op tolerances.
// Built only in CUDA builds; the GPU tests skip with a message when no device is present.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/train_kernels.h"
#include "kernels/registry.h"
#include "tests/cuda_test_util.h"
#include "tests/test_util.h"

namespace bert::kernels {
namespace {

using test::DeviceBuffer;
using test::max_abs;
using test::random_floats;
using test::relative_l2;

// Per-op tolerances (relative L2 over the output, fp32 kernels against double-accumulating references).
constexpr double kRowOpTol = 1e-5;      // LayerNorm, softmax, embedding, their backwards, column sums
constexpr double kActivationTol = 1e-5; // element-wise activations and their derivatives
constexpr double kAttentionTol = 1e-5;  // fused attention (fp32 FMAs, expf)
constexpr double kDropoutTol = 1e-6;    // documented bit-identical to the CPU; mask compared exactly
constexpr double kLossSumTol = 1e-5;    // loss sums, relative (absolute below 1)

std::string last_error() { return cuda::cuda_last_error(); }

std::vector<float> minus(const std::vector<float>& a, const std::vector<float>& b) {
  std::vector<float> d(a.size());
  for (size_t i = 0; i < a.size(); ++i) d[i] = a[i] - b[i];
  return d;
}

void expect_close(const std::vector<float>& got, const std::vector<float>& want, double tol, const char* what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  EXPECT_LE(relative_l2(got.data(), want.data(), want.size()), tol) << what;
  EXPECT_GT(max_abs(want.data(), want.size()), 0.0) << what << ": the reference is all zero (a useless case)";
}

template <class Args>
typename OpTraits<Args>::Fn host_fn(const KernelEntry& ref) {
  return ref.template fn_as<typename OpTraits<Args>::Fn>();
}

std::vector<int32_t> random_ints(size_t n, int32_t below, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<int32_t> v(n);
  for (auto& x : v) x = static_cast<int32_t>(rng() % static_cast<uint32_t>(below));
  return v;
}

// ---- without a GPU: the registry has what the backend needs -------------------------------------------

TEST(CudaRegistry, EveryBackendOpHasAnF32Entry) {
  const std::span<const Op> ops = cuda_backend_ops();
  ASSERT_FALSE(ops.empty());
  std::set<AnyKernelFn> resolved;
  for (Op op : ops) {
    SCOPED_TRACE(op_name(op));
    auto e = resolve_cuda_kernel(op, DType::kF32);
    ASSERT_TRUE(e.ok()) << e.status().to_string();
    const KernelEntry& k = **e;
    EXPECT_EQ(k.device, Device::kCuda);
    EXPECT_EQ(k.op, op);
    EXPECT_EQ(k.dtype, DType::kF32);
    EXPECT_EQ(k.isa, CpuIsa::kScalar);
    EXPECT_NE(k.fn, nullptr);
    const std::string prefix = std::string(op_name(op)) + "_f32_cuda";
    EXPECT_EQ(std::string(k.name).rfind(prefix, 0), 0u) << k.name;
    const KernelEntry* ref = reference_of(k);
    ASSERT_NE(ref, nullptr) << k.name << " has no reference to be tested against";
    EXPECT_EQ(ref->device, Device::kRef);
    EXPECT_EQ(find_kernel(k.name), &k);
    resolved.insert(k.fn);
  }
  EXPECT_EQ(resolved.size(), ops.size()) << "two ops resolved to one function";

  // The backend's table: every field is the registry's pick for its op.
  auto table = resolve_cuda_kernels(DType::kF32);
  ASSERT_TRUE(table.ok()) << table.status().to_string();
  const CudaKernels& k = *table;
  EXPECT_EQ(k.dtype, DType::kF32);
  const std::map<Op, AnyKernelFn> fields = {
      {Op::kLayerNorm, reinterpret_cast<AnyKernelFn>(k.layernorm)},
      {Op::kSoftmaxMasked, reinterpret_cast<AnyKernelFn>(k.softmax_masked)},
      {Op::kActivation, reinterpret_cast<AnyKernelFn>(k.activation)},
      {Op::kEmbed, reinterpret_cast<AnyKernelFn>(k.embed)},
      {Op::kAttention, reinterpret_cast<AnyKernelFn>(k.attention)},
      {Op::kLayerNormBackward, reinterpret_cast<AnyKernelFn>(k.layernorm_backward)},
      {Op::kSoftmaxBackward, reinterpret_cast<AnyKernelFn>(k.softmax_backward)},
      {Op::kActivationBackward, reinterpret_cast<AnyKernelFn>(k.activation_backward)},
      {Op::kEmbedBackward, reinterpret_cast<AnyKernelFn>(k.embed_backward)},
      {Op::kColumnSum, reinterpret_cast<AnyKernelFn>(k.column_sum)},
      {Op::kDropout, reinterpret_cast<AnyKernelFn>(k.dropout)},
      {Op::kCrossEntropy, reinterpret_cast<AnyKernelFn>(k.cross_entropy)},
      {Op::kBceWithLogits, reinterpret_cast<AnyKernelFn>(k.bce_with_logits)},
      {Op::kMse, reinterpret_cast<AnyKernelFn>(k.mse)},
  };
  EXPECT_EQ(fields.size(), ops.size()) << "cuda_backend_ops() and CudaKernels list other ops";
  for (const auto& [op, fn] : fields) {
    SCOPED_TRACE(op_name(op));
    EXPECT_NE(std::find(ops.begin(), ops.end(), op), ops.end()) << "a CudaKernels field not in cuda_backend_ops()";
    auto e = resolve_cuda_kernel(op, DType::kF32);
    ASSERT_TRUE(e.ok());
    EXPECT_EQ(fn, (*e)->fn);
  }
}

TEST(CudaRegistry, MissingDtypeIsANamedError) {
  auto table = resolve_cuda_kernels(DType::kBF16);
  ASSERT_FALSE(table.ok());
  EXPECT_EQ(table.status().code(), ErrorCode::kNotFound);
  const std::string& m = table.status().message();
  for (const char* part : {"'layernorm'", "'cuda'", "'bf16'", "layernorm_f32_cuda"})
    EXPECT_NE(m.find(part), std::string::npos) << m << " lacks " << part;
  // Pooling has no CUDA kernel (the backend pools on the host).
  auto pool = resolve_cuda_kernel(Op::kPoolTokens, DType::kF32);
  ASSERT_FALSE(pool.ok());
  EXPECT_NE(pool.status().message().find("'pool_tokens'"), std::string::npos) << pool.status().message();
}

TEST(CudaRegistry, HostLookupsRefuseCudaEntries) {
  // A CUDA entry is found by the generic lookup ...
  auto e = resolve_kernel(Op::kLayerNorm, Device::kCuda, DType::kF32, CpuIsa::kAvx512);
  ASSERT_TRUE(e.ok()) << e.status().to_string();
  EXPECT_STREQ((*e)->name, "layernorm_f32_cuda");
  // ... but never handed out as a host function.
  auto host = resolve<LayerNormArgs>(Device::kCuda, DType::kF32, CpuIsa::kAvx512);
  ASSERT_FALSE(host.ok());
  EXPECT_EQ(host.status().code(), ErrorCode::kNotFound);
  EXPECT_NE(host.status().message().find("'cuda'"), std::string::npos);
  std::vector<float> x = {1, 2, 3, 4}, g(4, 1.f), b(4, 0.f), y(4, 0.f);
  EXPECT_EQ(checked_call(LayerNormArgs{x.data(), nullptr, g.data(), b.data(), y.data(), 1, 4}, Device::kCuda).code(),
            ErrorCode::kNotFound);
  EXPECT_EQ(y[0], 0.f) << "checked_call ran something for device cuda";
  // The typed accessor checks device and op.
  const KernelEntry* cuda_ln = find_kernel("layernorm_f32_cuda");
  const KernelEntry* cpu_ln = find_kernel("layernorm_f32_ref");
  ASSERT_NE(cuda_ln, nullptr);
  ASSERT_NE(cpu_ln, nullptr);
  EXPECT_NE(cuda_fn<LayerNormArgs>(*cuda_ln), nullptr);
  EXPECT_EQ(cuda_fn<LayerNormArgs>(*cpu_ln), nullptr);
  EXPECT_EQ(cuda_fn<SoftmaxMaskedArgs>(*cuda_ln), nullptr);
  auto typed = resolve_cuda<LayerNormArgs>(DType::kF32);
  ASSERT_TRUE(typed.ok());
  EXPECT_EQ(reinterpret_cast<AnyKernelFn>(*typed), cuda_ln->fn);
  // The attention entry says which head widths it takes.
  const KernelEntry* att = find_kernel("attention_f32_cuda_flash");
  ASSERT_NE(att, nullptr);
  ASSERT_NE(att->supports, nullptr);
  AttentionArgs a;
  a.batch = 2, a.seq = 5, a.heads = 3, a.head_dim = 128;
  EXPECT_TRUE(att->supports(&a));
  a.head_dim = 129;
  EXPECT_FALSE(att->supports(&a));
  EXPECT_FALSE(resolve_cuda_kernel(Op::kAttention, DType::kF32, &a).ok());
  // Host entries are unchanged by the CUDA rows: the CPU picks never land on a CUDA entry.
  for (Op op : cuda_backend_ops()) {
    auto cpu = resolve_kernel(op, Device::kCpu, DType::kF32, CpuIsa::kAvx512);
    ASSERT_TRUE(cpu.ok()) << op_name(op);
    EXPECT_NE((*cpu)->device, Device::kCuda) << (*cpu)->name;
  }
}

// ---- with a GPU: every kCuda entry against its reference ---------------------------------------------

void check_layernorm(const KernelEntry& e, const KernelEntry& ref) {
  const auto fn = cuda_fn<LayerNormArgs>(e);
  for (bool residual : {false, true})
    for (int64_t rows : {1, 7, 33})
      for (int64_t cols : {2, 31, 257, 1031}) {
        SCOPED_TRACE(::testing::Message() << rows << "x" << cols << (residual ? " +residual" : ""));
        const size_t n = static_cast<size_t>(rows * cols);
        const auto x = random_floats(n, 1, -3, 3), r = random_floats(n, 2);
        const auto g = random_floats(static_cast<size_t>(cols), 3, 0.5f, 1.5f);
        const auto b = random_floats(static_cast<size_t>(cols), 4);
        std::vector<float> want(n);
        host_fn<LayerNormArgs>(ref)(
            {x.data(), residual ? r.data() : nullptr, g.data(), b.data(), want.data(), rows, cols, 1e-12f});
        DeviceBuffer<float> dx(x), dr(r), dg(g), db(b), dy(n);
        ASSERT_TRUE(fn({dx.p, residual ? dr.p : nullptr, dg.p, db.p, dy.p, rows, cols, 1e-12f}, nullptr))
            << last_error();
        expect_close(dy.host(), want, kRowOpTol, "y");
      }
}

std::vector<int32_t> key_mask(int64_t batch, int64_t k_len, uint32_t seed) {
  // Sequence 0: about a quarter of the keys masked (at least one kept); the last sequence: all masked
  // (a uniform row) when there are two or more.
  std::vector<int32_t> mask(static_cast<size_t>(batch * k_len), 1);
  std::mt19937 rng(seed);
  for (int64_t k = 1; k < k_len; ++k) mask[static_cast<size_t>(k)] = rng() % 4 != 0;
  if (batch > 1)
    std::fill(mask.begin() + static_cast<std::ptrdiff_t>((batch - 1) * k_len), mask.end(), 0);
  return mask;
}

void check_softmax_masked(const KernelEntry& e, const KernelEntry& ref) {
  const auto fn = cuda_fn<SoftmaxMaskedArgs>(e);
  const int64_t B = 3, heads = 2, q_len = 5;
  for (int64_t k_len : {1, 33, 257, 1031}) {
    SCOPED_TRACE(::testing::Message() << "k_len " << k_len);
    const size_t n = static_cast<size_t>(B * heads * q_len * k_len);
    const auto s = random_floats(n, 5, -4, 4);
    const auto mask = key_mask(B, k_len, 6);
    auto want = s;
    host_fn<SoftmaxMaskedArgs>(ref)({want.data(), mask.data(), B, heads, q_len, k_len, 0.125f});
    DeviceBuffer<float> ds(s);
    DeviceBuffer<int32_t> dm(mask);
    ASSERT_TRUE(fn({ds.p, dm.p, B, heads, q_len, k_len, 0.125f}, nullptr)) << last_error();
    expect_close(ds.host(), want, kRowOpTol, "probabilities");
  }
}

const Activation kKinds[] = {Activation::kGeluErf, Activation::kGeluTanh, Activation::kGeluQuick, Activation::kRelu,
                             Activation::kTanh};

void check_activation(const KernelEntry& e, const KernelEntry& ref) {
  const auto fn = cuda_fn<ActivationArgs>(e);
  for (Activation kind : kKinds)
    for (int64_t n : {3, 33, 1031, 100003}) {
      SCOPED_TRACE(::testing::Message() << activation_name(kind) << " n=" << n);
      auto x = random_floats(static_cast<size_t>(n), 7, -8, 8);
      x[0] = 2.5f;  // one positive input: no case is all zero after ReLU
      auto want = x;
      host_fn<ActivationArgs>(ref)({want.data(), n, kind});
      DeviceBuffer<float> dx(x);
      ASSERT_TRUE(fn({dx.p, n, kind}, nullptr)) << last_error();
      expect_close(dx.host(), want, kActivationTol, "y");
    }
}

void check_embed(const KernelEntry& e, const KernelEntry& ref) {
  const auto fn = cuda_fn<EmbedArgs>(e);
  const int64_t V = 50, P = 64, T = 2;
  for (bool layernorm : {true, false})
    for (int64_t tokens : {1, 37, 130})
      for (int64_t width : {3, 100, 769}) {
        SCOPED_TRACE(::testing::Message() << tokens << " tokens, width " << width << (layernorm ? " +LN" : ""));
        const auto word = random_floats(static_cast<size_t>(V * width), 8);
        const auto pos = random_floats(static_cast<size_t>(P * width), 9);
        const auto type = random_floats(static_cast<size_t>(T * width), 10);
        const auto g = random_floats(static_cast<size_t>(width), 11, 0.5f, 1.5f);
        const auto b = random_floats(static_cast<size_t>(width), 12);
        const auto ids = random_ints(static_cast<size_t>(tokens), V, 13);
        const auto positions = random_ints(static_cast<size_t>(tokens), P, 14);
        const auto types = random_ints(static_cast<size_t>(tokens), T, 15);
        std::vector<float> want(static_cast<size_t>(tokens * width));
        host_fn<EmbedArgs>(ref)({ids.data(), positions.data(), types.data(), word.data(), pos.data(), type.data(),
                                 layernorm ? g.data() : nullptr, layernorm ? b.data() : nullptr, want.data(), tokens,
                                 width, 1e-12f});
        DeviceBuffer<int32_t> di(ids), dp(positions), dt(types);
        DeviceBuffer<float> dw(word), dpos(pos), dtype(type), dg(g), dbeta(b), dout(want.size());
        ASSERT_TRUE(fn({di.p, dp.p, dt.p, dw.p, dpos.p, dtype.p, layernorm ? dg.p : nullptr,
                        layernorm ? dbeta.p : nullptr, dout.p, tokens, width, 1e-12f},
                       nullptr))
            << last_error();
        expect_close(dout.host(), want, kRowOpTol, "embeddings");
      }
}

void check_attention(const KernelEntry& e, const KernelEntry& ref) {
  const auto fn = cuda_fn<AttentionArgs>(e);
  const int64_t B = 2, heads = 3;
  for (int64_t head_dim : {7, 64, 128})
    for (int64_t seq : {1, 17, 130}) {
      SCOPED_TRACE(::testing::Message() << "head_dim " << head_dim << " seq " << seq);
      const int64_t H = heads * head_dim, ld = 3 * H, ldo = H + 5;  // fused QKV rows; padded output rows
      const auto qkv = random_floats(static_cast<size_t>(B * seq * ld), 16, -2, 2);
      const auto mask = key_mask(B, seq, 17);
      const std::vector<float> out0(static_cast<size_t>(B * seq * ldo), 0.f);
      AttentionArgs a;
      a.q = qkv.data(), a.k = qkv.data() + H, a.v = qkv.data() + 2 * H, a.ld = ld;
      a.key_mask = mask.data(), a.batch = B, a.seq = seq, a.heads = heads, a.head_dim = head_dim;
      a.ldo = ldo, a.scale = 1.f / std::sqrt(static_cast<float>(head_dim));
      if (e.supports) {
        ASSERT_TRUE(e.supports(&a));
      }
      auto want = out0;
      a.out = want.data();
      host_fn<AttentionArgs>(ref)(a);
      DeviceBuffer<float> dqkv(qkv), dout(out0);
      DeviceBuffer<int32_t> dm(mask);
      AttentionArgs d = a;
      d.q = dqkv.p, d.k = dqkv.p + H, d.v = dqkv.p + 2 * H, d.key_mask = dm.p, d.out = dout.p;
      ASSERT_TRUE(fn(d, nullptr)) << last_error();
      expect_close(dout.host(), want, kAttentionTol, "context (padding columns stay 0)");
    }
}

void check_layernorm_backward(const KernelEntry& e, const KernelEntry& ref) {
  const auto fn = cuda_fn<LayerNormBackwardArgs>(e);
  for (int64_t rows : {1, 5, 33})
    for (int64_t cols : {3, 31, 257, 1031}) {
      SCOPED_TRACE(::testing::Message() << rows << "x" << cols);
      const size_t n = static_cast<size_t>(rows * cols);
      const auto s = random_floats(n, 18, -3, 3), dy = random_floats(n, 19);
      const auto gamma = random_floats(static_cast<size_t>(cols), 20, 0.5f, 1.5f);
      const auto dgamma0 = random_floats(static_cast<size_t>(cols), 21);
      const auto dbeta0 = random_floats(static_cast<size_t>(cols), 22);
      std::vector<float> ds_want(n), dgamma_want = dgamma0, dbeta_want = dbeta0;
      host_fn<LayerNormBackwardArgs>(ref)({s.data(), gamma.data(), dy.data(), ds_want.data(), dgamma_want.data(),
                                           dbeta_want.data(), rows, cols, 1e-12f});
      DeviceBuffer<float> d_s(s), d_gamma(gamma), d_dy(dy), d_ds(n), d_dgamma(dgamma0), d_dbeta(dbeta0);
      ASSERT_TRUE(fn({d_s.p, d_gamma.p, d_dy.p, d_ds.p, d_dgamma.p, d_dbeta.p, rows, cols, 1e-12f}, nullptr))
          << last_error();
      expect_close(d_ds.host(), ds_want, kRowOpTol, "ds");
      expect_close(minus(d_dgamma.host(), dgamma0), minus(dgamma_want, dgamma0), kRowOpTol, "dgamma increment");
      expect_close(minus(d_dbeta.host(), dbeta0), minus(dbeta_want, dbeta0), kRowOpTol, "dbeta increment");
    }
}

void check_softmax_backward(const KernelEntry& e, const KernelEntry& ref) {
  const auto fn = cuda_fn<SoftmaxBackwardArgs>(e);
  const KernelEntry* softmax = find_kernel("softmax_masked_f32_ref");
  ASSERT_NE(softmax, nullptr);
  const int64_t B = 2, heads = 3, q_len = 5;
  for (int64_t k_len : {2, 33, 257, 1031}) {
    SCOPED_TRACE(::testing::Message() << "k_len " << k_len);
    const size_t n = static_cast<size_t>(B * heads * q_len * k_len);
    auto probs = random_floats(n, 23, -4, 4);
    const auto mask = key_mask(B, k_len, 24);
    host_fn<SoftmaxMaskedArgs>(*softmax)({probs.data(), mask.data(), B, heads, q_len, k_len, 1.f});
    const auto grad = random_floats(n, 25);
    auto want = grad;
    host_fn<SoftmaxBackwardArgs>(ref)({probs.data(), want.data(), B, heads, q_len, k_len, 0.125f});
    DeviceBuffer<float> d_probs(probs), d_grad(grad);
    ASSERT_TRUE(fn({d_probs.p, d_grad.p, B, heads, q_len, k_len, 0.125f}, nullptr)) << last_error();
    expect_close(d_grad.host(), want, kRowOpTol, "dS");
  }
}

void check_activation_backward(const KernelEntry& e, const KernelEntry& ref) {
  const auto fn = cuda_fn<ActivationBackwardArgs>(e);
  for (Activation kind : {Activation::kIdentity, Activation::kGeluErf, Activation::kGeluTanh, Activation::kGeluQuick,
                          Activation::kRelu, Activation::kTanh})
    for (int64_t n : {3, 33, 1031, 100003}) {
      SCOPED_TRACE(::testing::Message() << activation_name(kind) << " n=" << n);
      auto x = random_floats(static_cast<size_t>(n), 26, -8, 8);
      x[0] = 1.5f;
      const auto grad = random_floats(static_cast<size_t>(n), 27);
      auto want = grad;
      host_fn<ActivationBackwardArgs>(ref)({x.data(), want.data(), n, kind});
      DeviceBuffer<float> d_x(x), d_grad(grad);
      ASSERT_TRUE(fn({d_x.p, d_grad.p, n, kind}, nullptr)) << last_error();
      expect_close(d_grad.host(), want, kActivationTol, "dx");
    }
}

void check_embed_backward(const KernelEntry& e, const KernelEntry& ref) {
  const auto fn = cuda_fn<EmbedBackwardArgs>(e);
  const int64_t V = 50, P = 64, T = 2;
  for (int32_t word_pad : {-1, 3})
    for (int64_t tokens : {1, 33, 300})
      for (int64_t width : {3, 31, 257}) {
        SCOPED_TRACE(::testing::Message() << tokens << " tokens, width " << width << ", pad " << word_pad);
        auto ids = random_ints(static_cast<size_t>(tokens), V, 28);
        if (word_pad >= 0) {
          ids[0] = (word_pad + 1) % V;  // one token that is not padding: the word table gets something
          if (tokens > 1) ids[1] = word_pad;
        }
        const auto positions = random_ints(static_cast<size_t>(tokens), P, 29);
        const auto types = random_ints(static_cast<size_t>(tokens), T, 30);
        const auto d_out = random_floats(static_cast<size_t>(tokens * width), 31);
        const auto word0 = random_floats(static_cast<size_t>(V * width), 32);
        const auto pos0 = random_floats(static_cast<size_t>(P * width), 33);
        const auto type0 = random_floats(static_cast<size_t>(T * width), 34);
        auto word_want = word0, pos_want = pos0, type_want = type0;
        EmbedBackwardArgs r;
        r.input_ids = ids.data(), r.positions = positions.data(), r.token_types = types.data();
        r.d_out = d_out.data(), r.d_word = word_want.data(), r.d_position = pos_want.data();
        r.d_type = type_want.data(), r.tokens = tokens, r.width = width;
        host_fn<EmbedBackwardArgs>(ref)(r);
        // The reference has no padding index: its caller restores the pad row, as the CPU trainer does.
        if (word_pad >= 0)
          std::copy_n(word0.begin() + word_pad * width, width, word_want.begin() + word_pad * width);
        DeviceBuffer<int32_t> d_ids(ids), d_positions(positions), d_types(types);
        DeviceBuffer<float> d_d_out(d_out), d_word(word0), d_pos(pos0), d_type(type0);
        EmbedBackwardArgs a = r;
        a.input_ids = d_ids.p, a.positions = d_positions.p, a.token_types = d_types.p, a.d_out = d_d_out.p;
        a.d_word = d_word.p, a.d_position = d_pos.p, a.d_type = d_type.p;
        cuda::EmbedPadding padding;
        padding.word = word_pad;
        ASSERT_TRUE(fn(a, nullptr, padding)) << last_error();
        expect_close(minus(d_word.host(), word0), minus(word_want, word0), kRowOpTol, "word increment");
        expect_close(minus(d_pos.host(), pos0), minus(pos_want, pos0), kRowOpTol, "position increment");
        expect_close(minus(d_type.host(), type0), minus(type_want, type0), kRowOpTol, "type increment");
      }
}

void check_column_sum(const KernelEntry& e, const KernelEntry& ref) {
  const auto fn = cuda_fn<ColumnSumArgs>(e);
  for (int64_t rows : {1, 33, 1031})
    for (int64_t cols : {1, 31, 257}) {
      SCOPED_TRACE(::testing::Message() << rows << "x" << cols);
      const int64_t ld = cols + 3;
      const auto x = random_floats(static_cast<size_t>(rows * ld), 35);
      const auto out0 = random_floats(static_cast<size_t>(cols), 36);
      auto want = out0;
      host_fn<ColumnSumArgs>(ref)({x.data(), want.data(), rows, cols, ld});
      DeviceBuffer<float> d_x(x), d_out(out0);
      ASSERT_TRUE(fn({d_x.p, d_out.p, rows, cols, ld}, nullptr)) << last_error();
      expect_close(minus(d_out.host(), out0), minus(want, out0), kRowOpTol, "column sums");
    }
}

void check_dropout(const KernelEntry& e, const KernelEntry& ref) {
  const auto fn = cuda_fn<DropoutArgs>(e);
  for (float p : {0.1f, 0.5f})
    for (int64_t n : {33, 1031, 100003}) {  // enough elements that some survive
      SCOPED_TRACE(::testing::Message() << "p " << p << " n " << n);
      auto x = random_floats(static_cast<size_t>(n), 37);
      x[0] = 0.75f;  // non-zero inputs (random_floats could give an exact 0)
      auto want = x;
      host_fn<DropoutArgs>(ref)({want.data(), n, p, 1234, 77});
      DeviceBuffer<float> d_x(x);
      ASSERT_TRUE(fn({d_x.p, n, p, 1234, 77}, nullptr)) << last_error();
      const auto got = d_x.host();
      for (size_t i = 0; i < got.size(); ++i) {
        ASSERT_EQ(got[i] == 0.f, want[i] == 0.f) << "the mask differs at " << i;
      }
      expect_close(got, want, kDropoutTol, "dropped");
    }
}

// {sum, count} on the device, read back.
LossSum read_loss(const DeviceBuffer<LossSum>& d) { return d.host().at(0); }

void expect_loss(const LossSum& got, const LossSum& want) {
  EXPECT_EQ(got.count, want.count);
  EXPECT_NEAR(got.sum, want.sum, kLossSumTol * std::max(1.0, std::fabs(want.sum)));
}

// The gradient of a mean: the reference's (grad_scale only) divided by the count.
std::vector<float> divided(std::vector<float> v, int64_t count) {
  for (auto& x : v) x = count ? x / static_cast<float>(count) : 0.f;
  return v;
}

void check_cross_entropy(const KernelEntry& e, const KernelEntry& ref) {
  const auto fn = cuda_fn<CrossEntropyArgs>(e);
  for (int64_t rows : {1, 7, 33})
    for (int64_t classes : {2, 33, 1031, 5003}) {  // a warp per row, a block per row above 1024
      SCOPED_TRACE(::testing::Message() << rows << " rows, " << classes << " classes");
      const int64_t ld = classes + 1;
      const auto logits = random_floats(static_cast<size_t>(rows * ld), 38, -4, 4);
      auto targets = random_ints(static_cast<size_t>(rows), static_cast<int32_t>(classes), 39);
      if (rows > 1) targets[1] = -100;  // an ignored row
      std::vector<float> want(logits.size(), 0.f);
      const LossSum want_loss = host_fn<CrossEntropyArgs>(ref)(
          {logits.data(), targets.data(), want.data(), rows, classes, ld, -100, 0.5f});
      DeviceBuffer<float> d_logits(logits), d_grad(logits.size());
      DeviceBuffer<int32_t> d_targets(targets);
      DeviceBuffer<LossSum> d_loss(1);
      for (bool mean : {false, true}) {
        SCOPED_TRACE(mean ? "mean" : "sum");
        cuda::LossOptions o;
        o.result = d_loss.p, o.mean = mean;
        ASSERT_TRUE(fn({d_logits.p, d_targets.p, d_grad.p, rows, classes, ld, -100, 0.5f}, nullptr, o))
            << last_error();
        expect_loss(read_loss(d_loss), want_loss);
        expect_close(d_grad.host(), mean ? divided(want, want_loss.count) : want, kRowOpTol, "dlogits");
      }
    }
}

void check_bce_with_logits(const KernelEntry& e, const KernelEntry& ref) {
  const auto fn = cuda_fn<BceWithLogitsArgs>(e);
  for (int64_t n : {1, 33, 1031, 100003}) {
    SCOPED_TRACE(::testing::Message() << "n " << n);
    const auto logits = random_floats(static_cast<size_t>(n), 40, -6, 6);
    const auto targets = random_floats(static_cast<size_t>(n), 41, 0, 1);
    auto mask = random_ints(static_cast<size_t>(n), 4, 42);  // 0 (not counted) about a quarter of the time
    mask[0] = 1;
    std::vector<float> want(logits.size(), 0.f);
    const LossSum want_loss =
        host_fn<BceWithLogitsArgs>(ref)({logits.data(), targets.data(), mask.data(), want.data(), n, 0.5f});
    DeviceBuffer<float> d_logits(logits), d_targets(targets), d_grad(logits.size());
    DeviceBuffer<int32_t> d_mask(mask);
    DeviceBuffer<LossSum> d_loss(1);
    for (bool mean : {false, true}) {
      SCOPED_TRACE(mean ? "mean" : "sum");
      cuda::LossOptions o;
      o.result = d_loss.p, o.mean = mean;
      ASSERT_TRUE(fn({d_logits.p, d_targets.p, d_mask.p, d_grad.p, n, 0.5f}, nullptr, o)) << last_error();
      expect_loss(read_loss(d_loss), want_loss);
      expect_close(d_grad.host(), mean ? divided(want, want_loss.count) : want, kRowOpTol, "dlogits");
    }
  }
}

void check_mse(const KernelEntry& e, const KernelEntry& ref) {
  const auto fn = cuda_fn<MseArgs>(e);
  for (int64_t n : {1, 33, 1031, 100003}) {
    SCOPED_TRACE(::testing::Message() << "n " << n);
    const auto pred = random_floats(static_cast<size_t>(n), 43, -3, 3);
    auto target = random_floats(static_cast<size_t>(n), 44, -3, 3);
    target[0] = pred[0] + 1.f;  // at least one non-zero difference
    std::vector<float> want(pred.size(), 0.f);
    const LossSum want_loss = host_fn<MseArgs>(ref)({pred.data(), target.data(), want.data(), n, 0.5f});
    DeviceBuffer<float> d_pred(pred), d_target(target), d_grad(pred.size());
    DeviceBuffer<LossSum> d_loss(1);
    for (bool mean : {false, true}) {
      SCOPED_TRACE(mean ? "mean" : "sum");
      cuda::LossOptions o;
      o.result = d_loss.p, o.mean = mean;
      ASSERT_TRUE(fn({d_pred.p, d_target.p, d_grad.p, n, 0.5f}, nullptr, o)) << last_error();
      expect_loss(read_loss(d_loss), want_loss);
      expect_close(d_grad.host(), mean ? divided(want, want_loss.count) : want, kRowOpTol, "dpred");
    }
  }
}

using Checker = void (*)(const KernelEntry& e, const KernelEntry& ref);

Checker checker_for(Op op) {
  switch (op) {
    case Op::kLayerNorm: return check_layernorm;
    case Op::kSoftmaxMasked: return check_softmax_masked;
    case Op::kActivation: return check_activation;
    case Op::kEmbed: return check_embed;
    case Op::kAttention: return check_attention;
    case Op::kLayerNormBackward: return check_layernorm_backward;
    case Op::kSoftmaxBackward: return check_softmax_backward;
    case Op::kActivationBackward: return check_activation_backward;
    case Op::kEmbedBackward: return check_embed_backward;
    case Op::kColumnSum: return check_column_sum;
    case Op::kDropout: return check_dropout;
    case Op::kCrossEntropy: return check_cross_entropy;
    case Op::kBceWithLogits: return check_bce_with_logits;
    case Op::kMse: return check_mse;
    case Op::kConvertToF32:
    case Op::kConvertFromF32:
    case Op::kPoolTokens: return nullptr;  // no CUDA entries for these yet: a new one needs a check here
  }
  return nullptr;
}

std::vector<std::string> cuda_entries() {
  std::vector<std::string> names;
  for (const KernelEntry& e : kernel_registry()) {
    if (e.device == Device::kCuda) names.push_back(e.name);
  }
  return names;
}

TEST(CudaRegistry, HasCudaEntries) { EXPECT_GE(cuda_entries().size(), cuda_backend_ops().size()); }

class CudaEntry : public ::testing::TestWithParam<std::string> {};

TEST_P(CudaEntry, MatchesItsReference) {
  const KernelEntry* e = find_kernel(GetParam());
  ASSERT_NE(e, nullptr);
  const KernelEntry* ref = reference_of(*e);
  ASSERT_NE(ref, nullptr) << e->name << " has no reference";
  const Checker check = checker_for(e->op);
  ASSERT_NE(check, nullptr) << e->name << ": no check for op '" << op_name(e->op) << "' in this test";
  ASSERT_EQ(e->dtype, DType::kF32) << e->name << ": only f32 checks exist here";
  BERT_REQUIRE_GPU();
  std::printf("[ entry    ] %s against %s on %s\n", e->name, ref->name, cuda::device_name().c_str());
  check(*e, *ref);
}

INSTANTIATE_TEST_SUITE_P(Registry, CudaEntry, ::testing::ValuesIn(cuda_entries()),
                         [](const ::testing::TestParamInfo<std::string>& info) { return info.param; });

}  // namespace
}  // namespace bert::kernels
