// Tests of the op registry (kernels/registry.h): entry names follow <op>_<dtype>_<device>[_<variant>],
// every fast entry has a reference, resolution picks the best ISA allowed (and honours BERT_CPU_ISA
// through detect_cpu_isa), missing combinations are errors naming op / device / dtype, the dispatch
// tables are the registry's picks, and every op's check() rejects null pointers, negative sizes,
// overflowing sizes and forbidden aliasing.
#include <gtest/gtest.h>

#include <cstdint>
#include <set>
#include <string>
#include <vector>

#include "kernels/cpu/dispatch.h"
#include "kernels/registry.h"

namespace bert::kernels {
namespace {

std::string expected_name(const KernelEntry& e) {
  std::string dev;
  switch (e.device) {
    case Device::kRef: dev = "ref"; break;
    case Device::kCuda: dev = "cuda"; break;
    case Device::kCpu: dev = e.isa == CpuIsa::kScalar ? "cpu" : cpu_isa_name(e.isa); break;
  }
  std::string n = std::string(op_name(e.op)) + "_" + kernel_dtype_name(e.dtype) + "_" + dev;
  if (*e.variant) n += std::string("_") + e.variant;
  return n;
}

TEST(Registry, NamesFollowTheConventionAndAreUnique) {
  std::set<std::string> names;
  for (const KernelEntry& e : kernel_registry()) {
    EXPECT_EQ(e.name, expected_name(e));
    EXPECT_TRUE(names.insert(e.name).second) << "duplicate " << e.name;
    EXPECT_NE(e.fn, nullptr) << e.name;
    EXPECT_EQ(find_kernel(e.name), &e);
    if (e.device == Device::kRef) {
      EXPECT_EQ(e.isa, CpuIsa::kScalar) << e.name;
    }
  }
  EXPECT_EQ(find_kernel("layernorm_f32_avx1024"), nullptr);
  EXPECT_GE(names.size(), 40u);
}

TEST(Registry, EveryOpHasAReferenceForEachDtype) {
  std::set<int> ops;
  for (const KernelEntry& e : kernel_registry()) {
    ops.insert(static_cast<int>(e.op));
    const KernelEntry* r = reference_of(e);
    ASSERT_NE(r, nullptr) << e.name << " has no reference";
    EXPECT_EQ(r->device, Device::kRef);
    EXPECT_EQ(r->op, e.op);
    EXPECT_EQ(r->dtype, e.dtype);
  }
  EXPECT_EQ(ops.size(), static_cast<size_t>(kNumOps)) << "an Op value has no entry";
  for (int i = 0; i < kNumOps; ++i) EXPECT_STRNE(op_name(static_cast<Op>(i)), "unknown_op");
}

TEST(Registry, ResolvesTheBestIsaAllowed) {
  auto e = resolve_kernel(Op::kLayerNorm, Device::kCpu, DType::kF32, CpuIsa::kAvx512);
  ASSERT_TRUE(e.ok());
  EXPECT_STREQ((*e)->name, "layernorm_f32_avx512");
  e = resolve_kernel(Op::kLayerNorm, Device::kCpu, DType::kF32, CpuIsa::kAvx2);
  ASSERT_TRUE(e.ok());
  EXPECT_STREQ((*e)->name, "layernorm_f32_avx2");
  // No CPU entry runs at scalar level: the reference does.
  e = resolve_kernel(Op::kLayerNorm, Device::kCpu, DType::kF32, CpuIsa::kScalar);
  ASSERT_TRUE(e.ok());
  EXPECT_STREQ((*e)->name, "layernorm_f32_ref");
  // Portable OpenMP entries beat the reference at every level.
  e = resolve_kernel(Op::kColumnSum, Device::kCpu, DType::kF32, CpuIsa::kScalar);
  ASSERT_TRUE(e.ok());
  EXPECT_STREQ((*e)->name, "column_sum_f32_cpu");
  e = resolve_kernel(Op::kConvertFromF32, Device::kCpu, DType::kBF16, CpuIsa::kAvx2);
  ASSERT_TRUE(e.ok());
  EXPECT_STREQ((*e)->name, "convert_from_f32_bf16_avx2");
  e = resolve_kernel(Op::kSoftmaxMasked, Device::kRef, DType::kF32, CpuIsa::kAvx512);
  ASSERT_TRUE(e.ok());
  EXPECT_STREQ((*e)->name, "softmax_masked_f32_ref");
  // The default limit is detect_cpu_isa() (BERT_CPU_ISA honoured).
  e = resolve_kernel(Op::kAttention, Device::kCpu, DType::kF32);
  ASSERT_TRUE(e.ok());
  EXPECT_LE(static_cast<int>((*e)->isa), static_cast<int>(detect_cpu_isa()));
  EXPECT_TRUE(cpu_has_isa(CpuIsa::kScalar));
  std::cout << "[ info ] attention resolves to " << (*e)->name << " (CPU " << cpu_isa_name(cpu_isa_supported())
            << ", limit " << cpu_isa_name(detect_cpu_isa()) << ")\n";
}

TEST(Registry, MissingCombinationNamesOpDeviceAndDtype) {
  // Token pooling has no CUDA kernel in any build (CUDA builds register the other forward ops).
  auto e = resolve_kernel(Op::kPoolTokens, Device::kCuda, DType::kF32, CpuIsa::kAvx512);
  ASSERT_FALSE(e.ok());
  EXPECT_EQ(e.status().code(), ErrorCode::kNotFound);
  const std::string& m = e.status().message();
  for (const char* part : {"'pool_tokens'", "'cuda'", "'f32'", "pool_tokens_f32_ref"})
    EXPECT_NE(m.find(part), std::string::npos) << m << " lacks " << part;
  e = resolve_kernel(Op::kEmbed, Device::kCpu, DType::kBF16, CpuIsa::kAvx512);
  ASSERT_FALSE(e.ok());
  EXPECT_NE(e.status().message().find("'embed'"), std::string::npos);
  EXPECT_NE(e.status().message().find("'bf16'"), std::string::npos);
  auto typed = resolve<LayerNormArgs>(Device::kCuda, DType::kF16, CpuIsa::kAvx2);
  EXPECT_FALSE(typed.ok());
}

TEST(Registry, DispatchTablesAreTheRegistrysPicks) {
  for (CpuIsa isa : {CpuIsa::kScalar, CpuIsa::kAvx2, CpuIsa::kAvx512}) {
    const CpuKernels& k = cpu_kernels(isa);
    EXPECT_EQ(k.isa, isa);
    auto fn = [&](Op op, DType t) { return (*resolve_kernel(op, Device::kCpu, t, isa))->fn; };
    EXPECT_EQ(reinterpret_cast<AnyKernelFn>(k.layernorm), fn(Op::kLayerNorm, DType::kF32));
    EXPECT_EQ(reinterpret_cast<AnyKernelFn>(k.softmax_masked), fn(Op::kSoftmaxMasked, DType::kF32));
    EXPECT_EQ(reinterpret_cast<AnyKernelFn>(k.activation), fn(Op::kActivation, DType::kF32));
    EXPECT_EQ(reinterpret_cast<AnyKernelFn>(k.embed), fn(Op::kEmbed, DType::kF32));
    EXPECT_EQ(reinterpret_cast<AnyKernelFn>(k.convert_f16_to_f32), fn(Op::kConvertToF32, DType::kF16));
    EXPECT_EQ(reinterpret_cast<AnyKernelFn>(k.convert_bf16_to_f32), fn(Op::kConvertToF32, DType::kBF16));
    EXPECT_EQ(reinterpret_cast<AnyKernelFn>(k.convert_f32_to_f16), fn(Op::kConvertFromF32, DType::kF16));
    EXPECT_EQ(reinterpret_cast<AnyKernelFn>(k.convert_f32_to_bf16), fn(Op::kConvertFromF32, DType::kBF16));
  }
  EXPECT_EQ(cpu_kernels(CpuIsa::kAvx512).layernorm, &layernorm_f32_avx512);
  EXPECT_EQ(cpu_kernels(CpuIsa::kScalar).embed, &embed_f32_ref);
}

TEST(Registry, CheckedCallChecksThenRuns) {
  std::vector<float> x = {1, 2, 3, 4}, g(4, 1.f), b(4, 0.f), y(4, 0.f);
  LayerNormArgs a{x.data(), nullptr, g.data(), b.data(), y.data(), 1, 4};
  ASSERT_TRUE(checked_call(a).ok());
  EXPECT_NEAR(y[0], -1.3416407864998738, 1e-5);
  a.gamma = nullptr;
  const Status st = checked_call(a);
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.message().find("layernorm: gamma is null"), std::string::npos) << st.message();
  a.gamma = g.data();
  EXPECT_EQ(checked_call(a, Device::kCuda).code(), ErrorCode::kNotFound);
}

// ---- check(): one case per rule --------------------------------------------------------------------

void expect_bad(const Status& st, const std::string& needle) {
  EXPECT_FALSE(st.ok()) << "accepted; wanted an error containing '" << needle << "'";
  EXPECT_EQ(st.code(), ErrorCode::kInvalidArgument);
  EXPECT_NE(st.message().find(needle), std::string::npos) << st.message() << " lacks '" << needle << "'";
}

TEST(Check, LayerNorm) {
  std::vector<float> buf(64), g(8), b(8);
  LayerNormArgs ok{buf.data(), nullptr, g.data(), b.data(), buf.data() + 32, 4, 8};
  EXPECT_TRUE(check(ok).ok());
  LayerNormArgs a = ok;
  a.y = buf.data();  // in place (y = x): allowed
  EXPECT_TRUE(check(a).ok());
  a = ok, a.residual = buf.data() + 32;  // y = residual: allowed
  EXPECT_TRUE(check(a).ok());
  a = ok, a.x = nullptr;
  expect_bad(check(a), "layernorm: x is null");
  a = ok, a.rows = -1;
  expect_bad(check(a), "rows is -1");
  a = ok, a.rows = int64_t{1} << 40, a.cols = int64_t{1} << 30;
  expect_bad(check(a), "overflow");
  a = ok, a.y = buf.data() + 3;  // overlaps x partially
  expect_bad(check(a), "y partially overlaps x");
  a = ok, a.y = g.data(), a.rows = 1;
  expect_bad(check(a), "y overlaps gamma");
  a = ok, a.rows = 0, a.x = nullptr, a.y = nullptr;  // nothing to do
  EXPECT_TRUE(check(a).ok());
}

TEST(Check, SoftmaxActivationEmbedConvertPool) {
  std::vector<float> s(64);
  std::vector<int32_t> mask(8);
  EXPECT_TRUE(check(SoftmaxMaskedArgs{s.data(), mask.data(), 2, 2, 4, 4, 1.f}).ok());
  expect_bad(check(SoftmaxMaskedArgs{nullptr, nullptr, 1, 1, 1, 1, 1.f}), "scores is null");
  expect_bad(check(SoftmaxMaskedArgs{s.data(), nullptr, 1, -2, 1, 1, 1.f}), "heads is -2");
  expect_bad(check(SoftmaxMaskedArgs{s.data(), reinterpret_cast<const int32_t*>(s.data()), 2, 2, 4, 4, 1.f}),
             "key_mask");

  EXPECT_TRUE(check(ActivationArgs{s.data(), 64}).ok());
  expect_bad(check(ActivationArgs{nullptr, 3}), "x is null");
  expect_bad(check(ActivationArgs{s.data(), -1}), "n is -1");

  std::vector<int32_t> ids(4);
  std::vector<float> word(40), out(16), gb(4);
  EmbedArgs e{ids.data(), nullptr, nullptr, word.data(), nullptr, nullptr, gb.data(), gb.data(), out.data(), 4, 4};
  EXPECT_TRUE(check(e).ok());
  EmbedArgs e2 = e;
  e2.beta = nullptr;
  expect_bad(check(e2), "gamma and beta");
  e2 = e, e2.out = word.data();
  expect_bad(check(e2), "out overlaps word_table");
  e2 = e, e2.input_ids = nullptr;
  expect_bad(check(e2), "input_ids is null");

  std::vector<uint16_t> h(16);
  EXPECT_TRUE(check(ConvertArgs{h.data(), out.data(), 16, true}).ok());
  expect_bad(check(ConvertArgs{out.data(), out.data() + 2, 8, false}), "dst overlaps src");
  expect_bad(check(ConvertArgs{nullptr, out.data(), 8, true}), "src is null");
  expect_bad(check(ConvertArgs{h.data(), out.data(), -8, true}), "n is -8");

  std::vector<float> hidden(2 * 3 * 4), pooled(8);
  EXPECT_TRUE(check(PoolArgs{hidden.data(), nullptr, pooled.data(), 2, 3, 4}).ok());
  expect_bad(check(PoolArgs{hidden.data(), nullptr, hidden.data() + 4, 2, 3, 4}), "out overlaps hidden");
  expect_bad(check(PoolArgs{hidden.data(), nullptr, pooled.data(), 2, -3, 4}), "seq is -3");
}

TEST(Check, TrainingOps) {
  std::vector<float> s(32), gam(8), dy(32), ds(32), dg(8), db(8);
  LayerNormBackwardArgs lb{s.data(), gam.data(), dy.data(), ds.data(), dg.data(), db.data(), 4, 8};
  EXPECT_TRUE(check(lb).ok());
  LayerNormBackwardArgs lb2 = lb;
  lb2.ds = dy.data();  // in place (ds = dy): allowed
  EXPECT_TRUE(check(lb2).ok());
  lb2 = lb, lb2.dgamma = s.data();
  expect_bad(check(lb2), "dgamma overlaps s");
  lb2 = lb, lb2.ds = dy.data() + 1;
  expect_bad(check(lb2), "ds partially overlaps dy");

  EXPECT_TRUE(check(SoftmaxBackwardArgs{s.data(), dy.data(), 1, 2, 4, 4, 1.f}).ok());
  expect_bad(check(SoftmaxBackwardArgs{s.data(), s.data(), 1, 2, 4, 4, 1.f}), "grad overlaps probs");

  EXPECT_TRUE(check(ActivationBackwardArgs{s.data(), s.data(), 32}).ok());
  expect_bad(check(ActivationBackwardArgs{s.data(), s.data() + 4, 16}), "grad partially overlaps x");

  std::vector<int32_t> ids(4);
  EmbedBackwardArgs eb{ids.data(), nullptr, nullptr, dy.data(), ds.data(), nullptr, nullptr, 4, 8};
  EXPECT_TRUE(check(eb).ok());
  eb.d_word = dy.data() + 8;
  expect_bad(check(eb), "d_word overlaps d_out");

  EXPECT_TRUE(check(ColumnSumArgs{s.data(), dg.data(), 4, 8, 0}).ok());
  expect_bad(check(ColumnSumArgs{s.data(), dg.data(), 4, 8, 7}), "ld 7 is below cols 8");
  expect_bad(check(ColumnSumArgs{s.data(), s.data() + 8, 4, 8, 0}), "out overlaps x");

  std::vector<int32_t> t(4);
  CrossEntropyArgs ce{s.data(), t.data(), s.data(), 4, 8};
  EXPECT_TRUE(check(ce).ok());  // dlogits = logits allowed
  ce.dlogits = s.data() + 1;
  expect_bad(check(ce), "dlogits partially overlaps logits");
  ce.dlogits = nullptr, ce.targets = nullptr;
  expect_bad(check(ce), "targets is null");

  EXPECT_TRUE(check(BceWithLogitsArgs{s.data(), dy.data(), nullptr, nullptr, 32}).ok());
  expect_bad(check(BceWithLogitsArgs{s.data(), dy.data(), nullptr, dy.data(), 32}), "dlogits overlaps targets");
  EXPECT_TRUE(check(MseArgs{s.data(), dy.data(), ds.data(), 32}).ok());
  expect_bad(check(MseArgs{s.data(), nullptr, nullptr, 32}), "target is null");

  EXPECT_TRUE(check(DropoutArgs{s.data(), 32, 0.1f}).ok());
  expect_bad(check(DropoutArgs{s.data(), 32, 1.f}), "p is 1");
  expect_bad(check(DropoutArgs{s.data(), 32, -0.5f}), "p is -0.5");
  EXPECT_TRUE(check(DropoutArgs{s.data(), 32, 0.1f, 0, 0, dy.data()}).ok());
  EXPECT_TRUE(check(DropoutArgs{s.data(), 32, 0.1f, 0, 0, s.data()}).ok());
  expect_bad(check(DropoutArgs{s.data(), 32, 0.1f, 0, 0, s.data() + 1}), "x partially overlaps src");
}

}  // namespace
}  // namespace bert::kernels
