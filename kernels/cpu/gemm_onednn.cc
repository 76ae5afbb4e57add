// GemmPlanner: oneDNN matmul primitives cached by shape, executed with the caller's pointers.
// Packed weights take one of two forms, whichever oneDNN offers at run time (see kernels/gemm.h): a matmul on
// weights in the blocked layout its matmul kernel asks for, or a (grouped) 1x1 convolution on the layout its
// 1x1 kernel asks for. Unpacked, a grouped linear layer is one per-group matmul run G times.
#include <omp.h>
#include <oneapi/dnnl/dnnl.hpp>

#include <array>
#include <cstring>
#include <map>
#include <string>
#include <tuple>
#include <type_traits>
#include <unordered_map>

#include "kernels/cpu/dispatch.h"
#include "kernels/cpu/gemm_onednn_internal.h"
#include "kernels/gemm.h"

namespace bert::kernels {

using onednn::cpu_engine;
using onednn::Dims;
using onednn::is_jit;
using onednn::Plan;
using onednn::to_dnnl_algorithm;
using dnnl::memory;

namespace onednn {

dnnl::engine& cpu_engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

bool is_jit(const std::string& impl) {
  return impl.find("jit") != std::string::npos || impl.find("brg") != std::string::npos;
}

bool to_dnnl_algorithm(Activation act, dnnl::algorithm* alg) {
  switch (act) {
    case Activation::kGeluTanh: *alg = dnnl::algorithm::eltwise_gelu_tanh; return true;
    case Activation::kRelu: *alg = dnnl::algorithm::eltwise_relu; return true;
    case Activation::kTanh: *alg = dnnl::algorithm::eltwise_tanh; return true;
    default: return false;  // identity, GELU (erf), or one oneDNN lacks: linear_activation
  }
}

void plan_b_reorder(Plan& p, const dnnl::matmul::primitive_desc& pd, const memory::desc& plain) {
  p.b_user = memory(plain, cpu_engine(), nullptr);
  p.b_buffer.reset(new float[(pd.weights_desc().get_size() + sizeof(float) - 1) / sizeof(float)]);
  p.weights = memory(pd.weights_desc(), cpu_engine(), p.b_buffer.get());
  p.b_reorder = dnnl::reorder(p.b_user, p.weights);
  p.args[DNNL_ARG_WEIGHTS] = p.weights;
}

void set_b(Plan& p, dnnl::stream& stream, const void* b) {
  if (p.b_buffer) {
    p.b_user.set_data_handle(const_cast<void*>(b));
    p.b_reorder.execute(stream, p.b_user, p.weights);
  } else {
    p.weights.set_data_handle(const_cast<void*>(b));
  }
}

Plan batched_matmul_plan(const BatchedMatmulArgs& a, memory::data_type operands, bool reorder_b) {
  const int skip = a.batch0 == 1 ? (a.batch1 == 1 ? 2 : 1) : 0;
  auto dims = [&](int64_t rows, int64_t cols) {
    Dims d{a.batch0, a.batch1, rows, cols};
    return Dims(d.begin() + skip, d.end());
  };
  auto strides = [&](const int64_t* s) { return Dims(s + skip, s + 4); };
  const memory::desc src(dims(a.M, a.K), operands, strides(a.a_strides));
  const memory::desc wei(dims(a.K, a.N), operands, strides(a.b_strides));
  const memory::desc dst(dims(a.M, a.N), memory::data_type::f32, strides(a.c_strides));
  dnnl::primitive_attr attr;
  if (a.accumulate) {  // dst = dst + src * wei
    dnnl::post_ops po;
    po.append_sum(1.f);
    attr.set_post_ops(po);
  }
  dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(src, wei, dst), attr, cpu_engine());
  bool blocked = false;
  if (reorder_b) {  // weights in the layout the matmul picks, when it is a generated kernel's own
    const memory::desc any(dims(a.K, a.N), operands, memory::format_tag::any);
    dnnl::matmul::primitive_desc packed(dnnl::matmul::desc(src, any, dst), attr, cpu_engine());
    if ((blocked = is_jit(packed.impl_info_str()) && packed.weights_desc() != wei)) pd = packed;
  }
  Plan p = make_plan<dnnl::matmul>(pd, false);
  if (blocked) plan_b_reorder(p, pd, wei);
  return p;
}

}  // namespace onednn

void linear_activation(float* y, int64_t M, int64_t N, int64_t ldy, Activation act) {
  if (act != Activation::kIdentity) linear_activation(y, ldy, y, M, N, ldy, act);
}

