// The engine's public C++ API: load a model file, open a session, run batches, read outputs.
//
//   auto model = bert::Model::Load("model.bert");              // Result<shared_ptr<const Model>>
//   auto session = bert::Session::Create(*model, {.max_batch = 8, .max_seq = 128});
//   bert::Status st = (*session)->Run({.batch = 2, .seq = 16, .input_ids = ids.data(),
//                                      .attention_mask = mask.data()});
//   auto logits = (*session)->Output("logits");               // Result<OutputView>
//
// Errors are values (Status / Result); nothing here throws or exits. No oneDNN or CUDA types appear
// in this header. A Model is immutable and shared by any number of sessions; a Session belongs to
// one thread at a time and plans its workspace once, for its largest batch x sequence.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "bert/status.h"

namespace bert {

enum class Device { kCpu, kCuda };

// What the model computes in (engine/model/precision.h decides each op site from it). Only the encoder's
// linear layers change; embeddings, attention, softmax, LayerNorm, residuals, pooler and heads stay fp32.
// CPU: fp32; bf16 (bf16 weights, activations rounded to bf16 per GEMM, fp32 accumulation; needs a CPU on
// which oneDNN has a bf16 matmul: AVX-512); int8 (per-output-channel int8 weights, activations quantised
// per GEMM with one dynamic scale, or calibrated ranges after Session::Calibrate; int32 accumulation;
// 7-bit weights on CPUs without VNNI). CUDA: fp32 (TF32 tensor cores only with allow_tf32), fp16 or bf16
// tensor-core GEMMs with fp32 accumulation on fp32 storage; int8 is refused there.
enum class Precision { kF32, kF16, kInt8, kBF16 };
const char* precision_name(Precision p);  // "fp32", "fp16", "int8", "bf16"

struct LoadOptions {
  Device device = Device::kCpu;
  Precision precision = Precision::kF32;
  // Reorder the GEMM weights once into oneDNN's blocked layout (CPU; faster; a second copy of them).
  bool pack_weights = true;
  bool allow_tf32 = false;  // CUDA fp32: let cuBLASLt use TF32 tensor cores (about 1e-3 relative error)
  // A weight that is NaN or infinite is an error naming the tensor, unless this is set.
  bool allow_non_finite = false;
};

// What a loaded model is, as config.json described it.
struct ModelInfo {
  std::string model_type;    // config.json's: "bert", "roberta", "xlm-roberta", "distilbert", "electra", ...
  std::string family;        // what the engine runs it as: bert, roberta, distilbert, electra, albert, squeezebert
  std::string architecture;  // "BertForSequenceClassification", ... (may be empty)
  std::string head;          // "none", "sequence_classification", "token_classification",
                             // "question_answering", "masked_lm", "pretraining", "discriminator"
  int64_t vocab_size = 0, hidden_size = 0, num_layers = 0, num_heads = 0, intermediate_size = 0;
  int64_t max_position_embeddings = 0, type_vocab_size = 0, num_labels = 0;
  int64_t embedding_size = 0;     // width of the embedding tables (ALBERT, ELECTRA: less than hidden_size)
  int64_t num_layer_weights = 0;  // distinct layer weight sets (ALBERT shares one set over all layers)
  int64_t max_seq = 0;            // longest sequence the position table allows
  std::vector<std::string> labels;  // id2label
  std::string weights_dtype;        // as stored in the file: "F32", "F16", "BF16"
  std::string cpu_isa;              // kernels chosen at load: "avx512", "avx2", "scalar"
  std::string device;               // "cpu", or "cuda: <GPU name>"
  std::string precision;            // "fp32", "fp16", "int8", "bf16"
  std::string precision_detail;     // what each site stores and computes in; int8 weight bits (7 without VNNI)
  size_t device_weight_bytes = 0;   // weights uploaded to the GPU (CUDA)
};

class Model {
 public:
  // `path` is an engine file (tools/convert_weights) or an HF directory (converted in memory).
  static Result<std::shared_ptr<const Model>> Load(const std::string& path, const LoadOptions& options = {});
  ~Model();

  const ModelInfo& info() const;
  // The WordPiece vocab embedded in the file (empty if it had none) and its casing.
  const std::vector<std::string>& vocab() const;
  bool lower_case() const;
  // Floating-point operations of one forward pass over batch x seq (multiply-add = 2): every linear
  // layer (grouped ones count their groups' share), QK^T and PV, pooler and head. For rate counters.
  double forward_flops(int64_t batch, int64_t seq) const;
  // Output names a session of this model produces (hidden_states.* only with keep_hidden_states,
  // sentence_embedding only with pooling).
  std::vector<std::string> output_names(bool with_hidden_states, bool with_sentence_embedding = false) const;

  struct Impl;
  const Impl& impl() const { return *impl_; }

