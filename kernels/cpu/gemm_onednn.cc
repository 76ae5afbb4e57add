// GemmPlanner: oneDNN matmul primitives cached by shape, executed with the caller's pointers.
#include <oneapi/dnnl/dnnl.hpp>

#include <array>
#include <map>
#include <string>
#include <tuple>
#include <unordered_map>

#include "kernels/cpu/dispatch.h"
#include "kernels/gemm.h"

namespace bert::kernels {

namespace {

using dnnl::memory;
using Dims = memory::dims;

// One planned primitive with its argument memories: only the data handles change between runs.
struct Plan {
  dnnl::primitive prim;  // a matmul, or a 1x1 convolution on packed weights
  bool packed = false;
  memory src, weights, bias, dst;
  std::unordered_map<int, memory> args;
  std::string impl;
};

bool to_dnnl_algorithm(Activation act, dnnl::algorithm* alg) {
  switch (act) {
    case Activation::kGeluErf: *alg = dnnl::algorithm::eltwise_gelu_erf; return true;
    case Activation::kGeluTanh: *alg = dnnl::algorithm::eltwise_gelu_tanh; return true;
    case Activation::kRelu: *alg = dnnl::algorithm::eltwise_relu; return true;
    case Activation::kTanh: *alg = dnnl::algorithm::eltwise_tanh; return true;
    default: return false;  // identity, or one oneDNN lacks (applied separately)
  }
}

dnnl::engine& cpu_engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

// A linear layer as a 1x1 convolution over tokens: src [1, K, M] "nwc" is our [M, K] row-major.
dnnl::convolution_forward::primitive_desc conv_linear_pd(int64_t M, int64_t N, int64_t K, const memory::desc& wei,
                                                         bool bias, const dnnl::primitive_attr& attr) {
  const auto f32 = memory::data_type::f32;
  memory::desc src({1, K, M}, f32, memory::format_tag::nwc);
  memory::desc dst({1, N, M}, f32, memory::format_tag::nwc);
  memory::desc b({N}, f32, memory::format_tag::a);
  auto d = bias ? dnnl::convolution_forward::desc(dnnl::prop_kind::forward_inference, dnnl::algorithm::convolution_direct,
                                                  src, wei, b, dst, {1}, {0}, {0})
                : dnnl::convolution_forward::desc(dnnl::prop_kind::forward_inference, dnnl::algorithm::convolution_direct,
                                                  src, wei, dst, {1}, {0}, {0});
  return dnnl::convolution_forward::primitive_desc(d, attr, cpu_engine());
}

bool is_jit(const std::string& impl) { return impl.find("jit") != std::string::npos; }

}  // namespace

struct PackedWeights {
  memory::desc desc;
  std::unique_ptr<float[]> data;
  size_t bytes = 0;
};

void PackedWeightsDeleter::operator()(PackedWeights* p) const { delete p; }
size_t packed_weights_bytes(const PackedWeights& p) { return p.bytes; }

PackedWeightsPtr pack_linear_weights(const float* w, int64_t N, int64_t K) {
  try {
    const auto f32 = memory::data_type::f32;
    memory::desc any({N, K, 1}, f32, memory::format_tag::any);
    // The blocked layout the jit 1x1 kernel wants does not depend on the token count; plan for 128.
    auto pd = conv_linear_pd(128, N, K, any, true, dnnl::primitive_attr());
    if (!is_jit(pd.impl_info_str())) return nullptr;
    PackedWeightsPtr p(new PackedWeights);
    p->desc = pd.weights_desc();
    p->bytes = p->desc.get_size();
    p->data.reset(new float[(p->bytes + sizeof(float) - 1) / sizeof(float)]);
    memory plain({{N, K, 1}, f32, memory::format_tag::oiw}, cpu_engine(), const_cast<float*>(w));
    memory packed(p->desc, cpu_engine(), p->data.get());
    dnnl::stream stream(cpu_engine());
    dnnl::reorder(plain, packed).execute(stream, plain, packed);
    stream.wait();
    return p;
  } catch (const dnnl::error&) {
    return nullptr;
  }
}

struct GemmPlanner::Impl {
  dnnl::engine engine = cpu_engine();
  dnnl::stream stream{engine};
  // (M, N, K, ldx, ldy, activation, has bias, packed)
  using LinearKey = std::tuple<int64_t, int64_t, int64_t, int64_t, int64_t, int, bool, bool>;
  using BatchedKey = std::array<int64_t, 17>;
  std::map<LinearKey, Plan> linear_plans;
  std::map<BatchedKey, Plan> batched_plans;
  const char* last_impl = "";
};

GemmPlanner::GemmPlanner() : impl_(std::make_unique<Impl>()) {}
GemmPlanner::~GemmPlanner() = default;

size_t GemmPlanner::plan_count() const { return impl_->linear_plans.size() + impl_->batched_plans.size(); }
const char* GemmPlanner::last_impl() const { return impl_->last_impl; }

bool GemmPlanner::linear(const LinearArgs& a) {
  const int64_t ldx = a.ldx ? a.ldx : a.K, ldy = a.ldy ? a.ldy : a.N;
  dnnl::algorithm alg = dnnl::algorithm::undef;
  const bool fused_act = to_dnnl_algorithm(a.act, &alg);
  const bool want_packed = a.packed && ldx == a.K && ldy == a.N;
  Impl::LinearKey key{a.M, a.N, a.K, ldx, ldy, static_cast<int>(a.act), a.bias != nullptr, want_packed};
  auto it = impl_->linear_plans.find(key);
  if (it == impl_->linear_plans.end() && want_packed) {
    try {
      dnnl::primitive_attr attr;
      if (fused_act) {
        dnnl::post_ops po;
        po.append_eltwise(1.f, alg, 0.f, 0.f);
        attr.set_post_ops(po);
      }
      auto pd = conv_linear_pd(a.M, a.N, a.K, a.packed->desc, a.bias != nullptr, attr);
      if (is_jit(pd.impl_info_str())) {
        Plan p;
        p.prim = dnnl::convolution_forward(pd);
        p.impl = pd.impl_info_str();
        p.src = memory(pd.src_desc(), impl_->engine, nullptr);
        p.weights = memory(pd.weights_desc(), impl_->engine, nullptr);
        p.dst = memory(pd.dst_desc(), impl_->engine, nullptr);
        p.args = {{DNNL_ARG_SRC, p.src}, {DNNL_ARG_WEIGHTS, p.weights}, {DNNL_ARG_DST, p.dst}};
        if (a.bias) {
          p.bias = memory(pd.bias_desc(), impl_->engine, nullptr);
          p.args[DNNL_ARG_BIAS] = p.bias;
        }
        p.packed = true;
        it = impl_->linear_plans.emplace(key, std::move(p)).first;
      }
    } catch (const dnnl::error&) {
    }
  }
  if (it == impl_->linear_plans.end()) {  // plain matmul (also when the packed path has no jit kernel)
    try {
      const auto f32 = memory::data_type::f32;
      memory::desc src({a.M, a.K}, f32, Dims{ldx, 1});
      memory::desc wei({a.K, a.N}, f32, Dims{1, a.K});  // [N, K] read as its transpose
      memory::desc dst({a.M, a.N}, f32, Dims{ldy, 1});
      memory::desc bias({1, a.N}, f32, Dims{a.N, 1});
      dnnl::primitive_attr attr;
      if (fused_act) {
        dnnl::post_ops po;
        po.append_eltwise(1.f, alg, 0.f, 0.f);
        attr.set_post_ops(po);
      }
      auto md = a.bias ? dnnl::matmul::desc(src, wei, bias, dst) : dnnl::matmul::desc(src, wei, dst);
      dnnl::matmul::primitive_desc pd(md, attr, impl_->engine);
      Plan p;
      p.prim = dnnl::matmul(pd);
      p.impl = pd.impl_info_str();
      p.src = memory(src, impl_->engine, nullptr);
      p.weights = memory(wei, impl_->engine, nullptr);
      p.dst = memory(dst, impl_->engine, nullptr);
      p.args = {{DNNL_ARG_SRC, p.src}, {DNNL_ARG_WEIGHTS, p.weights}, {DNNL_ARG_DST, p.dst}};
      if (a.bias) {
        p.bias = memory(bias, impl_->engine, nullptr);
        p.args[DNNL_ARG_BIAS] = p.bias;
      }
      it = impl_->linear_plans.emplace(key, std::move(p)).first;
    } catch (const dnnl::error&) {
      return false;
    }
  }
  Plan& p = it->second;
  impl_->last_impl = p.impl.c_str();
  p.src.set_data_handle(const_cast<float*>(a.x));
  p.weights.set_data_handle(p.packed ? static_cast<void*>(a.packed->data.get()) : const_cast<float*>(a.w));
  p.dst.set_data_handle(a.y);
  if (a.bias) p.bias.set_data_handle(const_cast<float*>(a.bias));
  p.prim.execute(impl_->stream, p.args);
  impl_->stream.wait();
  if (!fused_act && a.act != Activation::kIdentity) {
    // An activation oneDNN has no post-op for: apply the hand-written kernel row by row.
    const auto& k = cpu_kernels();
    for (int64_t m = 0; m < a.M; ++m) k.activation(ActivationArgs{a.y + m * ldy, a.N, a.act});
  }
  return true;
}

bool GemmPlanner::batched_matmul(const BatchedMatmulArgs& a) {
  Impl::BatchedKey key{a.batch0, a.batch1, a.M, a.N, a.K};
  for (int i = 0; i < 4; ++i) {
    key[5 + 3 * i] = a.a_strides[i];
    key[6 + 3 * i] = a.b_strides[i];
    key[7 + 3 * i] = a.c_strides[i];
  }
  auto it = impl_->batched_plans.find(key);
  if (it == impl_->batched_plans.end()) {
    try {
      const auto f32 = memory::data_type::f32;
      auto strides = [](const int64_t* s) { return Dims{s[0], s[1], s[2], s[3]}; };
      memory::desc src({a.batch0, a.batch1, a.M, a.K}, f32, strides(a.a_strides));
      memory::desc wei({a.batch0, a.batch1, a.K, a.N}, f32, strides(a.b_strides));
      memory::desc dst({a.batch0, a.batch1, a.M, a.N}, f32, strides(a.c_strides));
      dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(src, wei, dst), impl_->engine);
      Plan p;
      p.prim = dnnl::matmul(pd);
      p.impl = pd.impl_info_str();
      p.src = memory(src, impl_->engine, nullptr);
      p.weights = memory(wei, impl_->engine, nullptr);
      p.dst = memory(dst, impl_->engine, nullptr);
      p.args = {{DNNL_ARG_SRC, p.src}, {DNNL_ARG_WEIGHTS, p.weights}, {DNNL_ARG_DST, p.dst}};
      it = impl_->batched_plans.emplace(key, std::move(p)).first;
    } catch (const dnnl::error&) {
      return false;
    }
  }
  Plan& p = it->second;
  impl_->last_impl = p.impl.c_str();
  p.src.set_data_handle(const_cast<float*>(a.a));
  p.weights.set_data_handle(const_cast<float*>(a.b));
  p.dst.set_data_handle(a.c);
  p.prim.execute(impl_->stream, p.args);
  impl_->stream.wait();
  return true;
}

}  // namespace bert::kernels
