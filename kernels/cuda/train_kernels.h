// CUDA training kernels, callable from plain C++ (no CUDA types here): the backward ops and losses of
// kernels/train.h (kernels/cuda/train_kernels.cu) and the optimizers, gradient clipping and dynamic
// loss scaling of kernels/optimizer.h (kernels/cuda/optimizer_kernels.cu), on device pointers.
// The launchers take the CPU variants' argument structs; every pointer in them is a device pointer.
// Storage is fp32. Gradients into parameters ACCUMULATE (+=) exactly where the CPU spec says so.
// Every launcher returns false on bad arguments or a failed launch (cuda_last_error() says why);
// `stream` is a cudaStream_t or nullptr (the default stream). Nothing here synchronizes with the host:
// results that the CPU versions return (loss sums, norms, "all finite") are written to device memory.
//
// Determinism: every reduction that produces a parameter gradient, a loss or a norm is done in two
// stages (fixed partitions into per-block partials in a workspace, then one ordered final reduce), so
// the same inputs give the same bits on every run. The embedding backward is deterministic too (no
// float atomics, see embed_backward_f32). Results are NOT bit-identical to the CPU variants (other
// summation orders), except dropout (masks and outputs bit-identical for the same seed and offset)
// and the plain scalings (scale_f32, unscale_and_check with a power-of-two scale).
//
// Compiled for sm_80 / sm_90a; the tests (tests/cuda_train_kernels_test.cc)
// skip without a GPU, which every machine this was written on lacked.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "kernels/optimizer.h"
#include "kernels/train.h"