void linear_activation(const float* x, int64_t ldx, float* y, int64_t M, int64_t N, int64_t ldy, Activation act) {
  if (M <= 0 || N <= 0) return;
  const CpuKernels& k = cpu_kernels();
  void (*gelu)(const float*, float*, int64_t) = k.isa == CpuIsa::kAvx512 ? gelu_erf_fast_f32_avx512
                                                : k.isa == CpuIsa::kAvx2   ? gelu_erf_fast_f32_avx2
                                                                           : gelu_erf_fast_f32_ref;
#pragma omp parallel for schedule(static) if (M > 1 && M * N >= (int64_t{1} << 15))
  for (int64_t m = 0; m < M; ++m) {
    float* row = y + m * ldy;
    if (act == Activation::kGeluErf) {
      gelu(x + m * ldx, row, N);
      continue;
    }
    if (x != y) std::memcpy(row, x + m * ldx, sizeof(float) * N);
    if (act != Activation::kIdentity) k.activation(ActivationArgs{row, N, act});
  }
}

namespace {

// Weight dims of a linear layer as a 1x1 convolution: {N, K, 1} ("oiw"), or {G, N/G, K/G, 1}
// ("goiw") when grouped. Our [N, K/G] row-major weights are exactly that plain layout either way.
Dims conv_weight_dims(int64_t N, int64_t K, int64_t groups) {
  return groups == 1 ? Dims{N, K, 1} : Dims{groups, N / groups, K / groups, 1};
}
memory::format_tag conv_weight_plain_tag(int64_t groups) {
  return groups == 1 ? memory::format_tag::oiw : memory::format_tag::goiw;
}

// A linear layer as a (grouped) 1x1 convolution over tokens: src [1, K, M] "nwc" is our [M, K] row-major.
// Weights in the layout packed_wei describes, or (nullptr, when packing) in whichever layout oneDNN picks.
dnnl::convolution_forward::primitive_desc conv_linear_pd(int64_t M, int64_t N, int64_t K, int64_t groups,
                                                         const memory::desc* packed_wei, bool bias,
                                                         const dnnl::primitive_attr& attr) {
  const auto f32 = memory::data_type::f32;
  const memory::desc wei =
      packed_wei ? *packed_wei : memory::desc(conv_weight_dims(N, K, groups), f32, memory::format_tag::any);
  memory::desc src({1, K, M}, f32, memory::format_tag::nwc);
  memory::desc dst({1, N, M}, f32, memory::format_tag::nwc);
  memory::desc b({N}, f32, memory::format_tag::a);
  auto d = bias ? dnnl::convolution_forward::desc(dnnl::prop_kind::forward_inference, dnnl::algorithm::convolution_direct,
                                                  src, wei, b, dst, {1}, {0}, {0})
                : dnnl::convolution_forward::desc(dnnl::prop_kind::forward_inference, dnnl::algorithm::convolution_direct,
                                                  src, wei, dst, {1}, {0}, {0});
  return dnnl::convolution_forward::primitive_desc(d, attr, cpu_engine());
}


// A linear layer as a matmul: x [M, K] (row stride ldx) times the weights seen as [K, N] (`wei`: PyTorch's
// [N, K] read transposed, or a packed layout), into y [M, N] (row stride ldy).
dnnl::matmul::primitive_desc matmul_linear_pd(int64_t M, int64_t N, int64_t K, int64_t ldx, int64_t ldy,
                                              const memory::desc& wei, bool bias, const dnnl::primitive_attr& attr) {
  const auto f32 = memory::data_type::f32;
  memory::desc src({M, K}, f32, Dims{ldx, 1});
  memory::desc dst({M, N}, f32, Dims{ldy, 1});
  memory::desc b({1, N}, f32, Dims{N, 1});
  auto md = bias ? dnnl::matmul::desc(src, wei, b, dst) : dnnl::matmul::desc(src, wei, dst);
  return dnnl::matmul::primitive_desc(md, attr, cpu_engine());
}
// Our [N, K] row-major weights as the matmul's [K, N] operand ("ba"), and the row-major [K, N] ("ab").
memory::desc matmul_weights_ba(int64_t N, int64_t K) { return {{K, N}, memory::data_type::f32, Dims{1, K}}; }
memory::desc matmul_weights_ab(int64_t N, int64_t K) { return {{K, N}, memory::data_type::f32, Dims{N, 1}}; }

// Packing plans for 128 tokens; a packed layout must also get a generated kernel at these token counts (one
// token, a few, and several sequences) and thread counts, else it would only serve some sessions (they would
// run plain: right, but slower).
constexpr int64_t kPackPlanRows = 128;
constexpr int64_t kPackCheckRows[] = {1, 5, 128, 512};

// Whether `serves(M)` holds for every checked token count under 1..4 threads and the default thread count
// (oneDNN plans with the calling thread's OpenMP thread count; its brgemm 1x1 convolution's weight blocking
// depends on it). Restores the caller's thread count.
template <class Serves>
bool serves_all(Serves serves) {
  const int saved = omp_get_max_threads();
  bool ok = true;
  for (int threads : {1, 2, 3, 4, saved}) {
    omp_set_num_threads(threads);
    for (int64_t M : kPackCheckRows) {
      try {
        ok = ok && serves(M);
      } catch (const dnnl::error&) {
        ok = false;
      }
    }
  }
  omp_set_num_threads(saved);
  return ok;
}

bool valid_groups(int64_t N, int64_t K, int64_t groups) { return groups >= 1 && N % groups == 0 && K % groups == 0; }

}  // namespace

