// Internals of the shared network (engine/model/network.cc, heads.cc): the activation plan, the ops
// the blocks are written in (linear, its backward, LayerNorm, dropout...) on top of the backend, and
// the head interface. Every head lives in one class in heads.cc: its buffers, forward, named outputs,
// loss and backward.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "engine/model/network.h"

namespace bert::model {

// A region of the activation plan (offset in floats into the one allocation).
struct Buf {
  size_t offset = SIZE_MAX;
  bool planned() const { return offset != SIZE_MAX; }
};

// Lays out regions once, allocates them in one backend allocation.
class Plan {
 public:
  Buf add(size_t floats) {
    Buf b{size_};
    size_ += (floats + 63) / 64 * 64;  // 256-byte aligned regions
    return b;
  }
  Status allocate(runtime::Backend& backend);
  float* operator()(Buf b) const { return b.planned() ? base_ + b.offset : nullptr; }
  template <typename T>
  T* as(Buf b) const { return reinterpret_cast<T*>((*this)(b)); }
  size_t bytes() const { return size_ * sizeof(float); }

 private:
  runtime::DeviceBuffer memory_;
  float* base_ = nullptr;
  size_t size_ = 0;
};

// Dropout sites: a (stream, site) pair regenerates the same mask in the backward.
enum DropoutSite : uint64_t { kEmbedSite = 1, kClassifierInSite = 2, kClassifierHiddenSite = 3, kLayerBaseSite = 16 };
inline uint64_t layer_site(int64_t layer, uint64_t k) { return uint64_t(kLayerBaseSite) + uint64_t(layer) * 4 + k; }

// The blocks the network is written in, on the backend; every call records the first failure and
// later calls do nothing, so blocks read like the model's figure and are checked once at the end.
class Ops {
 public:
  Ops(runtime::Backend& be, const ModelConfig& c, bool profile) : be_(be), c_(c), profile_(profile) {}

  runtime::Backend& backend() { return be_; }
  Status status() const { return failed_; }
  void reset() { failed_ = Status::Ok(); }
  bool ok() const { return failed_.ok(); }
  void check(Status st) {
    if (!st.ok() && failed_.ok()) failed_ = st;
  }
  void set_dropout(float p, uint64_t stream) { p_ = p, stream_ = stream; }

  // y = act(x W^T + b) over M rows of x (row stride ldx; 0 = dense).
  void linear(const char* op, const float* x, const Linear& lin, float* y, int64_t M,
              kernels::Activation act = kernels::Activation::kIdentity, int64_t ldx = 0);
  // dx (= or +=) dy W; dW += dy^T x; db += colsum(dy). Rows of x and dx have stride ldx (0 = K).
  // Profiled as "backward.<op>.dx", "backward.<op>.dW" and "backward.<op>.db".
  void linear_backward(const char* op, const Linear& lin, const Linear& grad, const float* x, const float* dy,
                       float* dx, int64_t M, bool accumulate_dx, int64_t ldx = 0);
  // y = LN(x + residual) (residual may be null).
  void layernorm(const float* x, const float* residual, const LayerNormWeights& ln, float* y, int64_t rows,
                 int64_t cols);
  void layernorm_backward(const float* s, const LayerNormWeights& ln, const LayerNormWeights& grad, const float* dy,
                          float* ds, int64_t rows, int64_t cols);
  void activation(float* x, int64_t n, kernels::Activation a);
  // y = act(x) on [rows, cols] as a linear layer's epilogue computes it (Backend::linear_activation).
  void linear_activation(const float* x, float* y, int64_t rows, int64_t cols, kernels::Activation a);
  void activation_backward(const float* pre, float* grad, int64_t n, kernels::Activation a);
  // x = drop(x), or x = drop(src) when src is given (a copy when nothing drops), at a dropout site.
  void dropout(float* x, int64_t n, uint64_t site, const float* src = nullptr);
  bool dropping() const { return p_ > 0; }
  uint64_t stream() const { return stream_; }
  void copy(const float* src, float* dst, int64_t n);
  void add(const float* a, const float* b, float* out, int64_t n);  // out = a + b (residuals)
  void batched_matmul(const char* op, const kernels::BatchedMatmulArgs& a);

