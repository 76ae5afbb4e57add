// What the CPU GEMM files share (kernels/cpu/gemm_onednn.cc: fp32; gemm_lowp_onednn.cc: bf16 / int8): the
// packed-weights record, one planned oneDNN primitive, and the low-precision linear layer's planner.
// Internal to kernels/cpu; the interface is kernels/gemm.h.
#pragma once

#include <oneapi/dnnl/dnnl.hpp>

#include <array>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <tuple>
#include <unordered_map>
#include <vector>

#include "kernels/gemm.h"

namespace bert::kernels {

enum class PackedForm { kMatmul, kConv1x1 };

struct PackedWeights {
  int64_t N = 0, K = 0, groups = 1;  // the shape it was packed for
  PackedForm form = PackedForm::kConv1x1;
  WeightType type = WeightType::kF32;
  dnnl::memory::desc desc;  // the matmul's [K, N] weights (kMatmul) or the convolution's weights (kConv1x1)
  std::unique_ptr<float[]> data;  // `bytes` bytes of weights in `desc` (any element type)
  size_t bytes = 0;
  std::vector<float> scales;  // int8: one per output channel (dequantised w[n, k] = q[n, k] * scales[n])
  int qmax = 127;             // int8: 127, or 63 where the CPU's int8 GEMM would saturate (no VNNI)
};

namespace onednn {

using Dims = dnnl::memory::dims;

dnnl::engine& cpu_engine();
// Generated code (jit, or the brgemm-based kernels oneDNN names "brg..."), not the reference loops.
bool is_jit(const std::string& impl);
// The oneDNN eltwise algorithm of an activation fused as a post-op; false for identity, for one oneDNN
// lacks, and for GELU (erf), which linear_activation (kernels/gemm.h) runs faster than oneDNN 2.6's
// post-op (measured: the post-op costs ~0.6 ms per bert-base FFN at 128 tokens, linear_activation ~0.15).
bool to_dnnl_algorithm(Activation act, dnnl::algorithm* alg);

// One planned primitive with its argument memories: only the data handles change between runs.
struct Plan {
  dnnl::primitive prim;  // a matmul (one group's, when grouped and plain), or a 1x1 convolution on packed weights
  bool packed = false;   // packed runs once for every group; a plain matmul runs once per group
  dnnl::memory src, weights, bias, dst;
  std::unordered_map<int, dnnl::memory> args;
  std::string impl;
  // BatchedMatmulArgs::reorder_b / LinearArgs::reorder_w: b as the caller lays it out, reordered into `weights`
  // (planner-owned; plan_b_reorder).
  dnnl::reorder b_reorder;
  dnnl::memory b_user;
  std::unique_ptr<float[]> b_buffer;
  dnnl::memory scales;  // int8: the per-column dequantisation factors (a binary post-op's operand)
  bool act_fused = true;  // false: the activation is applied after the primitive (no oneDNN post-op for it)
};

// The plan of a primitive descriptor: the primitive, its kernel's name, and src / weights / dst (and bias,
// when the primitive takes one) memories on pd's descriptors with no data yet.
template <class Primitive, class Pd>
Plan make_plan(const Pd& pd, bool bias) {
  Plan p;
  p.prim = Primitive(pd);
  p.impl = pd.impl_info_str();
  p.src = dnnl::memory(pd.src_desc(), cpu_engine(), nullptr);
  p.weights = dnnl::memory(pd.weights_desc(), cpu_engine(), nullptr);
  p.dst = dnnl::memory(pd.dst_desc(), cpu_engine(), nullptr);
  p.args = {{DNNL_ARG_SRC, p.src}, {DNNL_ARG_WEIGHTS, p.weights}, {DNNL_ARG_DST, p.dst}};
  if (bias) {
    p.bias = dnnl::memory(pd.bias_desc(), cpu_engine(), nullptr);
    p.args[DNNL_ARG_BIAS] = p.bias;
  }
  return p;
}

// Plan::b_reorder: the plan's weights become a buffer in pd's (blocked) layout, filled each call by a
// reorder from b as the caller lays it out (`plain`).
void plan_b_reorder(Plan& p, const dnnl::matmul::primitive_desc& pd, const dnnl::memory::desc& plain);
// Points the plan's weights at b (as the caller lays it out): directly, or through its reorder.
void set_b(Plan& p, dnnl::stream& stream, const void* b);
// The matmul of one BatchedMatmulArgs shape: a and b in `operands` (f32 or bf16, with the args' strides),
// c fp32 (summed into when a.accumulate). Leading batch dimensions of size 1 are dropped: oneDNN 2.6 has
// jit kernels for 2-D and 3-D strided matmuls but falls back to its reference one for 4-D with unit
// batches. With reorder_b, b is reordered each call into the layout the matmul asks for, where that is a
// generated kernel's own. Throws dnnl::error when oneDNN cannot plan it.
Plan batched_matmul_plan(const BatchedMatmulArgs& a, dnnl::memory::data_type operands, bool reorder_b);

// Linear layers on bf16 or int8 packed weights: the activations are converted (bf16) or quantised
// (int8: one dynamic or calibrated scale per call) into a scratch buffer, then one oneDNN matmul with the
// bias and (int8) the dequantisation as a post-op writes fp32. Plans are cached by shape.
class LowpGemm {
 public:
  bool linear(const LinearArgs& a);
  // fp32 operands computed in bf16 (GemmPlanner::set_compute): each operand's span converted to bf16 with
  // its strides kept, one bf16 matmul (per group) into fp32.
  bool linear_bf16(const LinearArgs& a);
  bool batched_matmul_bf16(const BatchedMatmulArgs& a);
  const char* last_impl() const { return last_impl_; }
  // Calibration: while recording, every int8 call notes max |x| per weights; with static scales set, an
  // int8 call whose weights have a recorded range uses it instead of measuring the activations.
  void set_mode(Int8ActivationScales mode) { mode_ = mode; }
  std::map<const PackedWeights*, float>& ranges() { return ranges_; }

 private:
  using Key = std::tuple<int64_t, int64_t, int64_t, int64_t, int, int, int>;  // M N K ldy act bias-at type
  dnnl::stream stream_{cpu_engine()};
  std::map<Key, Plan> plans_;
  std::map<std::array<int64_t, 19>, Plan> bf16_plans_;  // bf16 compute: linear and batched shapes
  std::vector<uint16_t> bf16_a_, bf16_b_;              // bf16 compute: the converted operands
  const float* bf16_a_source_ = nullptr;               // what bf16_a_ holds: the span converted last
  int64_t bf16_a_span_ = 0;
  std::vector<uint16_t> bf16_;  // converted activations [M, K]
  std::vector<int8_t> s8_;      // quantised activations [M, K]
  std::vector<float> col_scales_;
  std::vector<float> bias_in_scale_;  // int8: bias[n] / col_scales_[n], the matmul's own bias
  const char* last_impl_ = "";
  Int8ActivationScales mode_ = Int8ActivationScales::kDynamic;
  std::map<const PackedWeights*, float> ranges_;
};

}  // namespace onednn
}  // namespace bert::kernels