void PackedWeightsDeleter::operator()(PackedWeights* p) const { delete p; }
size_t packed_weights_bytes(const PackedWeights& p) { return p.bytes; }
const char* packed_weights_form(const PackedWeights& p) {
  return p.form == PackedForm::kMatmul ? "matmul" : "conv1x1";
}
WeightType packed_weights_type(const PackedWeights& p) { return p.type; }

namespace {

// The weights reordered once from `plain` (w as it is) into `packed`.
PackedWeightsPtr reorder_weights(const float* w, const memory::desc& plain, const memory::desc& packed_desc,
                                 int64_t N, int64_t K, int64_t groups, PackedForm form) {
  PackedWeightsPtr p(new PackedWeights);
  p->N = N, p->K = K, p->groups = groups, p->form = form;
  p->desc = packed_desc;
  p->bytes = p->desc.get_size();
  p->data.reset(new float[(p->bytes + sizeof(float) - 1) / sizeof(float)]);
  memory src(plain, cpu_engine(), const_cast<float*>(w));
  memory dst(p->desc, cpu_engine(), p->data.get());
  dnnl::stream stream(cpu_engine());
  dnnl::reorder(src, dst).execute(stream, src, dst);
  stream.wait();
  return p;
}

// The matmul form: only where oneDNN's matmul asks for a layout of its own (its brgemm kernels, AVX-512 and
// up); where it takes the plain layouts (its gemm kernel, AVX2), a reorder would gain nothing.
PackedWeightsPtr pack_for_matmul(const float* w, int64_t N, int64_t K) {
  const dnnl::primitive_attr none;
  const memory::desc any({K, N}, memory::data_type::f32, memory::format_tag::any);
  auto pd = matmul_linear_pd(kPackPlanRows, N, K, K, N, any, true, none);
  const memory::desc wei = pd.weights_desc();
  if (!is_jit(pd.impl_info_str()) || wei == matmul_weights_ba(N, K) || wei == matmul_weights_ab(N, K)) return nullptr;
  if (!serves_all([&](int64_t M) { return is_jit(matmul_linear_pd(M, N, K, K, N, wei, true, none).impl_info_str()); }))
    return nullptr;
  return reorder_weights(w, matmul_weights_ba(N, K), wei, N, K, 1, PackedForm::kMatmul);
}

// The 1x1-convolution form: where oneDNN has a 1x1 kernel for the layer (any generated kernel for a dense
// layer, the 1x1 one for a grouped layer unless any_jit_kernel) whose layout serves every token count.
PackedWeightsPtr pack_for_conv(const float* w, int64_t N, int64_t K, int64_t groups, bool any_jit_kernel) {
  const dnnl::primitive_attr none;
  auto pd = conv_linear_pd(kPackPlanRows, N, K, groups, nullptr, true, none);
  const std::string impl = pd.impl_info_str();
  if (!is_jit(impl)) return nullptr;
  if (groups > 1 && impl.find("1x1") == std::string::npos && !any_jit_kernel) return nullptr;
  const memory::desc wei = pd.weights_desc();
  // oneDNN's brgemm 1x1 convolution (AVX-512) picks its weight blocking from the token count and the thread
  // count, so weights packed for one would send others to its reference kernel (the planner then falls back
  // to the plain matmul): not packing is the honest answer.
  if (!any_jit_kernel &&
      !serves_all([&](int64_t M) { return is_jit(conv_linear_pd(M, N, K, groups, &wei, true, none).impl_info_str()); }))
    return nullptr;
  return reorder_weights(w, memory::desc(conv_weight_dims(N, K, groups), memory::data_type::f32,
                                         conv_weight_plain_tag(groups)),
                         wei, N, K, groups, PackedForm::kConv1x1);
}

}  // namespace