  // Times a scope into the profile (synchronising the backend) when profiling; a scope that ran a
  // GEMM also records the backend's implementation of it (OpProfile::impl).
  class Timed {
   public:
    // The op's name is op, or op + suffix (built only when profiling).
    Timed(Ops& ops, const char* op, const char* suffix = nullptr);
    ~Timed();

   private:
    Ops& ops_;
    std::string op_;
    uint64_t gemm_calls_ = 0;
    std::chrono::steady_clock::time_point start_;
  };
  std::vector<OpProfile> profile;

 private:
  runtime::Backend& be_;
  const ModelConfig& c_;
  bool profile_;
  Status failed_;
  float p_ = 0.f;
  uint64_t stream_ = 0;
};

// One head: its buffers, forward (outputs), loss and backward. Heads run the same code in both modes
// (dropout is off in inference); they read the last hidden state [T, H] and the pooler output.
class Head {
 public:
  virtual ~Head() = default;
  // The names publish() gives its outputs, in order.
  virtual std::vector<std::string> output_names() const = 0;
  // The labels this head's loss reads, checked against the model's sizes (the first bad one named).
  virtual Status check_labels(const TrainLabels& y, int64_t B, int64_t S) const = 0;
  virtual void plan(Plan& p, int64_t B, int64_t S, bool training) = 0;
  virtual void forward(Network::Impl& n, int64_t B, int64_t S) = 0;
  virtual void publish(Network::Impl& n, int64_t B, int64_t S) = 0;
  // Uploads the labels, computes the loss terms and adds d(loss)/d(last) into n.d_h (and the pooler's
  // gradient through n.pooler_backward).
  virtual void loss_backward(Network::Impl& n, const TrainLabels& y, int64_t B, int64_t S, float loss_scale,
                             const BertWeights& g) = 0;
};
std::unique_ptr<Head> make_head(const ModelConfig& c);

// What the network keeps of one encoder layer for the backward (training), or reuses per layer
// (inference: qkv, probs, ctx, a, f_act only).
struct LayerActs {
  Buf qkv;    // [T, 3H] (fused) or three [T, H] planes (grouped)
  Buf probs;  // [B, nh, S, S] softmax output (unfused attention), before dropout
  Buf lse;    // [B, nh, S] (fused attention, training)
  Buf ctx;    // [T, H]
  Buf s1;     // [T, H] attention output + residual: the first LayerNorm's input (training)
  Buf a;      // [T, H] the first LayerNorm's output
  Buf f_pre;  // [T, I] before the activation (training)
  Buf f_act;  // [T, I] after it
  Buf s2;     // [T, H] FFN output + residual (training)
};

// A loss term: weight * sum / count of a LossSum slot (0 when nothing counted).
struct LossTerm {
  size_t slot = 0;  // index into Network::Impl::losses
  double weight = 1.0;
};

struct Network::Impl {
  const ModelConfig* c = nullptr;
  const BertWeights* w = nullptr;
  NetworkOptions o;
  std::function<void(int64_t)> gradients_ready;  // Network::set_gradients_ready
  std::unique_ptr<Ops> ops;
  std::unique_ptr<Head> head;
  Plan plan;
  bool fused_attention = false;

