// Training API: forward + loss + backward for every architecture and head the engine runs.
//
//   auto trainer = bert::Trainer::Create(*model, {.max_batch = 32, .max_seq = 128});
//   bert::TrainLabels labels{.labels = y.data()};
//   auto loss = (*trainer)->ForwardBackward(batch, labels);   // Result<double>; gradients accumulate
//   for (const auto& g : (*trainer)->Gradients()) ...           // under HuggingFace parameter names
//
// A Trainer owns F32 master copies of the model's parameters and their gradients; the Model it was
// made from is not changed. Like a Session it belongs to one thread at a time and plans its buffers
// (every activation the backward needs) once for max_batch x max_seq.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "bert/comm.h"
#include "bert/engine.h"
#include "bert/status.h"

namespace bert {

enum class OptimizerKind {
  kAdamW,  // torch.optim.AdamW (decoupled weight decay, bias-corrected moments)
  kLamb,   // apex FusedLAMB as NVIDIA's BERT pre-training runs it (bias_correction=True, adam_w_mode,
           // use_nvlamb=False: the trust ratio only for tensors with weight decay)
};

struct OptimizerOptions {
  OptimizerKind kind = OptimizerKind::kAdamW;
  float lr = 5e-5f;  // the base learning rate; a step takes the lr to use (base * schedule factor)
  float beta1 = 0.9f, beta2 = 0.999f;
  float eps = 1e-8f;           // AdamW's default; LAMB users usually pass 1e-6 (NVIDIA's BERT recipe)
  float weight_decay = 0.01f;  // not applied to biases and LayerNorm weights
  float max_grad_norm = 1.0f;  // clip the global gradient norm to this; 0 = no clipping
};

// transformers.get_linear_schedule_with_warmup as a factor of the base learning rate:
//   step < warmup_steps: step / max(1, warmup_steps)
//   otherwise:           max(0, (total_steps - step) / max(1, total_steps - warmup_steps))
// `step` is the number of optimizer steps already taken (update k, 0-based, runs with lr_factor(k),
// as transformers calls scheduler.step() after optimizer.step()).
struct LinearSchedule {
  int64_t warmup_steps = 0, total_steps = 0;
  float lr_factor(int64_t step) const;
};

// How a trainer's GEMMs compute (the CPU backend runs kF32 only and refuses the others). kF32 is
// exact fp32; kTF32, kF16 and kBF16 run the GEMMs on tensor cores with their fp32 operands rounded to
// that type inside cuBLASLt and fp32 accumulation. Parameters (the fp32 masters), gradients, optimizer
// moments and activations stay fp32 in memory in every mode, as do LayerNorm, softmax and the losses.
enum class TrainPrecision { kF32, kTF32, kF16, kBF16 };
const char* train_precision_name(TrainPrecision p);  // "fp32", "tf32", "fp16", "bf16"

// Dynamic loss scaling (torch.amp.GradScaler semantics), used with TrainPrecision::kF16: the loss
// gradient is multiplied by the current scale, Step divides it out; a step whose gradients overflow
// is skipped (Step returns +inf, steps() does not advance) and the scale is multiplied by backoff;
// after growth_interval clean steps in a row it is multiplied by growth.
struct LossScaling {
  bool enabled = true;  // (kF16 only; the other precisions never scale)
  float init_scale = 65536.f;
  float growth = 2.f, backoff = 0.5f;
  int growth_interval = 2000;
};

struct TrainerOptions {
  int max_batch = 32;
  int max_seq = 128;
  int num_threads = 0;   // 0 = the OpenMP default
  float dropout = 0.1f;  // hidden, attention and classifier dropout; 0 = eval mode (HF-exact gradients)
  uint64_t seed = 0;     // the dropout stream (masks are regenerated from it, never stored)
  OptimizerOptions optimizer;
  TrainPrecision precision = TrainPrecision::kF32;  // CUDA: how the GEMMs compute
  LossScaling loss_scaling;                          // CUDA, kF16
  // Fused attention that keeps only each query row's log-sum-exp and recomputes the probabilities in
  // the backward (O(seq) instead of O(seq^2) memory per head): on backends with a fused training
  // attention kernel (CUDA); elsewhere Trainer::Create says none is registered.
  bool fused_attention = false;
  // Keep only each encoder layer's input and recompute the layer's activations just before its
  // backward (about one more forward pass of FLOPs for one layer's activations instead of all of them;
  // the same gradients, bit for bit). Every backend.
  bool recompute_activations = false;
  // Accumulate wall time per op of ForwardBackward (the network's ops, as SessionOptions.profile) and
  // of Step ("optimizer.step") into Trainer::Profile.
  bool profile = false;