PackedWeightsPtr pack_linear_weights(const float* w, int64_t N, int64_t K, int64_t groups, bool any_jit_kernel) {
  if (!valid_groups(N, K, groups)) return nullptr;
  if (groups == 1) {
    try {
      if (PackedWeightsPtr p = pack_for_matmul(w, N, K)) return p;
    } catch (const dnnl::error&) {
    }
  }
  try {
    return pack_for_conv(w, N, K, groups, any_jit_kernel);
  } catch (const dnnl::error&) {
    return nullptr;
  }
}

struct GemmPlanner::Impl {
  dnnl::engine engine = cpu_engine();
  dnnl::stream stream{engine};
  // (M, N, K, groups, ldx, ldy, activation, has bias, packed)
  using LinearKey = std::tuple<int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int, bool, bool>;
  using BatchedKey = std::array<int64_t, 18>;
  std::map<LinearKey, Plan> linear_plans;
  std::map<BatchedKey, Plan> batched_plans;
  const char* last_impl = "";
  bool last_packed = false;
  onednn::LowpGemm lowp;  // bf16 / int8 weights, bf16 compute (kernels/cpu/gemm_lowp_onednn.cc)
  bool bf16_compute = false;
  uint64_t calls = 0;
};

GemmPlanner::GemmPlanner() : impl_(std::make_unique<Impl>()) {}
GemmPlanner::~GemmPlanner() = default;

size_t GemmPlanner::plan_count() const { return impl_->linear_plans.size() + impl_->batched_plans.size(); }
const char* GemmPlanner::last_impl() const { return impl_->last_impl; }
bool GemmPlanner::last_packed() const { return impl_->last_packed; }
void GemmPlanner::set_int8_scales(Int8ActivationScales mode) { impl_->lowp.set_mode(mode); }
void GemmPlanner::set_compute(GemmCompute compute) { impl_->bf16_compute = compute == GemmCompute::kBF16; }
std::map<const PackedWeights*, float>& GemmPlanner::int8_ranges() { return impl_->lowp.ranges(); }
uint64_t GemmPlanner::calls() const { return impl_->calls; }

