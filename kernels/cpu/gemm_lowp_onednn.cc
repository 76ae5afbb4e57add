// bf16 and int8 linear layers on the CPU (kernels/gemm.h, low-precision section): weights converted or
// quantised once and reordered into the layout oneDNN's matmul asks for; per call the activations are
// converted to bf16, or quantised to int8 with one scale (max |x| / 127, measured or calibrated), into a
// scratch buffer, and one matmul writes fp32: bf16 with the bias, int8 with the bias in the accumulator's
// units (bias[n] / (x_scale * w_scale[n])) and the dequantisation (that product, a per-column binary
// multiply) as a post-op; ReLU / tanh fused, GELU after (linear_activation). Per-row (per-token)
// scales would send oneDNN 2.6 to its reference kernel, and its runtime output scales to a non-brgemm
// one, so one scale per call it is (what ONNX Runtime's dynamic quantisation does too).
#include <oneapi/dnnl/dnnl.hpp>

#include <algorithm>
#include <array>
#include <cmath>
#include <string>

#include "kernels/cpu/dispatch.h"
#include "kernels/cpu/gemm_onednn_internal.h"
#include "kernels/gemm.h"
#include "kernels/quantize.h"

namespace bert::kernels {

using dnnl::memory;
using onednn::cpu_engine;
using onednn::Dims;
using onednn::is_jit;
using onednn::Plan;

const char* weight_type_name(WeightType t) {
  switch (t) {
    case WeightType::kF32: return "fp32";
    case WeightType::kBF16: return "bf16";
    case WeightType::kInt8: return "int8";
  }
  return "?";
}

namespace {

constexpr int64_t kPlanRows = 128;  // the token count weights are packed for (the layout serves any)

memory::data_type element_type(WeightType t) {
  return t == WeightType::kBF16 ? memory::data_type::bf16 : memory::data_type::s8;
}

const char* isa_name(dnnl::cpu_isa isa) {
  switch (isa) {
    case dnnl::cpu_isa::sse41: return "sse41";
    case dnnl::cpu_isa::avx: return "avx";
    case dnnl::cpu_isa::avx2: return "avx2";
    case dnnl::cpu_isa::avx2_vnni: return "avx2_vnni";
    case dnnl::cpu_isa::avx512_core: return "avx512_core";
    case dnnl::cpu_isa::avx512_core_vnni: return "avx512_core_vnni";
    case dnnl::cpu_isa::avx512_core_bf16: return "avx512_core_bf16";
    case dnnl::cpu_isa::avx512_core_amx: return "avx512_core_amx";
    default: return "another ISA";
  }
}

// Where a linear layer's bias is added: nowhere, as the matmul's own bias (bf16; int8 with the bias divided
// by the column scale, so that one binary post-op is left: measured 2-10% faster), or as a binary post-op
// after the dequantisation (int8, when bias / scale would not be finite).
enum class BiasAt { kNone, kMatmul, kPostOp };

// x [M, K] (dense, bf16 or s8) times the weights seen as [K, N] into y [M, N] fp32 (row stride ldy).
// Post-ops: int8: y *= scales[n] (index 0), then y += bias[n] (index 1, kPostOp); then the activation.
dnnl::matmul::primitive_desc lowp_pd(int64_t M, int64_t N, int64_t K, int64_t ldy, WeightType type,
                                     const memory::desc& wei, BiasAt bias, Activation act, bool* act_fused) {
  const auto f32 = memory::data_type::f32;
  memory::desc src({M, K}, element_type(type), Dims{K, 1});
  memory::desc dst({M, N}, f32, Dims{ldy, 1});
  memory::desc row({1, N}, f32, Dims{N, 1});
  dnnl::post_ops po;
  if (type == WeightType::kInt8) {
    po.append_binary(dnnl::algorithm::binary_mul, row);
    if (bias == BiasAt::kPostOp) po.append_binary(dnnl::algorithm::binary_add, row);
  }
  dnnl::algorithm alg = dnnl::algorithm::undef;
  *act_fused = act == Activation::kIdentity || onednn::to_dnnl_algorithm(act, &alg);
  if (act != Activation::kIdentity && *act_fused) po.append_eltwise(1.f, alg, 0.f, 0.f);
  dnnl::primitive_attr attr;
  attr.set_post_ops(po);
  auto md = bias == BiasAt::kMatmul ? dnnl::matmul::desc(src, wei, row, dst) : dnnl::matmul::desc(src, wei, dst);
  return dnnl::matmul::primitive_desc(md, attr, cpu_engine());
}

memory::desc any_weights(int64_t N, int64_t K, WeightType type) {
  return memory::desc({K, N}, element_type(type), memory::format_tag::any);
}

// The activation quantizer of the CPU's best ISA (BERT_CPU_ISA honoured).
float absmax(const float* x, int64_t rows, int64_t cols, int64_t ldx) {
  switch (cpu_kernels().isa) {
    case CpuIsa::kAvx512: return absmax_f32_avx512(x, rows, cols, ldx);
    case CpuIsa::kAvx2: return absmax_f32_avx2(x, rows, cols, ldx);
    default: return absmax_f32_ref(x, rows, cols, ldx);
  }
}
void quantize(const float* x, int64_t rows, int64_t cols, int64_t ldx, float scale, int8_t* q) {
  switch (cpu_kernels().isa) {
    case CpuIsa::kAvx512: return quantize_i8_avx512(x, rows, cols, ldx, scale, q);
    case CpuIsa::kAvx2: return quantize_i8_avx2(x, rows, cols, ldx, scale, q);
    default: return quantize_i8_ref(x, rows, cols, ldx, scale, q);
  }
}

}  // namespace

bool bf16_gemm_supported(std::string* why) {
  static const std::string missing = [] {
    try {
      bool fused = false;
      auto pd = lowp_pd(kPlanRows, 768, 768, 768, WeightType::kBF16, any_weights(768, 768, WeightType::kBF16),
                        BiasAt::kMatmul, Activation::kIdentity, &fused);
      if (is_jit(pd.impl_info_str())) return std::string();
    } catch (const dnnl::error&) {
    }
    return std::string("oneDNN 2.6 has no bf16 matmul kernel for this CPU (it needs AVX-512: avx512_core or "
                       "avx512_core_bf16; oneDNN runs ") +
           isa_name(dnnl::get_effective_cpu_isa()) + " here)";
  }();
  if (why) *why = missing;
  return missing.empty();
}

bool int8_gemm_has_vnni() {
  switch (dnnl::get_effective_cpu_isa()) {
    case dnnl::cpu_isa::avx2_vnni:
    case dnnl::cpu_isa::avx512_core_vnni:
    case dnnl::cpu_isa::avx512_core_bf16:
    case dnnl::cpu_isa::avx512_core_amx: return true;
    default: return false;
  }
}

Result<PackedWeightsPtr> pack_linear_weights_lowp(const float* w, int64_t N, int64_t K, WeightType type) {
  if (type == WeightType::kF32) return invalid_argument("pack_linear_weights_lowp: fp32 weights pack with pack_linear_weights");
  std::string why;
  if (type == WeightType::kBF16 && !bf16_gemm_supported(&why)) return unsupported("bf16 linear layers: " + why);
  PackedWeightsPtr p(new PackedWeights);
  p->N = N, p->K = K, p->type = type, p->form = PackedForm::kMatmul;
  // The weights in the low-precision type, [N, K] row-major: the matmul's [K, N] operand read transposed.
  std::vector<uint16_t> bf16;
  std::vector<int8_t> s8;
  const void* plain = nullptr;
  if (type == WeightType::kBF16) {
    bf16.resize(size_t(N * K));
    cpu_kernels().convert_f32_to_bf16(w, bf16.data(), N * K);
    plain = bf16.data();
  } else {
    p->qmax = int8_gemm_has_vnni() ? 127 : 63;
    s8.resize(size_t(N * K));
    p->scales.resize(size_t(N));
    quantize_weights_per_channel_i8(w, N, K, s8.data(), p->scales.data(), p->qmax);
    plain = s8.data();
  }
  try {
    bool fused = false;
    auto pd = lowp_pd(kPlanRows, N, K, N, type, any_weights(N, K, type), BiasAt::kMatmul, Activation::kIdentity,
                      &fused);
    p->desc = pd.weights_desc();
    p->bytes = p->desc.get_size();
    p->data.reset(new float[(p->bytes + sizeof(float) - 1) / sizeof(float)]);
    memory src(memory::desc({K, N}, element_type(type), Dims{1, K}), cpu_engine(), const_cast<void*>(plain));
    memory dst(p->desc, cpu_engine(), p->data.get());
    dnnl::stream stream(cpu_engine());
    dnnl::reorder(src, dst).execute(stream, src, dst);  // also computes the s8 x s8 compensation oneDNN keeps
    stream.wait();
  } catch (const dnnl::error& e) {
    return unsupported(std::string("oneDNN cannot plan a ") + weight_type_name(type) + " matmul for a " +
                       std::to_string(N) + "x" + std::to_string(K) + " linear layer: " + e.what());
  }
  return p;
}

namespace onednn {

bool LowpGemm::linear(const LinearArgs& a) {
  if (!a.packed || a.groups != 1 || a.packed->N != a.N || a.packed->K != a.K) return false;
  const PackedWeights& pw = *a.packed;
  const int64_t M = a.M, N = a.N, K = a.K;
  const int64_t ldx = a.ldx ? a.ldx : K, ldy = a.ldy ? a.ldy : N;
  if (M == 0) return true;
  const bool int8 = pw.type == WeightType::kInt8;
  const size_t elements = size_t(M * K);
  BiasAt bias_at = a.bias ? BiasAt::kMatmul : BiasAt::kNone;
  const float* bias = a.bias;
  if (int8) {  // quantise the activations; the column scales; the bias in their units
    float range = 0.f;
    auto known = ranges_.find(&pw);
    if (mode_ == Int8ActivationScales::kStatic && known != ranges_.end()) {
      range = known->second;
    } else {
      range = absmax(a.x, M, K, ldx);
      if (mode_ == Int8ActivationScales::kRecord) ranges_[&pw] = std::max(known == ranges_.end() ? 0.f : known->second, range);
    }
    const float x_scale = range > 0.f && range < 3e38f ? range / 127.f : 1.f;
    if (s8_.size() < elements) s8_.resize(elements);
    quantize(a.x, M, K, ldx, x_scale, s8_.data());
    col_scales_.resize(size_t(N));
    for (int64_t n = 0; n < N; ++n) col_scales_[n] = x_scale * pw.scales[n];
    if (a.bias) {
      bias_in_scale_.resize(size_t(N));
      bool finite = true;
      for (int64_t n = 0; n < N; ++n) {
        bias_in_scale_[n] = a.bias[n] / col_scales_[n];
        finite = finite && std::isfinite(bias_in_scale_[n]);
      }
      if (finite) bias = bias_in_scale_.data();
      else bias_at = BiasAt::kPostOp;  // (tiny activations or weights: the sum would overflow)
    }
  } else {
    if (bf16_.size() < elements) bf16_.resize(elements);
    const auto& k = cpu_kernels();
    if (ldx == K) k.convert_f32_to_bf16(a.x, bf16_.data(), M * K);
    else
      for (int64_t m = 0; m < M; ++m) k.convert_f32_to_bf16(a.x + m * ldx, bf16_.data() + m * K, K);
  }
  Key key{M, N, K, ldy, static_cast<int>(a.act), static_cast<int>(bias_at), static_cast<int>(pw.type)};
  auto it = plans_.find(key);
  if (it == plans_.end()) {
    try {
      bool act_fused = true;
      auto pd = lowp_pd(M, N, K, ldy, pw.type, pw.desc, bias_at, a.act, &act_fused);
      Plan p = onednn::make_plan<dnnl::matmul>(pd, bias_at == BiasAt::kMatmul);
      p.act_fused = act_fused;
      const memory::desc row({1, N}, memory::data_type::f32, Dims{N, 1});
      if (int8) {
        p.scales = memory(row, cpu_engine(), nullptr);
        p.args[DNNL_ARG_ATTR_MULTIPLE_POST_OP(0) | DNNL_ARG_SRC_1] = p.scales;
      }
      if (bias_at == BiasAt::kPostOp) {
        p.bias = memory(row, cpu_engine(), nullptr);
        p.args[DNNL_ARG_ATTR_MULTIPLE_POST_OP(1) | DNNL_ARG_SRC_1] = p.bias;
      }
      it = plans_.emplace(key, std::move(p)).first;
    } catch (const dnnl::error&) {
      return false;
    }
  }
  Plan& p = it->second;
  last_impl_ = p.impl.c_str();
  if (int8) p.scales.set_data_handle(col_scales_.data());
  p.src.set_data_handle(int8 ? static_cast<void*>(s8_.data()) : static_cast<void*>(bf16_.data()));
  p.weights.set_data_handle(pw.data.get());
  p.dst.set_data_handle(a.y);
  if (bias) p.bias.set_data_handle(const_cast<float*>(bias));
  p.prim.execute(stream_, p.args);
  stream_.wait();
  if (!p.act_fused) linear_activation(a.y, M, N, ldy, a.act);
  return true;
}

namespace {

// Elements from an operand's first to its last (non-negative strides): the span converted to bf16 as one
// block, so the bf16 copy keeps the fp32 operand's strides (transposed and strided views included).
int64_t span_of(const int64_t* dims, const int64_t* strides, int n) {
  int64_t last = 0;
  for (int i = 0; i < n; ++i) {
    if (dims[i] == 0) return 0;
    last += (dims[i] - 1) * strides[i];
  }
  return last + 1;
}

const uint16_t* to_bf16(const float* src, int64_t n, std::vector<uint16_t>& buf) {
  if (buf.size() < size_t(n)) buf.resize(size_t(n));
  cpu_kernels().convert_f32_to_bf16(src, buf.data(), n);
  return buf.data();
}

}  // namespace

bool LowpGemm::linear_bf16(const LinearArgs& a) {
  const int64_t G = a.groups;
  if (G < 1 || a.N % G || a.K % G) return false;
  const int64_t ldx = a.ldx ? a.ldx : a.K, ldy = a.ldy ? a.ldy : a.N;
  const int64_t Kg = a.K / G, Ng = a.N / G;
  if (a.M == 0 || a.N == 0) return true;
  const bool reorder = a.reorder_w && G == 1;
  std::array<int64_t, 19> key{0, a.M, Ng, Kg, ldx, ldy, static_cast<int64_t>(a.act), a.bias != nullptr, G, reorder};
  auto it = bf16_plans_.find(key);
  if (it == bf16_plans_.end()) {
    try {
      const auto bf16 = memory::data_type::bf16, f32 = memory::data_type::f32;
      memory::desc src({a.M, Kg}, bf16, Dims{ldx, 1}), wei({Kg, Ng}, bf16, Dims{1, Kg}), dst({a.M, Ng}, f32, Dims{ldy, 1});
      memory::desc bias({1, Ng}, f32, Dims{Ng, 1});
      dnnl::algorithm alg = dnnl::algorithm::undef;
      const bool act_fused = a.act == Activation::kIdentity || onednn::to_dnnl_algorithm(a.act, &alg);
      dnnl::primitive_attr attr;
      if (a.act != Activation::kIdentity && act_fused) {
        dnnl::post_ops po;
        po.append_eltwise(1.f, alg, 0.f, 0.f);
        attr.set_post_ops(po);
      }
      auto make_pd = [&](const memory::desc& w) {
        auto md = a.bias ? dnnl::matmul::desc(src, w, bias, dst) : dnnl::matmul::desc(src, w, dst);
        return dnnl::matmul::primitive_desc(md, attr, cpu_engine());
      };
      dnnl::matmul::primitive_desc pd = make_pd(wei);
      bool blocked = false;
      if (reorder) {
        auto any = make_pd(memory::desc({Kg, Ng}, bf16, memory::format_tag::any));
        if ((blocked = is_jit(any.impl_info_str()) && any.weights_desc() != wei)) pd = any;
      }
      Plan p = onednn::make_plan<dnnl::matmul>(pd, a.bias != nullptr);
      if (blocked) onednn::plan_b_reorder(p, pd, wei);
      p.act_fused = act_fused;
      it = bf16_plans_.emplace(key, std::move(p)).first;
    } catch (const dnnl::error&) {
      return false;
    }
  }
  Plan& p = it->second;
  last_impl_ = p.impl.c_str();
  const uint16_t* x = to_bf16(a.x, (a.M - 1) * ldx + a.K, bf16_a_);
  bf16_a_source_ = a.x, bf16_a_span_ = (a.M - 1) * ldx + a.K;
  const uint16_t* w = to_bf16(a.w, a.N * Kg, bf16_b_);
  for (int64_t g = 0; g < G; ++g) {  // group g: input columns g*Kg.., weight rows and outputs g*Ng..
    p.src.set_data_handle(const_cast<uint16_t*>(x + g * Kg));
    onednn::set_b(p, stream_, w + g * Ng * Kg);
    p.dst.set_data_handle(a.y + g * Ng);
    if (a.bias) p.bias.set_data_handle(const_cast<float*>(a.bias + g * Ng));
    p.prim.execute(stream_, p.args);
    stream_.wait();
  }
  if (!p.act_fused) linear_activation(a.y, a.M, a.N, ldy, a.act);
  return true;
}

bool LowpGemm::batched_matmul_bf16(const BatchedMatmulArgs& a) {
  const bool reorder = a.reorder_b && a.batch0 == 1 && a.batch1 == 1;
  std::array<int64_t, 19> key{1 + reorder, a.batch0, a.batch1, a.M, a.N, a.K, a.accumulate};
  for (int i = 0; i < 4; ++i) key[7 + i] = a.a_strides[i], key[11 + i] = a.b_strides[i], key[15 + i] = a.c_strides[i];
  const int64_t a_dims[4] = {a.batch0, a.batch1, a.M, a.K}, b_dims[4] = {a.batch0, a.batch1, a.K, a.N};
  for (int i = 0; i < 4; ++i)
    if (a.a_strides[i] < 0 || a.b_strides[i] < 0) return false;
  if (a.batch0 == 0 || a.batch1 == 0 || a.M == 0 || a.N == 0) return true;
  auto it = bf16_plans_.find(key);
  if (it == bf16_plans_.end()) {
    try {
      Plan p = onednn::batched_matmul_plan(a, memory::data_type::bf16, reorder);
      it = bf16_plans_.emplace(key, std::move(p)).first;
    } catch (const dnnl::error&) {
      return false;
    }
  }
  Plan& p = it->second;
  last_impl_ = p.impl.c_str();
  const int64_t a_span = span_of(a_dims, a.a_strides, 4);
  if (!(a.a_as_before && a.a == bf16_a_source_ && a_span == bf16_a_span_)) {  // else: converted by the last call
    to_bf16(a.a, a_span, bf16_a_);
    bf16_a_source_ = a.a, bf16_a_span_ = a_span;
  }
  p.src.set_data_handle(bf16_a_.data());
  onednn::set_b(p, stream_, to_bf16(a.b, span_of(b_dims, a.b_strides, 4), bf16_b_));
  p.dst.set_data_handle(a.c);
  p.prim.execute(stream_, p.args);
  stream_.wait();
  return true;
}

}  // namespace onednn
}  // namespace bert::kernels