 private:
  explicit Model(std::unique_ptr<Impl> impl);
  friend Result<std::shared_ptr<const Model>> make_model(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// How Session turns token states into one sentence_embedding [batch, hidden] per sequence.
enum class Pooling {
  kNone,  // no sentence_embedding output
  kCls,   // the first token's state
  kMean,  // the mean over tokens the attention mask keeps (sentence-transformers' default)
  kMax,   // the element-wise max over those tokens
};

// The most OpenMP threads a session or trainer (and every tool's --threads) accepts: beyond it
// OpenMP runtimes fail in ways that are not errors (a crash at 99999).
inline constexpr int kMaxThreads = 1024;

struct SessionOptions {
  int max_batch = 8;                // largest batch Run accepts
  int max_seq = 0;                  // largest sequence length; 0 = max_position_embeddings
  int num_threads = 0;              // OpenMP threads for this session's work; 0 = the default; <= kMaxThreads
  bool keep_hidden_states = false;  // also output hidden_states.0 .. hidden_states.L
  bool profile = false;             // accumulate wall time per op (see Session::Profile)
  Pooling pooling = Pooling::kNone; // also output sentence_embedding [batch, hidden]
  bool normalize = false;           // L2-normalise sentence_embedding (needs pooling)
  // Padding removal: the encoder runs on the batch's real tokens only (attention per sequence on the
  // packed rows), so its cost follows the real token count, not batch x seq. Each sequence's real
  // tokens must come first (mask 1..1 0..0). Outputs keep the padded shape: hidden states are 0 at
  // padded positions, per-token head outputs there are the head applied to that zero state (read
  // only the real positions). Needs a fused attention kernel on the backend.
  bool remove_padding = false;
  // CUDA: false keeps the outputs on the GPU (for benchmarks: Output() then says so).
  bool copy_outputs = true;
  // CUDA graphs: not used by the shared network yet (sessions launch eagerly); kept for compatibility.
  bool cuda_graphs = true;
};

// Wall time spent in one kind of op over all profiled runs.
struct OpProfile {
  std::string op;  // "embed", "gemm.qkv", "attention.scores", "softmax", "attention.context", ...
  double seconds = 0;
  int64_t calls = 0;
  // GEMM ops: the implementation that ran them (oneDNN's impl_info_str on the CPU: "brg:avx512_core",
  // "gemm:jit", ...; several, in order of first use, joined by ", "); empty for other ops.
  std::string impl;
  // "op" or "op [impl]", as profiles print it.
  std::string display_name() const { return impl.empty() ? op : op + " [" + impl + "]"; }
};

// One batch, row-major [batch, seq]. attention_mask (1 = token, 0 = padding) defaults to all ones,
// token_type_ids to all zeros (models without token types, like DistilBERT, accept only zeros). The pointers must stay valid during Run only.
struct BatchInput {
  int batch = 0;
  int seq = 0;
  const int32_t* input_ids = nullptr;
  const int32_t* attention_mask = nullptr;
  const int32_t* token_type_ids = nullptr;
};

// An output of the last Run: valid until the next Run or the session's end.
struct OutputView {
  std::string name;
  std::vector<int64_t> shape;
  const float* data = nullptr;
  int64_t numel() const {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    return n;
  }
};

class Session {
 public:
  static Result<std::unique_ptr<Session>> Create(std::shared_ptr<const Model> model, const SessionOptions& options = {});
  ~Session();

  // Validates the batch (shape within the plan, token ids < vocab, token types < type vocab,
  // mask values 0/1) and runs the model. On error nothing is written.
  Status Run(const BatchInput& input);
  // Outputs of the last successful Run under HuggingFace's names: last_hidden_state, pooler_output,
  // logits, start_logits, end_logits, prediction_logits, seq_relationship_logits, sop_logits,
  // hidden_states.i; and sentence_embedding when the session pools.
  Result<OutputView> Output(std::string_view name) const;
  std::vector<std::string> OutputNames() const;

  // int8 calibration: runs the batch and records the range (max |x|) of every int8 layer's input; later
  // Runs quantise with the recorded ranges (static scales) instead of measuring each batch. Calls
  // accumulate (the largest range wins). An error for sessions of a model that is not int8.
  Status Calibrate(const BatchInput& input);

  // Per-op times accumulated since creation (empty unless SessionOptions.profile). On CUDA each op
  // is synchronized for its time, so profiled runs are slower.
  std::vector<OpProfile> Profile() const;
  // CUDA: the last Run's wall time including its uploads, forward and copies back; CPU: 0.
  double LastRunDeviceSeconds() const;

  const SessionOptions& options() const;
  // Bytes of activation workspace planned at creation.
  size_t workspace_bytes() const;

  struct Impl;

 private:
  explicit Session(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace bert