  // Inputs (backend memory) and host staging.
  Buf ids, mask, types, positions;
  // Padding removal: [B + 1] row offsets of each sequence's real tokens, each packed row's padded
  // position, and the padded copies of the published hidden states (zero at padded positions).
  Buf seq_starts, row_index;
  std::vector<Buf> padded_hidden;
  const int32_t* d_seq_starts = nullptr;
  const int32_t* d_row_index = nullptr;
  std::vector<int32_t> host_positions;
  std::vector<int32_t> host_ints;  // padding removal: packed ids, positions, types, row index, offsets
  const int32_t* d_ids = nullptr;  // this run's inputs on the backend (mask / types null when absent)
  const int32_t* d_mask = nullptr;
  const int32_t* d_types = nullptr;
  const int32_t* d_positions = nullptr;
  const int32_t* d_key_mask = nullptr;  // what attention masks with (null when packed)

  // Embeddings and encoder.
  Buf emb_sum, emb_out;        // [T, E] (training: the sum before the LayerNorm; inference: the E-wide output)
  std::vector<Buf> hidden;     // hidden_states.i [T, H]: every layer's (training / keep_hidden_states) or two slots
  std::vector<LayerActs> acts; // per layer (training), or one reused
  Buf tmp, probs_drop;
  Buf attention_scratch;  // fused attention backward: [B, nh, S]
  // Pooler: pre-activation and output [B, H].
  Buf pooled_pre, pooled;
  Buf sentence;  // sentence_embedding [B, H]
  // Backward scratch.
  Buf d_h, d_a, d_tmp, d_ctx, d_qkv, d_ffn, d_probs, d_emb;
  Buf losses;  // LossSum slots
  std::vector<LossTerm> loss_terms;

  std::vector<DeviceOutput> outputs;  // reused entries: a run allocates nothing
  size_t published = 0;
  std::vector<std::string> hidden_names;

  int64_t B = 0, S = 0, T = 0;  // this run's batch; T = the rows the encoder runs (real tokens when packed)

  float* at(Buf b) const { return plan(b); }
  float* hidden_at(int64_t layer) const {
    return plan(hidden[hidden.size() == 2 ? static_cast<size_t>(layer % 2) : static_cast<size_t>(layer)]);
  }
  LayerActs& acts_of(int64_t layer) { return acts[acts.size() == 1 ? 0 : static_cast<size_t>(layer)]; }
  // hidden_states.layer in the padded [B, S, H] layout the heads and outputs read.
  float* padded_hidden_at(int64_t layer) const {
    if (!o.remove_padding) return hidden_at(layer);
    return plan(padded_hidden[padded_hidden.size() == 1 ? 0 : static_cast<size_t>(layer)]);
  }
  float* last_hidden() const { return padded_hidden_at(c->num_layers); }
  // Padding removal: checks the mask, packs the batch's real tokens and uploads the packed inputs.
  Status pack_inputs(const BatchInput& in);
  // Padding removal: hidden_states.layer scattered back to the padded layout (zeros at padding).
  void unpack_hidden(int64_t layer);
  void publish(std::string_view name, std::initializer_list<int64_t> shape, const float* data);
  // Uploads host ints into a planned int32 region and returns its backend pointer.
  const int32_t* upload_ints(Buf dst, const int32_t* src, int64_t n);
  // A loss slot of this run: the head adds LossSum terms.
  kernels::LossSum* loss_slot(size_t i) const { return reinterpret_cast<kernels::LossSum*>(plan(losses)) + i; }

  void embeddings();
  void layer_forward(int64_t l);
  void attention_forward(int64_t l, const LayerWeights& lw, LayerActs& sv);
  void pooler_forward();
  void pooler_backward(float* d_pooled, const BertWeights& g);
  void layer_backward(int64_t l, const BertWeights& g);
  void embeddings_backward(const BertWeights& g);
  // The fused attention kernel's arguments for this run (mask or packed offsets, 1/sqrt(head_dim)).
  kernels::AttentionArgs attention_args(const float* q, const float* k, const float* v, int64_t ld, float* out) const;
  // Q, K, V of a qkv buffer: pointers and row stride.
  void qkv_views(float* base, const LayerWeights& lw, float** q, float** k, float** v, int64_t* ld) const;
};

}  // namespace bert::model