bool GemmPlanner::linear(const LinearArgs& a) {
  if ((a.packed && a.packed->type != WeightType::kF32) || impl_->bf16_compute) {
    const bool ok = a.packed && a.packed->type != WeightType::kF32 ? impl_->lowp.linear(a) : impl_->lowp.linear_bf16(a);
    impl_->last_impl = impl_->lowp.last_impl(), impl_->last_packed = ok;
    impl_->calls += ok;
    return ok;
  }
  const int64_t G = a.groups;
  if (!valid_groups(a.N, a.K, G)) return false;
  if (a.packed && (a.packed->N != a.N || a.packed->K != a.K || a.packed->groups != G)) return false;
  const int64_t ldx = a.ldx ? a.ldx : a.K, ldy = a.ldy ? a.ldy : a.N;
  const int64_t Kg = a.K / G, Ng = a.N / G;  // one group's input and output widths
  dnnl::algorithm alg = dnnl::algorithm::undef;
  const bool fused_act = to_dnnl_algorithm(a.act, &alg);
  const bool want_packed = a.packed && ldx == a.K && ldy == a.N;
  Impl::LinearKey key{a.M, a.N, a.K, G, ldx, ldy, static_cast<int>(a.act), a.bias != nullptr, want_packed};
  auto it = impl_->linear_plans.find(key);
  if (it == impl_->linear_plans.end() && want_packed) {
    try {
      dnnl::primitive_attr attr;
      if (fused_act) {
        dnnl::post_ops po;
        po.append_eltwise(1.f, alg, 0.f, 0.f);
        attr.set_post_ops(po);
      }
      // Either form has the same four arguments; a packed layout it has no generated kernel for at this
      // token count is left for the plain path.
      auto make = [&](const auto& pd) {
        if (!is_jit(pd.impl_info_str())) return;
        using Primitive = std::conditional_t<std::is_same_v<std::decay_t<decltype(pd)>, dnnl::matmul::primitive_desc>,
                                             dnnl::matmul, dnnl::convolution_forward>;
        Plan p = onednn::make_plan<Primitive>(pd, a.bias != nullptr);
        p.packed = true;
        it = impl_->linear_plans.emplace(key, std::move(p)).first;
      };
      if (a.packed->form == PackedForm::kMatmul)
        make(matmul_linear_pd(a.M, a.N, a.K, a.K, a.N, a.packed->desc, a.bias != nullptr, attr));
      else
        make(conv_linear_pd(a.M, a.N, a.K, G, &a.packed->desc, a.bias != nullptr, attr));
    } catch (const dnnl::error&) {
    }
  }
  if (it == impl_->linear_plans.end()) {  // plain matmul (also when the packed path has no jit kernel)
    try {
      // One group's matmul (the whole layer when G == 1): [M, Kg] x [Kg, Ng], rows strided as the caller's,
      // the weights [Ng, Kg] read as their transpose.
      dnnl::primitive_attr attr;
      if (fused_act) {
        dnnl::post_ops po;
        po.append_eltwise(1.f, alg, 0.f, 0.f);
        attr.set_post_ops(po);
      }
      auto pd = matmul_linear_pd(a.M, Ng, Kg, ldx, ldy, matmul_weights_ba(Ng, Kg), a.bias != nullptr, attr);
      it = impl_->linear_plans.emplace(key, onednn::make_plan<dnnl::matmul>(pd, a.bias != nullptr)).first;
    } catch (const dnnl::error&) {
      return false;
    }
  }
  Plan& p = it->second;
  impl_->last_impl = p.impl.c_str();
  impl_->last_packed = p.packed;
  ++impl_->calls;
  if (p.packed) {
    p.src.set_data_handle(const_cast<float*>(a.x));
    p.weights.set_data_handle(a.packed->data.get());
    p.dst.set_data_handle(a.y);
    if (a.bias) p.bias.set_data_handle(const_cast<float*>(a.bias));
    p.prim.execute(impl_->stream, p.args);
    impl_->stream.wait();
  } else {
    for (int64_t g = 0; g < G; ++g) {  // group g: input columns g*Kg.., weight rows and outputs g*Ng..
      p.src.set_data_handle(const_cast<float*>(a.x + g * Kg));
      p.weights.set_data_handle(const_cast<float*>(a.w + g * Ng * Kg));
      p.dst.set_data_handle(a.y + g * Ng);
      if (a.bias) p.bias.set_data_handle(const_cast<float*>(a.bias + g * Ng));
      p.prim.execute(impl_->stream, p.args);
      impl_->stream.wait();  // the memories are repointed for the next group
    }
  }
  if (!fused_act) linear_activation(a.y, a.M, a.N, ldy, a.act);
  return true;
}

bool GemmPlanner::batched_matmul(const BatchedMatmulArgs& a) {
  if (impl_->bf16_compute) {
    const bool ok = impl_->lowp.batched_matmul_bf16(a);
    impl_->last_impl = impl_->lowp.last_impl(), impl_->last_packed = false;
    impl_->calls += ok;
    return ok;
  }
  const bool reorder_b = a.reorder_b && a.batch0 == 1 && a.batch1 == 1;
  Impl::BatchedKey key{a.batch0, a.batch1, a.M, a.N, a.K, (a.accumulate ? 1 : 0) | (reorder_b ? 2 : 0)};
  for (int i = 0; i < 4; ++i) {
    key[6 + 3 * i] = a.a_strides[i];
    key[7 + 3 * i] = a.b_strides[i];
    key[8 + 3 * i] = a.c_strides[i];
  }
  auto it = impl_->batched_plans.find(key);
  if (it == impl_->batched_plans.end()) {
    try {
      Plan p = onednn::batched_matmul_plan(a, memory::data_type::f32, reorder_b);
      it = impl_->batched_plans.emplace(key, std::move(p)).first;
    } catch (const dnnl::error&) {
      return false;
    }
  }
  Plan& p = it->second;
  impl_->last_impl = p.impl.c_str();
  impl_->last_packed = false;
  ++impl_->calls;
  p.src.set_data_handle(const_cast<float*>(a.a));
  onednn::set_b(p, impl_->stream, a.b);
  p.dst.set_data_handle(a.c);
  p.prim.execute(impl_->stream, p.args);
  impl_->stream.wait();
  return true;
}

}  // namespace bert::kernels