namespace bert::kernels::cuda {

// Device scratch for the launchers that reduce in two stages. When `ptr` is null the launcher takes
// what it needs with cudaMallocAsync on the stream and frees it with cudaFreeAsync after its last
// kernel (stream-ordered, no host sync); pass a workspace of at least the launcher's
// *_workspace_bytes() to avoid that per call. One workspace must not be used by two launches that
// may run at the same time (different streams).
struct Workspace {
  void* ptr = nullptr;
  size_t bytes = 0;
};

// ==== backward ops ================================================================================

// LayerNorm backward (kernels/train.h): ds (may alias dy) and, when set, dgamma += and dbeta +=.
// Row statistics recomputed from s in fp32 (two passes); dgamma/dbeta are two-stage column sums.
size_t layernorm_backward_workspace_bytes(int64_t rows, int64_t cols);
bool layernorm_backward_f32(const LayerNormBackwardArgs& a, void* stream = nullptr, Workspace ws = {});

// Masked-softmax backward, in place on grad (one warp per row).
bool softmax_backward_f32(const SoftmaxBackwardArgs& a, void* stream = nullptr);

// Activation backward: grad *= f'(x) with the float derivatives of the CPU variant (ReLU is a select).
bool activation_backward_f32(const ActivationBackwardArgs& a, void* stream = nullptr);

// nn.Embedding(padding_idx): tokens whose id equals the table's padding index add nothing to that
// table (-1: no padding index; the CPU variant has none, its caller restores the pad rows instead).
struct EmbedPadding {
  int32_t word = -1;
  int32_t position = -1;
};
// Embedding backward: scatter-add of d_out rows into the tables (+=), deterministically and without
// atomics: tokens are taken in chunks of 32; per chunk the first token of each id sums that id's rows
// of the chunk (in token order) into a workspace partial; then the first token of each id overall
// adds that id's chunk partials (in token order) to the table row. Every table row is written by one
// thread per column. Ids must be valid rows of their table (the caller validates them).
size_t embed_backward_workspace_bytes(int64_t tokens, int64_t width);
bool embed_backward_f32(const EmbedBackwardArgs& a, void* stream = nullptr, Workspace ws = {},
                        EmbedPadding padding = {});

// out[c] += sum_r x[r * ld + c] (bias gradients), two-stage.
size_t column_sum_workspace_bytes(int64_t rows, int64_t cols);
bool column_sum_f32(const ColumnSumArgs& a, void* stream = nullptr, Workspace ws = {});

// Inverted dropout in place with the CPU's counter-based hash (SplitMix64 of seed and offset + i):
// the same seed and offset give the bit-identical mask and output the CPU variant gives.
bool dropout_f32(const DropoutArgs& a, void* stream = nullptr);

// out[i] = a[i] + b[i] (out may alias a or b): the residual sums the LayerNorm backward needs.
bool add_f32(const float* a, const float* b, float* out, int64_t n, void* stream = nullptr);
// dst[r * dst_ld + c] += src[r * src_ld + c] for r < rows, c < cols (gradient accumulation into strided rows).
bool add_rows_f32(const float* src, int64_t src_ld, float* dst, int64_t dst_ld, int64_t rows, int64_t cols,
                  void* stream = nullptr);

// ==== losses =====================================================================================
// One fused pass per row (cross-entropy) or per element (BCE, MSE) computes the loss terms and the
// gradient; the log-softmax of a row is never stored (an online max / sum-of-exp per thread, combined
// across the row, then one pass writing dlogits). The sum of exps and the losses are accumulated in
// double, like the CPU spec.

struct LossOptions {
  // Device memory receiving {sum of the counted rows' losses, count} (written, not accumulated);
  // nullptr: not computed. LossSum is the plain struct of kernels/train.h.
  LossSum* result = nullptr;
  // When true the gradient is additionally divided by the count of counted rows (targets !=
  // ignore_index, mask != 0, or n for MSE), taken on the device, so a mean needs no host sync; with
  // count 0 the gradient is 0. When false the gradient scale is a.grad_scale alone (the CPU API).
  bool mean = false;
  // Device scalar multiplying the gradient too (a dynamic loss scale); nullptr: 1.
  const float* grad_scale_device = nullptr;
};
// Enough for any of the three losses over `rows_or_elements` rows (cross-entropy) or elements.
size_t loss_workspace_bytes(int64_t rows_or_elements);

// Softmax cross-entropy (kernels/train.h CrossEntropyArgs): dlogits (if set; may alias logits) gets
// (softmax - onehot) * scale on counted rows and 0 on ignored ones. A warp per row up to 1024 classes,
// a block per row above (the MLM vocabulary). A target outside [0, classes) that is not ignore_index
// gives a NaN loss for its row (the CPU spec leaves it undefined).
bool cross_entropy_f32(const CrossEntropyArgs& a, const LossOptions& o = {}, void* stream = nullptr,
                       Workspace ws = {});
// BCE with logits over the entries with mask != 0 (mask nullptr: all).
bool bce_with_logits_f32(const BceWithLogitsArgs& a, const LossOptions& o = {}, void* stream = nullptr,
                         Workspace ws = {});
// Squared error terms; every entry counts.
bool mse_f32(const MseArgs& a, const LossOptions& o = {}, void* stream = nullptr, Workspace ws = {});

// ==== optimizers, clipping, loss scaling (kernels/cuda/optimizer_kernels.cu) ======================

// Single-tensor versions of kernels/optimizer.h on device pointers (float arithmetic in the CPU
// variant's order, without FMA contraction).
bool adamw_step_f32(const AdamWStepArgs& a, void* stream = nullptr);
bool lamb_update_f32(const LambUpdateArgs& a, void* stream = nullptr);
bool lamb_apply_f32(float* param, const float* update, int64_t n, float step_size, void* stream = nullptr);
// *out = sum x[i]^2 (double accumulation, two-stage; device double).
size_t sum_squares_workspace_bytes(int64_t n);
bool sum_squares_f32(const float* x, int64_t n, double* out, void* stream = nullptr, Workspace ws = {});
// x[i] *= s, with s a host value or a device scalar (read on the device: clipping without host sync).
bool scale_f32(float* x, int64_t n, float s, void* stream = nullptr);
bool scale_by_device_f32(float* x, int64_t n, const float* s, void* stream = nullptr);
// Sets *found_nonfinite = 1 (device int) when some x[i] is NaN or +-Inf; leaves it unchanged otherwise.
bool all_finite_f32(const float* x, int64_t n, int* found_nonfinite, void* stream = nullptr);

// ---- multi-tensor ---------------------------------------------------------------------------------
// A list of parameter tensors updated by one launch. The device arrays are built once by the caller
// (DeviceTensorListStorage does it). Each tensor is cut into chunks of kMultiTensorChunk elements;
// one CUDA block per chunk, so the partition (and every reduction) depends only on the sizes.
constexpr int64_t kMultiTensorChunk = 4096;

struct DeviceTensorList {
  float* const* params = nullptr;          // [count] device pointers to each tensor's fp32 values
  float* const* grads = nullptr;           // [count] their gradients
  float* const* m = nullptr;               // [count] first moments (AdamW, LAMB)
  float* const* v = nullptr;               // [count] second moments
  uint16_t* const* params_f16 = nullptr;   // [count] optional fp16 copies written after an update
                                           // (round to nearest even; the array or an entry may be null)
  const uint8_t* decay = nullptr;          // [count] 1: weight decay applies, 0: excluded (biases,
                                           // LayerNorm); the array null: every tensor decays
  const int64_t* offsets = nullptr;        // [count + 1] element offsets: tensor i has
                                           // offsets[i + 1] - offsets[i] elements
  const int64_t* chunk_offsets = nullptr;  // [count + 1] first chunk of each tensor:
                                           // chunk_offsets[i + 1] - chunk_offsets[i] = ceil(n_i / kMultiTensorChunk)
  int count = 0;
  int64_t total = 0;         // offsets[count]: elements in all
  int64_t total_chunks = 0;  // chunk_offsets[count]: the grid size
};

// One tensor for DeviceTensorListStorage::build (device pointers; m, v, param_f16 may be null when
// the list is only used for gradients).
struct DeviceTensorEntry {
  float* param = nullptr;
  float* grad = nullptr;
  float* m = nullptr;
  float* v = nullptr;
  int64_t n = 0;
  bool decay = true;
  uint16_t* param_f16 = nullptr;
};

// Owns the device arrays of a DeviceTensorList. build() allocates and copies them (synchronously);
// the tensors themselves stay owned by the caller.
class DeviceTensorListStorage {
 public:
  DeviceTensorListStorage() = default;
  ~DeviceTensorListStorage();
  DeviceTensorListStorage(const DeviceTensorListStorage&) = delete;
  DeviceTensorListStorage& operator=(const DeviceTensorListStorage&) = delete;
  bool build(const std::vector<DeviceTensorEntry>& entries);
  const DeviceTensorList& list() const { return list_; }

