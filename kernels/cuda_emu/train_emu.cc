// CPU emulation of kernels/cuda/train_kernels.h (the CUDA training kernels) for the BERT_CUDA=EMULATE
// build: "device memory" is host memory and every launch runs to completion at the call. The backward
// ops, dropout and cross-entropy run the CPU variants of kernels/train.h, BCE and MSE their references;
// the optimizers run kernels/optimizer.h's CPU variants tensor by tensor in the order of
// engine/src/optimizer.cc (a grad_factor multiplies a scratch copy of each gradient first, as the CPU
// Optimizer's clipping scales the gradients), so an emulated step gives the CPU Optimizer's bits.
// Argument checks and workspace checks follow kernels/cuda/*.cu; errors go to cuda_last_error().
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "kernels/convert.h"
#include "kernels/cuda/train_kernels.h"
#include "kernels/cuda_emu/emu_internal.h"

namespace bert::kernels::cuda {

namespace {

constexpr int64_t kMinRowsPerChunk = 32;  // the CUDA column sums' row chunks (workspace sizes only)
constexpr int64_t kMaxGridY = 65535;
constexpr int64_t kLossThreads = 256;
constexpr int64_t kLossMaxBlocks = 1024;
constexpr int64_t kParallelMin = int64_t{1} << 15;  // below this many elements, one thread
constexpr size_t kAlign = 256;
constexpr uint32_t kExponentBits = 0x7f800000u;  // all ones: Inf or NaN

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
size_t align_up(size_t bytes) { return (bytes + kAlign - 1) / kAlign * kAlign; }
int64_t rows_per_chunk(int64_t rows) { return std::max(kMinRowsPerChunk, ceil_div(rows, kMaxGridY)); }
int64_t chunk_count(int64_t rows) { return ceil_div(rows, rows_per_chunk(rows)); }
int64_t loss_blocks(int64_t n) { return std::max<int64_t>(1, std::min(ceil_div(n, kLossThreads), kLossMaxBlocks)); }

bool invalid(const std::string& what) { return emu::fail(what); }

bool is_nonfinite(float x) {
  uint32_t bits;
  std::memcpy(&bits, &x, sizeof bits);
  return (bits & kExponentBits) == kExponentBits;
}

// A caller's workspace is checked as the CUDA launchers check it (none given: the launcher would
// allocate one, which the emulation never needs).
bool check_workspace(const Workspace& ws, size_t need, const char* op) {
  if (!ws.ptr || need == 0) return true;
  if (ws.bytes < need)
    return invalid(std::string(op) + ": workspace of " + std::to_string(ws.bytes) + " bytes, " +
                   std::to_string(need) + " needed");
  if (reinterpret_cast<uintptr_t>(ws.ptr) % 16 != 0) return invalid(std::string(op) + ": workspace not 16-byte aligned");
  return true;
}

// The gradient factor of a loss: grad_scale * (*scale_device), divided by the count when mean (0
// when nothing counted), in float as the CUDA kernels take it.
float loss_grad_factor(float grad_scale, const float* scale_device, bool mean, int64_t count) {
  float f = grad_scale;
  if (scale_device) f *= *scale_device;
  if (mean) f = count > 0 ? f / static_cast<float>(count) : 0.f;
  return f;
}

// Scratch buffers reused across calls on one thread (the optimizer's scaled gradients and LAMB updates).
float* scratch_floats(std::vector<float>& buffer, int64_t n) {
  if (buffer.size() < static_cast<size_t>(n)) buffer.resize(static_cast<size_t>(n));
  return buffer.data();
}
thread_local std::vector<float> t_grad_scratch;
thread_local std::vector<float> t_update_scratch;

// dst[i] = src[i] * f (the CPU Optimizer's clipping, kernels::scale_f32, on a copy).
void scaled_copy(const float* src, float* dst, int64_t n, float f) {
#pragma omp parallel for schedule(static) if (n >= kParallelMin)
  for (int64_t i = 0; i < n; ++i) dst[i] = src[i] * f;
}

// The gradient an optimizer reads: the tensor's own, or grad * (*grad_factor) in scratch.
const float* factored_grad(const float* grad, int64_t n, const float* grad_factor) {
  if (!grad_factor || *grad_factor == 1.f) return grad;
  float* g = scratch_floats(t_grad_scratch, n);
  scaled_copy(grad, g, n, *grad_factor);
  return g;
}

// ---- multi-tensor helpers -----------------------------------------------------------------------

bool check_list(const DeviceTensorList& l, const char* what, bool need_params, bool need_moments) {
  const std::string op(what);
  if (l.count < 0 || l.total < 0 || l.total_chunks < 0) return invalid(op + ": negative count in the tensor list");
  if (l.count == 0) return true;
  if (!l.offsets || !l.chunk_offsets) return invalid(op + ": the tensor list has no offsets");
  if (!l.grads) return invalid(op + ": the tensor list has no gradients");
  if (need_params && !l.params) return invalid(op + ": the tensor list has no parameters");
  if (need_moments && (!l.m || !l.v)) return invalid(op + ": the tensor list has no moments");
  for (int i = 0; i < l.count; ++i) {
    if (l.offsets[i + 1] < l.offsets[i]) return invalid(op + ": decreasing offsets in the tensor list");
  }
  return true;
}

bool check_step(const MultiTensorStep& s, const char* what) {
  if (!(s.beta1 >= 0.f && s.beta1 < 1.f) || !(s.beta2 >= 0.f && s.beta2 < 1.f))
    return invalid(std::string(what) + ": betas outside [0, 1)");
  if (!(s.eps >= 0.f) || !(s.weight_decay >= 0.f) || !(s.lr >= 0.f))
    return invalid(std::string(what) + ": negative or NaN lr, eps or weight decay");
  if (!s.step_counter && s.step < 1) return invalid(std::string(what) + ": step must be >= 1");
  return true;
}

int64_t tensor_size(const DeviceTensorList& l, int i) { return l.offsets[i + 1] - l.offsets[i]; }
bool tensor_decays(const DeviceTensorList& l, int i) { return !l.decay || l.decay[i] != 0; }
bool skipped(const MultiTensorStep& s) { return s.skip && *s.skip != 0; }
int64_t step_of(const MultiTensorStep& s) { return s.step_counter ? *s.step_counter + 1 : s.step; }
void advance_step(const MultiTensorStep& s) {
  if (s.step_counter && !skipped(s)) ++*s.step_counter;
}

void write_half_copy(const DeviceTensorList& l, int i, const float* param, int64_t n) {
  uint16_t* half = l.params_f16 ? l.params_f16[i] : nullptr;
  if (!half) return;
  const int64_t blocks = ceil_div(n, 4096);
#pragma omp parallel for schedule(static) if (n >= kParallelMin)
  for (int64_t b = 0; b < blocks; ++b) {
    const int64_t lo = b * 4096;
    convert_f32_to_f16_ref(param + lo, half + lo, std::min<int64_t>(4096, n - lo));
  }
}

// The LAMB update of one tensor: m, v and u (into `update`) as kernels::lamb_update_f32 computes them.
LambUpdateArgs lamb_args(const DeviceTensorList& l, const MultiTensorStep& s, int i, int64_t n, float* update) {
  LambUpdateArgs a;
  a.param = l.params[i];
  a.grad = factored_grad(l.grads[i], n, s.grad_factor);
  a.m = l.m[i];
  a.v = l.v[i];
  a.update = update;
  a.n = n;
  a.step = step_of(s);
  a.beta1 = s.beta1;
  a.beta2 = s.beta2;
  a.eps = s.eps;
  a.weight_decay = tensor_decays(l, i) ? s.weight_decay : 0.f;
  return a;
}

// apex (use_nvlamb=False), as engine/src/optimizer.cc: ||p|| / ||u|| where weight decay applies and
// both norms are > 0, else 1.
double trust_ratio(float weight_decay, double param_sq, double update_sq) {
  if (weight_decay == 0.f) return 1.0;
  const double param_norm = std::sqrt(param_sq), update_norm = std::sqrt(update_sq);
  return param_norm > 0.0 && update_norm > 0.0 ? param_norm / update_norm : 1.0;
}

// LAMB's raw update recomputed from the stored (updated) m and v: kernels/cpu/optimizer_cpu.cc's
// float expression, operation for operation (this build has no FMA contraction), so the same bits.
void lamb_recompute_update(const LambUpdateArgs& a, float* update) {
  const float bc1 = static_cast<float>(1.0 - std::pow(static_cast<double>(a.beta1), static_cast<double>(a.step)));
  const float bc2 = static_cast<float>(1.0 - std::pow(static_cast<double>(a.beta2), static_cast<double>(a.step)));
  const float eps = a.eps, wd = a.weight_decay;
  const float* p = a.param;
  const float* m = a.m;
  const float* v = a.v;
  const int64_t n = a.n;
#pragma omp parallel for schedule(static) if (n >= kParallelMin)
  for (int64_t i = 0; i < n; ++i) {
    const float root_vhat = std::sqrt(v[i] / bc2);
    update[i] = (m[i] / bc1) / (root_vhat + eps) + wd * p[i];
  }
}

// x *= f (when f != 1) with f = inv_scale / *loss_scale; *found = 1 if some product is NaN / Inf.
void unscale_check(float* x, int64_t n, float f, int* found) {
  int bad = 0;
  const bool write = f != 1.f;
#pragma omp parallel for schedule(static) reduction(| : bad) if (n >= kParallelMin)
  for (int64_t i = 0; i < n; ++i) {
    const float y = x[i] * f;
    bad |= is_nonfinite(y) ? 1 : 0;
    if (write) x[i] = y;
  }
  if (bad) *found = 1;
}

float unscale_factor(float inv_scale, const float* loss_scale) {
  return loss_scale ? inv_scale / *loss_scale : inv_scale;
}

}  // namespace

// ==== backward ops ================================================================================

size_t layernorm_backward_workspace_bytes(int64_t rows, int64_t cols) {
  if (rows <= 0 || cols <= 0) return 0;
  const size_t partial = static_cast<size_t>(chunk_count(rows)) * static_cast<size_t>(cols) * sizeof(float);
  return align_up(static_cast<size_t>(rows) * 2 * sizeof(float)) + 2 * align_up(partial);
}

bool layernorm_backward_f32(const LayerNormBackwardArgs& a, void* stream, Workspace ws) {
  if (a.rows < 0 || a.cols < 0) return invalid("layernorm_backward_f32: negative rows or cols");
  if (a.rows == 0 || a.cols == 0) return true;
  if (!a.s || !a.gamma || !a.dy || !a.ds) return invalid("layernorm_backward_f32: null s, gamma, dy or ds");
  if ((a.dgamma || a.dbeta) &&
      !check_workspace(ws, layernorm_backward_workspace_bytes(a.rows, a.cols), "layernorm_backward_f32"))
    return false;
  kernels::layernorm_backward_f32(a);
  return true;
}

bool softmax_backward_f32(const SoftmaxBackwardArgs& a, void* stream) {
  if (a.batch < 0 || a.heads < 0 || a.q_len < 0 || a.k_len < 0)
    return invalid("softmax_backward_f32: negative dimension");
  const int64_t rows = a.batch * a.heads * a.q_len;
  if (rows == 0 || a.k_len == 0) return true;
  if (!a.probs || !a.grad) return invalid("softmax_backward_f32: null probs or grad");
  kernels::softmax_backward_f32(a);
  return true;
}

bool activation_backward_f32(const ActivationBackwardArgs& a, void* stream) {
  if (a.n < 0) return invalid("activation_backward_f32: negative n");
  if (a.n == 0 || a.kind == Activation::kIdentity) return true;
  if (!a.x || !a.grad) return invalid("activation_backward_f32: null x or grad");
  kernels::activation_backward_f32(a);
  return true;
}

size_t embed_backward_workspace_bytes(int64_t tokens, int64_t width) {
  if (tokens <= 0 || width <= 0) return 0;
  return align_up(static_cast<size_t>(tokens) * static_cast<size_t>(width) * sizeof(float)) +
         align_up(static_cast<size_t>(tokens));
}

bool embed_backward_f32(const EmbedBackwardArgs& a, void* stream, Workspace ws, EmbedPadding padding) {
  if (a.tokens < 0 || a.width < 0) return invalid("embed_backward_f32: negative tokens or width");
  if (a.tokens == 0 || a.width == 0) return true;
  if (a.tokens > INT32_MAX) return invalid("embed_backward_f32: more than 2^31 - 1 tokens");
  const bool word = a.d_word && a.input_ids;
  const bool position = a.d_position && a.positions;
  const bool type = a.d_type != nullptr;
  if (!word && !position && !type) return true;
  if (!a.d_out) return invalid("embed_backward_f32: null d_out");
  if (!check_workspace(ws, embed_backward_workspace_bytes(a.tokens, a.width), "embed_backward_f32")) return false;
  const int64_t width = a.width;
  // One table at a time with the CPU scatter; tokens whose id is the padding index add nothing to
  // that row: its values are saved before and put back after (no other token writes that row).
  auto scatter = [&](const int32_t* ids, float* table, int32_t padding_idx, EmbedBackwardArgs k) {
    bool has_pad = false;
    if (padding_idx >= 0 && ids) {
      for (int64_t t = 0; t < a.tokens && !has_pad; ++t) has_pad = ids[t] == padding_idx;
    }
    std::vector<float> saved;
    float* pad_row = has_pad ? table + static_cast<int64_t>(padding_idx) * width : nullptr;
    if (pad_row) saved.assign(pad_row, pad_row + width);
    k.d_out = a.d_out;
    k.tokens = a.tokens;
    k.width = width;
    kernels::embed_backward_f32(k);
    if (pad_row) std::copy(saved.begin(), saved.end(), pad_row);
  };
  if (word) {
    EmbedBackwardArgs k;
    k.input_ids = a.input_ids;
    k.d_word = a.d_word;
    scatter(a.input_ids, a.d_word, padding.word, k);
  }
  if (position) {
    EmbedBackwardArgs k;
    k.positions = a.positions;
    k.d_position = a.d_position;
    scatter(a.positions, a.d_position, padding.position, k);
  }
  if (type) {
    EmbedBackwardArgs k;
    k.token_types = a.token_types;  // null: every token to row 0
    k.d_type = a.d_type;
    scatter(a.token_types, a.d_type, -1, k);
  }
  return true;
}

size_t column_sum_workspace_bytes(int64_t rows, int64_t cols) {
  if (rows <= 0 || cols <= 0) return 0;
  return align_up(static_cast<size_t>(chunk_count(rows)) * static_cast<size_t>(cols) * sizeof(float));
}

bool column_sum_f32(const ColumnSumArgs& a, void* stream, Workspace ws) {
  if (a.rows < 0 || a.cols < 0) return invalid("column_sum_f32: negative rows or cols");
  if (a.cols == 0 || a.rows == 0) return true;  // adds nothing
  const int64_t ld = a.ld ? a.ld : a.cols;
  if (ld < a.cols) return invalid("column_sum_f32: ld < cols");
  if (!a.x || !a.out) return invalid("column_sum_f32: null x or out");
  if (!check_workspace(ws, column_sum_workspace_bytes(a.rows, a.cols), "column_sum_f32")) return false;
  kernels::column_sum_f32(a);
  return true;
}

bool dropout_f32(const DropoutArgs& a, void* stream) {
  if (a.n < 0) return invalid("dropout_f32: negative n");
  if (!(a.p < 1.f)) return invalid("dropout_f32: p must be in [0, 1)");
  if (a.p <= 0.f || a.n == 0) return true;
  if (!a.x) return invalid("dropout_f32: null x");
  kernels::dropout_f32(a);  // the CPU's mask and output, bit for bit
  return true;
}

bool add_f32(const float* a, const float* b, float* out, int64_t n, void* stream) {
  if (n < 0) return invalid("add_f32: negative n");
  if (n == 0) return true;
  if (!a || !b || !out) return invalid("add_f32: null pointer");
#pragma omp parallel for schedule(static) if (n >= kParallelMin)
  for (int64_t i = 0; i < n; ++i) out[i] = a[i] + b[i];
  return true;
}

bool add_rows_f32(const float* src, int64_t src_ld, float* dst, int64_t dst_ld, int64_t rows, int64_t cols,
                  void* stream) {
  if (rows < 0 || cols < 0) return invalid("add_rows_f32: negative rows or cols");
  if (rows == 0 || cols == 0) return true;
  if (!src || !dst) return invalid("add_rows_f32: null pointer");
  if (src_ld < cols || dst_ld < cols) return invalid("add_rows_f32: a row stride is below cols");
#pragma omp parallel for schedule(static) if (rows * cols >= kParallelMin)
  for (int64_t r = 0; r < rows; ++r) {
    const float* s = src + r * src_ld;
    float* d = dst + r * dst_ld;
    for (int64_t c = 0; c < cols; ++c) d[c] += s[c];
  }
  return true;
}

// ==== losses =====================================================================================

size_t loss_workspace_bytes(int64_t rows_or_elements) {
  const size_t n = static_cast<size_t>(std::max<int64_t>(rows_or_elements, 1));
  return align_up(sizeof(int64_t)) + 2 * align_up(n * sizeof(double));
}

bool cross_entropy_f32(const CrossEntropyArgs& a, const LossOptions& o, void* stream, Workspace ws) {
  if (a.rows < 0 || a.classes < 0) return invalid("cross_entropy_f32: negative rows or classes");
  const int64_t ld = a.ld ? a.ld : a.classes;
  if (ld < a.classes) return invalid("cross_entropy_f32: ld < classes");
  const int64_t rows = a.classes > 0 ? a.rows : 0;  // no classes: nothing counts (the CPU spec)
  if (rows > 0 && (!a.logits || !a.targets)) return invalid("cross_entropy_f32: null logits or targets");
  const bool want_grad = a.dlogits && rows > 0;
  if (!o.result && !want_grad) return true;
  if (!check_workspace(ws, loss_workspace_bytes(rows), "cross_entropy_f32")) return false;
  const int64_t classes = a.classes;

  // Counted rows (target != ignore_index), and those whose target is outside [0, classes): the CUDA
  // kernel gives them a NaN loss and the gradient softmax * factor (no one-hot); the CPU variant
  // must not see them (it would read out of bounds), so they are done here.
  int64_t count = 0;
  std::vector<int64_t> bad_rows;
  for (int64_t r = 0; r < rows; ++r) {
    const int32_t t = a.targets[r];
    if (t == a.ignore_index) continue;
    ++count;
    if (t < 0 || t >= classes) bad_rows.push_back(r);
  }
  const float factor = loss_grad_factor(a.grad_scale, o.grad_scale_device, o.mean, count);

  CrossEntropyArgs k = a;
  k.rows = rows;
  k.dlogits = want_grad ? a.dlogits : nullptr;
  k.grad_scale = factor;
  std::vector<int32_t> fixed_targets;
  std::vector<float> bad_grads;
  if (!bad_rows.empty()) {
    if (k.dlogits) {  // from the logits, before the CPU variant may overwrite them (dlogits may alias)
      bad_grads.resize(bad_rows.size() * static_cast<size_t>(classes));
      for (size_t b = 0; b < bad_rows.size(); ++b) {
        const float* x = a.logits + bad_rows[b] * ld;
        float mx = -std::numeric_limits<float>::infinity();
        for (int64_t c = 0; c < classes; ++c) mx = std::max(mx, x[c]);
        double sum = 0.0;
        for (int64_t c = 0; c < classes; ++c) sum += static_cast<double>(std::exp(x[c] - mx));
        const float prob_scale = static_cast<float>(static_cast<double>(factor) / sum);
        float* d = bad_grads.data() + b * static_cast<size_t>(classes);
        for (int64_t c = 0; c < classes; ++c) d[c] = std::exp(x[c] - mx) * prob_scale;
      }
    }
    fixed_targets.assign(a.targets, a.targets + rows);
    for (int64_t r : bad_rows) fixed_targets[static_cast<size_t>(r)] = a.ignore_index;
    k.targets = fixed_targets.data();
  }
  LossSum total;
  if (rows > 0) total = kernels::cross_entropy_f32(k);
  if (!bad_rows.empty()) {
    total.sum = std::numeric_limits<double>::quiet_NaN();
    total.count += static_cast<int64_t>(bad_rows.size());
    if (k.dlogits) {
      for (size_t b = 0; b < bad_rows.size(); ++b)
        std::copy(bad_grads.begin() + static_cast<std::ptrdiff_t>(b * classes),
                  bad_grads.begin() + static_cast<std::ptrdiff_t>((b + 1) * classes), a.dlogits + bad_rows[b] * ld);
    }
  }
  if (o.result) *o.result = total;
  return true;
}

bool bce_with_logits_f32(const BceWithLogitsArgs& a, const LossOptions& o, void* stream, Workspace ws) {
  if (a.n < 0) return invalid("bce_with_logits_f32: negative n");
  if (a.n > 0 && (!a.logits || !a.targets)) return invalid("bce_with_logits_f32: null logits or targets");
  if (!o.result && (!a.dlogits || a.n == 0)) return true;
  if (!check_workspace(ws, loss_workspace_bytes(loss_blocks(a.n)), "bce_with_logits_f32")) return false;
  int64_t count = a.n;
  if (a.mask) {
    count = 0;
    for (int64_t i = 0; i < a.n; ++i) count += a.mask[i] != 0;
  }
  BceWithLogitsArgs k = a;
  k.grad_scale = loss_grad_factor(a.grad_scale, o.grad_scale_device, o.mean, count);
  const LossSum total = a.n > 0 ? kernels::bce_with_logits_f32_ref(k) : LossSum{};
  if (o.result) *o.result = total;
  return true;
}

bool mse_f32(const MseArgs& a, const LossOptions& o, void* stream, Workspace ws) {
  if (a.n < 0) return invalid("mse_f32: negative n");
  if (a.n > 0 && (!a.pred || !a.target)) return invalid("mse_f32: null pred or target");
  if (!o.result && (!a.dpred || a.n == 0)) return true;
  if (o.result && !check_workspace(ws, loss_workspace_bytes(loss_blocks(a.n)), "mse_f32")) return false;
  MseArgs k = a;
  k.grad_scale = loss_grad_factor(a.grad_scale, o.grad_scale_device, o.mean, a.n);
  const LossSum total = a.n > 0 ? kernels::mse_f32_ref(k) : LossSum{};
  if (o.result) *o.result = total;
  return true;
}

// ==== optimizers: single tensor ====================================================================

bool adamw_step_f32(const AdamWStepArgs& a, void* stream) {
  if (a.n < 0) return invalid("adamw_step_f32: negative n");
  if (a.step < 1) return invalid("adamw_step_f32: step must be >= 1");
  if (a.n == 0) return true;
  if (!a.param || !a.grad || !a.m || !a.v) return invalid("adamw_step_f32: null param, grad, m or v");
  kernels::adamw_step_f32(a);
  return true;
}

bool lamb_update_f32(const LambUpdateArgs& a, void* stream) {
  if (a.n < 0) return invalid("lamb_update_f32: negative n");
  if (a.step < 1) return invalid("lamb_update_f32: step must be >= 1");
  if (a.n == 0) return true;
  if (!a.param || !a.grad || !a.m || !a.v || !a.update)
    return invalid("lamb_update_f32: null param, grad, m, v or update");
  kernels::lamb_update_f32(a);
  return true;
}

bool lamb_apply_f32(float* param, const float* update, int64_t n, float step_size, void* stream) {
  if (n < 0) return invalid("lamb_apply_f32: negative n");
  if (n == 0) return true;
  if (!param || !update) return invalid("lamb_apply_f32: null param or update");
  kernels::lamb_apply_f32(param, update, n, step_size);
  return true;
}

size_t sum_squares_workspace_bytes(int64_t n) {
  return align_up(static_cast<size_t>(std::max<int64_t>(1, ceil_div(std::max<int64_t>(n, 0), kMultiTensorChunk))) *
                  sizeof(double));
}

bool sum_squares_f32(const float* x, int64_t n, double* out, void* stream, Workspace ws) {
  if (n < 0) return invalid("sum_squares_f32: negative n");
  if (!out) return invalid("sum_squares_f32: null out");
  if (n > 0 && !x) return invalid("sum_squares_f32: null x");
  if (!check_workspace(ws, sum_squares_workspace_bytes(n), "sum_squares_f32")) return false;
  *out = n > 0 ? kernels::sum_squares_f32(x, n) : 0.0;
  return true;
}

bool scale_f32(float* x, int64_t n, float s, void* stream) {
  if (n < 0) return invalid("scale_f32: negative n");
  if (n == 0) return true;
  if (!x) return invalid("scale_f32: null x");
  kernels::scale_f32(x, n, s);
  return true;
}

bool scale_by_device_f32(float* x, int64_t n, const float* s, void* stream) {
  if (n < 0) return invalid("scale_by_device_f32: negative n");
  if (n == 0) return true;
  if (!x || !s) return invalid("scale_by_device_f32: null x or s");
  kernels::scale_f32(x, n, *s);
  return true;
}

bool all_finite_f32(const float* x, int64_t n, int* found_nonfinite, void* stream) {
  if (n < 0) return invalid("all_finite_f32: negative n");
  if (!found_nonfinite) return invalid("all_finite_f32: null found_nonfinite");
  if (n == 0) return true;
  if (!x) return invalid("all_finite_f32: null x");
  if (!kernels::all_finite_f32(x, n)) *found_nonfinite = 1;
  return true;
}

bool unscale_and_check(float* grads, int64_t n, float inv_scale, const float* loss_scale, int* found_inf,
                       void* stream) {
  if (n < 0) return invalid("unscale_and_check: negative n");
  if (!found_inf) return invalid("unscale_and_check: null found_inf");
  if (n == 0) return true;
  if (!grads) return invalid("unscale_and_check: null grads");
  unscale_check(grads, n, unscale_factor(inv_scale, loss_scale), found_inf);
  return true;
}

// ==== multi-tensor ===================================================================================

DeviceTensorListStorage::~DeviceTensorListStorage() { std::free(block_); }

bool DeviceTensorListStorage::build(const std::vector<DeviceTensorEntry>& entries) {
  if (entries.size() > static_cast<size_t>(INT32_MAX)) return invalid("DeviceTensorListStorage: too many tensors");
  const size_t count = entries.size();
  for (size_t i = 0; i < count; ++i) {
    if (entries[i].n < 0)
      return invalid("DeviceTensorListStorage: tensor " + std::to_string(i) + " has negative size");
  }
  // One host block: five pointer arrays, offsets, chunk offsets, decay flags.
  const size_t pointer_bytes = count * sizeof(void*);
  const size_t offset_bytes = (count + 1) * sizeof(int64_t);
  const size_t bytes = 5 * pointer_bytes + 2 * offset_bytes + count;
  std::free(block_);
  block_ = nullptr;
  list_ = DeviceTensorList{};
  void* block = std::malloc(bytes);
  if (!block) return invalid("DeviceTensorListStorage: out of memory");
  block_ = block;
  char* p = static_cast<char*>(block);
  auto take = [&](size_t n) {
    char* at = p;
    p += n;
    return at;
  };
  auto* params = reinterpret_cast<float**>(take(pointer_bytes));
  auto* grads = reinterpret_cast<float**>(take(pointer_bytes));
  auto* m = reinterpret_cast<float**>(take(pointer_bytes));
  auto* v = reinterpret_cast<float**>(take(pointer_bytes));
  auto* halves = reinterpret_cast<uint16_t**>(take(pointer_bytes));
  auto* offsets = reinterpret_cast<int64_t*>(take(offset_bytes));
  auto* chunk_offsets = reinterpret_cast<int64_t*>(take(offset_bytes));
  auto* decay = reinterpret_cast<uint8_t*>(take(count));
  bool all_params = true, all_grads = true, all_moments = true, any_half = false;
  offsets[0] = 0;
  chunk_offsets[0] = 0;
  for (size_t i = 0; i < count; ++i) {
    const DeviceTensorEntry& e = entries[i];
    params[i] = e.param;
    grads[i] = e.grad;
    m[i] = e.m;
    v[i] = e.v;
    halves[i] = e.param_f16;
    decay[i] = e.decay ? 1 : 0;
    offsets[i + 1] = offsets[i] + e.n;
    chunk_offsets[i + 1] = chunk_offsets[i] + ceil_div(e.n, kMultiTensorChunk);
    if (e.n > 0) {
      all_params = all_params && e.param;
      all_grads = all_grads && e.grad;
      all_moments = all_moments && e.m && e.v;
    }
    any_half = any_half || e.param_f16;
  }
  list_.params = all_params ? params : nullptr;
  list_.grads = all_grads ? grads : nullptr;
  list_.m = all_moments ? m : nullptr;
  list_.v = all_moments ? v : nullptr;
  list_.params_f16 = any_half ? halves : nullptr;
  list_.decay = decay;
  list_.offsets = offsets;
  list_.chunk_offsets = chunk_offsets;
  list_.count = static_cast<int>(count);
  list_.total = offsets[count];
  list_.total_chunks = chunk_offsets[count];
  return true;
}

size_t multi_tensor_workspace_bytes(const DeviceTensorList& list) {
  // The CUDA size (per-chunk partials and per-tensor ratios); the emulation keeps LAMB's per-tensor
  // sums of squares there, 2 doubles per tensor.
  const size_t chunks = static_cast<size_t>(std::max<int64_t>(list.total_chunks, 1));
  const size_t count = static_cast<size_t>(std::max(list.count, 1));
  return std::max(align_up(2 * chunks * sizeof(double)) + align_up(count * sizeof(double)),
                  align_up(2 * count * sizeof(double)));
}

bool adamw_step_multi(const DeviceTensorList& list, const MultiTensorStep& s, void* stream) {
  if (!check_list(list, "adamw_step_multi", true, true) || !check_step(s, "adamw_step_multi")) return false;
  if (skipped(s)) return true;
  const int64_t step = step_of(s);
  for (int i = 0; i < list.count; ++i) {
    const int64_t n = tensor_size(list, i);
    if (n == 0) continue;
    AdamWStepArgs a;  // engine/src/optimizer.cc's adamw_update
    a.param = list.params[i];
    a.grad = factored_grad(list.grads[i], n, s.grad_factor);
    a.m = list.m[i];
    a.v = list.v[i];
    a.n = n;
    a.step = step;
    a.lr = s.lr;
    a.beta1 = s.beta1;
    a.beta2 = s.beta2;
    a.eps = s.eps;
    a.weight_decay = tensor_decays(list, i) ? s.weight_decay : 0.f;
    kernels::adamw_step_f32(a);
    write_half_copy(list, i, a.param, n);
  }
  advance_step(s);
  return true;
}

bool lamb_update_multi(const DeviceTensorList& list, const MultiTensorStep& s, Workspace ws, void* stream) {
  if (!check_list(list, "lamb_update_multi", true, true) || !check_step(s, "lamb_update_multi")) return false;
  if (list.total_chunks == 0 || list.count == 0) return true;
  if (!ws.ptr) return invalid("lamb_update_multi: needs a workspace (shared with lamb_apply_multi)");
  if (!check_workspace(ws, multi_tensor_workspace_bytes(list), "lamb_update_multi")) return false;
  if (skipped(s)) return true;
  double* sums = static_cast<double*>(ws.ptr);  // [2 * count]: sum p^2, sum u^2 per tensor
  for (int i = 0; i < list.count; ++i) {
    const int64_t n = tensor_size(list, i);
    sums[2 * i] = sums[2 * i + 1] = 0.0;
    if (n == 0) continue;
    const LambUpdateArgs a = lamb_args(list, s, i, n, scratch_floats(t_update_scratch, n));
    kernels::lamb_update_f32(a);
    if (a.weight_decay != 0.f) {
      sums[2 * i] = kernels::sum_squares_f32(a.param, n);
      sums[2 * i + 1] = kernels::sum_squares_f32(a.update, n);
    }
  }
  return true;
}

bool lamb_apply_multi(const DeviceTensorList& list, const MultiTensorStep& s, Workspace ws, void* stream) {
  if (!check_list(list, "lamb_apply_multi", true, true) || !check_step(s, "lamb_apply_multi")) return false;
  if (list.total_chunks > 0 && list.count > 0) {
    if (!ws.ptr) return invalid("lamb_apply_multi: needs the workspace lamb_update_multi filled");
    if (!check_workspace(ws, multi_tensor_workspace_bytes(list), "lamb_apply_multi")) return false;
    if (skipped(s)) return true;
    const double* sums = static_cast<const double*>(ws.ptr);
    for (int i = 0; i < list.count; ++i) {
      const int64_t n = tensor_size(list, i);
      if (n == 0) continue;
      LambUpdateArgs a;
      a.param = list.params[i];
      a.m = list.m[i];
      a.v = list.v[i];
      a.n = n;
      a.step = step_of(s);
      a.beta1 = s.beta1;
      a.beta2 = s.beta2;
      a.eps = s.eps;
      a.weight_decay = tensor_decays(list, i) ? s.weight_decay : 0.f;
      float* update = scratch_floats(t_update_scratch, n);
      lamb_recompute_update(a, update);
      const double ratio = trust_ratio(a.weight_decay, sums[2 * i], sums[2 * i + 1]);
      kernels::lamb_apply_f32(list.params[i], update, n, static_cast<float>(s.lr * ratio));
      write_half_copy(list, i, list.params[i], n);
    }
  }
  advance_step(s);
  return true;
}

bool lamb_step_multi(const DeviceTensorList& list, const MultiTensorStep& s, void* stream, Workspace ws) {
  if (!check_list(list, "lamb_step_multi", true, true) || !check_step(s, "lamb_step_multi")) return false;
  if (list.total_chunks > 0 && !check_workspace(ws, multi_tensor_workspace_bytes(list), "lamb_step_multi"))
    return false;
  if (skipped(s)) return true;
  // Tensor by tensor exactly as engine/src/optimizer.cc's lamb_update: no workspace needed.
  for (int i = 0; i < list.count; ++i) {
    const int64_t n = tensor_size(list, i);
    if (n == 0) continue;
    const LambUpdateArgs a = lamb_args(list, s, i, n, scratch_floats(t_update_scratch, n));
    kernels::lamb_update_f32(a);
    double ratio = 1.0;
    if (a.weight_decay != 0.f)
      ratio = trust_ratio(a.weight_decay, kernels::sum_squares_f32(a.param, n), kernels::sum_squares_f32(a.update, n));
    kernels::lamb_apply_f32(list.params[i], a.update, n, static_cast<float>(s.lr * ratio));
    write_half_copy(list, i, list.params[i], n);
  }
  advance_step(s);
  return true;
}

bool global_grad_norm_multi(const DeviceTensorList& list, const GradNormOutputs& out, void* stream, Workspace ws) {
  if (!check_list(list, "global_grad_norm_multi", false, false)) return false;
  if (!(out.max_norm >= 0.f)) return invalid("global_grad_norm_multi: negative or NaN max_norm");
  if (!check_workspace(ws, multi_tensor_workspace_bytes(list), "global_grad_norm_multi")) return false;
  // engine/src/optimizer.cc: per-tensor sums of squares, added in registration order.
  double total = 0.0;
  for (int i = 0; i < list.count; ++i) {
    const int64_t n = tensor_size(list, i);
    if (n > 0) total += kernels::sum_squares_f32(list.grads[i], n);
  }
  if (out.sum_squares) *out.sum_squares = total;
  const double norm = std::sqrt(total);
  if (out.norm) *out.norm = static_cast<float>(norm);
  if (out.found_inf && !std::isfinite(total)) *out.found_inf = 1;
  if (out.clip_factor) {  // torch.nn.utils.clip_grad_norm_
    float factor = 1.f;
    if (out.max_norm > 0.f) {
      const double clip = static_cast<double>(out.max_norm) / (norm + 1e-6);
      if (clip < 1.0) factor = static_cast<float>(clip);
    }
    *out.clip_factor = factor;
  }
  return true;
}

bool scale_multi(const DeviceTensorList& list, const float* factor, void* stream) {
  if (!check_list(list, "scale_multi", false, false)) return false;
  if (!factor) return invalid("scale_multi: null factor");
  if (list.count == 0 || list.total_chunks == 0) return true;
  const float f = *factor;
  if (f == 1.f) return true;
  for (int i = 0; i < list.count; ++i) {
    const int64_t n = tensor_size(list, i);
    if (n > 0) kernels::scale_f32(list.grads[i], n, f);
  }
  return true;
}

bool unscale_and_check_multi(const DeviceTensorList& list, float inv_scale, const float* loss_scale, int* found_inf,
                             void* stream) {
  if (!check_list(list, "unscale_and_check_multi", false, false)) return false;
  if (!found_inf) return invalid("unscale_and_check_multi: null found_inf");
  if (list.count == 0 || list.total_chunks == 0) return true;
  const float f = unscale_factor(inv_scale, loss_scale);
  for (int i = 0; i < list.count; ++i) {
    const int64_t n = tensor_size(list, i);
    if (n > 0) unscale_check(list.grads[i], n, f, found_inf);
  }
  return true;
}

bool update_loss_scale(float* scale, int* found_inf, int* good_steps, int growth_interval, float growth, float backoff,
                       void* stream) {
  if (!scale || !found_inf || !good_steps) return invalid("update_loss_scale: null scale, found_inf or good_steps");
  if (growth_interval < 1) return invalid("update_loss_scale: growth_interval must be >= 1");
  if (!(growth >= 1.f) || !(backoff > 0.f && backoff <= 1.f))
    return invalid("update_loss_scale: growth must be >= 1 and backoff in (0, 1]");
  if (*found_inf) {  // torch.amp.GradScaler
    *scale = *scale * backoff;
    *good_steps = 0;
  } else {
    const int successful = *good_steps + 1;
    if (successful >= growth_interval) {
      const float grown = *scale * growth;
      if (!is_nonfinite(grown)) *scale = grown;
      *good_steps = 0;
    } else {
      *good_steps = successful;
    }
  }
  *found_inf = 0;
  return true;
}

}  // namespace bert::kernels::cuda