  // Data-parallel training over the communicator's ranks (bert/comm.h; null or one rank = one
  // process). Every rank creates its Trainer from the same model (rank 0's parameters are broadcast
  // at creation) and calls the same Trainer methods in the same order; each ForwardBackward takes the
  // rank's share of a global batch with loss_scale = its rows / the global batch's rows, so the summed
  // gradient is the one-process gradient of the global batch. The gradients are summed across ranks
  // in buckets of about bucket_bytes, in the order the backward finishes them, while the rest of the
  // backward runs. The dropout masks differ per rank (each rank's stream mixes in its rank).
  std::shared_ptr<Communicator> communicator;
  int64_t bucket_bytes = 25 << 20;
  // 0: every rank holds the whole optimizer state (DDP). 1: the moments are sharded over the ranks
  // (gradients reduce-scattered, each rank updates its shard, parameters all-gathered) (ZeRO-1).
  // 2: as 1, and only the local gradient shard kept between steps (ZeRO-2): whole gradients exist
  // only while the backward writes them (buckets alive at different times share memory), every
  // micro-step reduces, and Gradients() is empty. Stages 1 and 2: host optimizer (CPU), AdamW.
  int zero_stage = 0;
};

// What a trainer holds in memory, per rank (bytes).
struct TrainerMemory {
  int64_t parameters = 0, gradients = 0, optimizer_state = 0, activations = 0;
  int64_t total() const { return parameters + gradients + optimizer_state + activations; }
};

// Data-parallel communication so far (zeros for one process).
struct TrainerCommStats {
  int world_size = 1, zero_stage = 0;
  int64_t synced_steps = 0;     // backward passes whose gradients were reduced
  int64_t bytes_per_step = 0;   // gradient bytes each rank puts into the collectives per synced step
  double wait_seconds = 0;      // time spent waiting for reductions after the backward had finished
};

// Labels of one batch, named as transformers names them. Only those the model's head uses are read.
struct TrainLabels {
  const int32_t* labels = nullptr;           // sequence classification [batch]; token classification,
                                             // masked LM, ELECTRA discriminator [batch, seq]; -100 = ignore
  const float* regression = nullptr;         // sequence classification with num_labels == 1 [batch] (MSE)
  const int32_t* sentence_labels = nullptr;  // pre-training [batch]: next_sentence_label (BERT),
                                             // sentence_order_label (ALBERT)
  const int32_t* start_positions = nullptr;  // question answering [batch] (clamped to [0, seq]; seq = ignore)
  const int32_t* end_positions = nullptr;
};

// One parameter's gradient (or value), as a dense F32 array.
struct NamedArray {
  std::string name;  // HuggingFace parameter name
  std::vector<int64_t> shape;
  std::vector<float> values;
};

class Trainer {
 public:
  static Result<std::unique_ptr<Trainer>> Create(std::shared_ptr<const Model> model, const TrainerOptions& options = {});
  ~Trainer();

  // Runs the model on the batch in training mode, computes the head's loss as transformers does
  // (mean over counted labels; pre-training: MLM + NSP/SOP; QA: (start + end) / 2) and ADDS the
  // gradient of loss * loss_scale to every parameter's gradient. Returns the (unscaled) loss.
  // Errors (bad ids or labels, a non-finite loss or gradient) name what is wrong; on error the
  // gradients are left as they were before the call only when the error is found before the backward.
  // With a communicator, sync_gradients = false (a micro-step of gradient accumulation that is not the
  // last) keeps the gradients local; the last micro-step syncs all that was accumulated.
  Result<double> ForwardBackward(const BatchInput& batch, const TrainLabels& labels, float loss_scale = 1.f,
                                 bool sync_gradients = true);
  // Data parallelism: a rank with no rows in a step's last micro-batch joins the reduction with this
  // instead (its accumulated gradients, maybe zero). A no-op for one process.
  Status SyncGradients();
  void ZeroGrad();

  // One optimizer update with learning rate `lr` from the accumulated gradients (clipped by global
  // norm first), then the gradients are zeroed. Returns the global gradient norm before clipping.
  // A NaN/Inf gradient is an error naming the first bad parameter; nothing changes then. With
  // dynamic loss scaling (CUDA, fp16) an overflow is not an error: the step is skipped, the
  // gradients are zeroed, the scale backs off and Step returns +inf.
  Result<double> Step(float lr);
  int64_t steps() const;  // optimizer updates so far (skipped overflow steps do not count)
  float loss_scale() const;  // the current dynamic loss scale (1 unless TrainPrecision::kF16 scales)

  TrainerMemory Memory() const;
  TrainerCommStats CommStats() const;
  // Per-op times accumulated since creation (empty unless TrainerOptions.profile): the network's
  // forward and backward ops (GEMM ops name their implementation, OpProfile::impl), the gradient
  // check ("check.finite") and the optimizer ("optimizer.step").
  std::vector<OpProfile> Profile() const;
  // A checksum of the parameters' bits (data parallelism: equal on every rank after every step).
  uint64_t ParameterChecksum() const;

  // A Model of the current parameters (to evaluate with a Session), and the same as an engine file.
  // With a communicator, Save, SaveCheckpoint and LoadCheckpoint are collective (every rank calls
  // them; rank 0 writes the file; every rank reads it); checkpoints have the one-process format
  // whatever the world size or ZeRO stage, so a run resumes on any number of ranks.
  Result<std::shared_ptr<const Model>> Snapshot() const;
  Status Save(const std::string& path) const;
  // A checkpoint: the engine file of the current parameters plus the optimizer state, the dropout
  // stream position and `state` (the caller's JSON), written atomically. bert_run reads it as a
  // model. LoadCheckpoint restores all of it into a trainer of the same model and returns `state`;
  // training then continues bit-identically to a run that never stopped (same thread count).
  Status SaveCheckpoint(const std::string& path, const std::string& state) const;
  Result<std::string> LoadCheckpoint(const std::string& path);

  // Every parameter's gradient under its HF name and HF shape (fused Q/K/V split back; a tied MLM
  // decoder's gradient is part of the word embeddings', as in PyTorch), divided by loss_scale().
  std::vector<NamedArray> Gradients() const;

  const TrainerOptions& options() const;
  struct Impl;

 private:
  explicit Trainer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace bert