 private:
  void* block_ = nullptr;
  DeviceTensorList list_;
};

// Hyper-parameters and device-side controls of one multi-tensor optimizer step.
struct MultiTensorStep {
  float lr = 0.f;
  float beta1 = 0.9f, beta2 = 0.999f, eps = 1e-8f;
  float weight_decay = 0.f;  // applied to the tensors whose decay flag is set
  // Bias correction uses t = step (1-based, host value), or, when step_counter is set, t =
  // *step_counter + 1 read on the device: step_counter counts the steps taken and is incremented by
  // the launch unless it was skipped (so skipped overflow steps do not advance it).
  int64_t step = 1;
  int64_t* step_counter = nullptr;
  // Device flag: when *skip != 0 the launch changes nothing (e.g. the found_inf of unscale_and_check).
  const int* skip = nullptr;
  // Device scalar the gradients are multiplied by as they are read (unscaling and/or the clip factor
  // of global_grad_norm_multi fused into the update; gradients in memory are not changed). nullptr: 1.
  const float* grad_factor = nullptr;
};

// Workspace of the reducing multi-tensor launchers (LAMB, global norm).
size_t multi_tensor_workspace_bytes(const DeviceTensorList& list);

// AdamW (torch semantics, kernels/optimizer.h) on every tensor of the list: params, m, v updated
// (params_f16 written when given). No workspace.
bool adamw_step_multi(const DeviceTensorList& list, const MultiTensorStep& s, void* stream = nullptr);

// LAMB (apex FusedLAMB semantics, engine/src/optimizer.cc) on every tensor: m and v, the raw update u
// (recomputed, never stored), per-tensor trust ratios ||p|| / ||u|| where weight decay applies and
// both norms are > 0 (else 1), then p -= lr * ratio * u. lamb_update_multi updates m and v and leaves
// the norm partials in ws; lamb_apply_multi (same list, step and ws) takes the ratios and updates the
// parameters (and advances step_counter). lamb_step_multi runs both.
bool lamb_update_multi(const DeviceTensorList& list, const MultiTensorStep& s, Workspace ws, void* stream = nullptr);
bool lamb_apply_multi(const DeviceTensorList& list, const MultiTensorStep& s, Workspace ws, void* stream = nullptr);
bool lamb_step_multi(const DeviceTensorList& list, const MultiTensorStep& s, void* stream = nullptr,
                     Workspace ws = {});

// The global L2 norm of all gradients of the list in one launch plus a final reduce (double
// accumulation). Outputs (device; each may be null): sum_squares, norm = sqrt(sum_squares), found_inf
// set to 1 when the sum is not finite (unchanged otherwise), and clip_factor = what
// torch.nn.utils.clip_grad_norm_ scales by: max_norm / (norm + 1e-6) when max_norm > 0 and that is
// below 1, else 1 (pass it to scale_multi or as MultiTensorStep::grad_factor).
struct GradNormOutputs {
  double* sum_squares = nullptr;
  float* norm = nullptr;
  int* found_inf = nullptr;
  float* clip_factor = nullptr;
  float max_norm = 0.f;
};
bool global_grad_norm_multi(const DeviceTensorList& list, const GradNormOutputs& out, void* stream = nullptr,
                            Workspace ws = {});

// grads *= *factor (device scalar) on every tensor; nothing is written when *factor == 1.
bool scale_multi(const DeviceTensorList& list, const float* factor, void* stream = nullptr);

// Mixed precision: grads *= inv_scale / *loss_scale (loss_scale: device scalar, nullptr: 1) and
// *found_inf = 1 (device int, left unchanged otherwise) if any scaled gradient is NaN or +-Inf.
// found_inf is set, never cleared, here (update_loss_scale clears it). The flat form is one tensor.
bool unscale_and_check_multi(const DeviceTensorList& list, float inv_scale, const float* loss_scale, int* found_inf,
                             void* stream = nullptr);
bool unscale_and_check(float* grads, int64_t n, float inv_scale, const float* loss_scale, int* found_inf,
                       void* stream = nullptr);

// Dynamic loss scaling, one thread on the device (all pointers device memory), torch.amp.GradScaler
// semantics: if *found_inf: *scale *= backoff and *good_steps = 0 (the optimizer launches given
// skip = found_inf skipped the step); else ++*good_steps and, when it reaches growth_interval,
// *scale *= growth (kept only if finite) and *good_steps = 0. Then *found_inf = 0 for the next step.
// Arguments: growth_interval >= 1, growth >= 1, 0 < backoff <= 1.
bool update_loss_scale(float* scale, int* found_inf, int* good_steps, int growth_interval, float growth,
                       float backoff, void* stream = nullptr);

}  // namespace bert::kernels::cuda
