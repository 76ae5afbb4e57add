// check(args) for every op: the argument rules each header states, shared by every implementation
// (ref, CPU ISAs, and later CUDA). Errors are InvalidArgument naming the op and the field.
#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <string>

#include "kernels/registry.h"

namespace bert::kernels {

namespace {

constexpr int64_t kF = sizeof(float);
constexpr int64_t kI = sizeof(int32_t);

Status bad(const char* op, const std::string& what) { return invalid_argument(std::string(op) + ": " + what); }

// Sizes must be >= 0 (named in the message) and their product in bytes representable.
Status sizes(const char* op, std::initializer_list<std::pair<const char*, int64_t>> dims, int64_t elem_bytes,
             int64_t* total_bytes) {
  int64_t n = elem_bytes;
  for (const auto& [name, d] : dims) {
    if (d < 0) return bad(op, std::string(name) + " is " + std::to_string(d) + " (must be >= 0)");
  }
  for (const auto& [name, d] : dims) {
    if (__builtin_mul_overflow(n, d, &n)) return bad(op, "the sizes overflow 64-bit byte counts");
  }
  *total_bytes = n;
  return Status::Ok();
}

Status need(const char* op, const void* p, const char* name) {
  return p ? Status::Ok() : bad(op, std::string(name) + " is null");
}

bool overlap(const void* a, int64_t abytes, const void* b, int64_t bbytes) {
  if (!a || !b || abytes <= 0 || bbytes <= 0) return false;
  const auto x = reinterpret_cast<uintptr_t>(a), y = reinterpret_cast<uintptr_t>(b);
  return x < y + static_cast<uintptr_t>(bbytes) && y < x + static_cast<uintptr_t>(abytes);
}

// out may be exactly `in` (same start, same extent) or disjoint from it.
Status same_or_disjoint(const char* op, const void* out, const char* out_name, const void* in, const char* in_name,
                        int64_t bytes) {
  if (out == in || !overlap(out, bytes, in, bytes)) return Status::Ok();
  return bad(op, std::string(out_name) + " partially overlaps " + in_name + " (must be the same array or disjoint)");
}

Status disjoint(const char* op, const void* a, int64_t abytes, const char* aname, const void* b, int64_t bbytes,
                const char* bname) {
  if (!overlap(a, abytes, b, bbytes)) return Status::Ok();
  return bad(op, std::string(aname) + " overlaps " + bname);
}

#define BERT_TRY(expr)                \
  do {                                \
    if (Status st_ = (expr); !st_.ok()) return st_; \
  } while (0)

// Bytes spanned by `rows` rows of `cols` elements with row stride ld (elements), or -2 on overflow.
int64_t strided_bytes(int64_t rows, int64_t cols, int64_t ld, int64_t elem) {
  if (rows <= 0 || cols <= 0) return 0;
  int64_t n = 0;
  if (__builtin_mul_overflow(rows - 1, ld, &n) || __builtin_add_overflow(n, cols, &n) ||
      __builtin_mul_overflow(n, elem, &n))
    return -2;
  return n;
}

}  // namespace

Status check(const LayerNormArgs& a) {
  const char* op = "layernorm";
  int64_t bytes = 0;
  BERT_TRY(sizes(op, {{"rows", a.rows}, {"cols", a.cols}}, kF, &bytes));
  if (bytes == 0) return Status::Ok();
  BERT_TRY(need(op, a.x, "x"));
  BERT_TRY(need(op, a.gamma, "gamma"));
  BERT_TRY(need(op, a.beta, "beta"));
  BERT_TRY(need(op, a.y, "y"));
  BERT_TRY(same_or_disjoint(op, a.y, "y", a.x, "x", bytes));
  if (a.residual) BERT_TRY(same_or_disjoint(op, a.y, "y", a.residual, "residual", bytes));
  BERT_TRY(disjoint(op, a.y, bytes, "y", a.gamma, a.cols * kF, "gamma"));
  BERT_TRY(disjoint(op, a.y, bytes, "y", a.beta, a.cols * kF, "beta"));
  return Status::Ok();
}

Status check(const SoftmaxMaskedArgs& a) {
  const char* op = "softmax_masked";
  int64_t bytes = 0;
  BERT_TRY(sizes(op, {{"batch", a.batch}, {"heads", a.heads}, {"q_len", a.q_len}, {"k_len", a.k_len}}, kF, &bytes));
  if (bytes == 0) return Status::Ok();
  BERT_TRY(need(op, a.scores, "scores"));
  BERT_TRY(disjoint(op, a.scores, bytes, "scores", a.key_mask, a.batch * a.k_len * kI, "key_mask"));
  return Status::Ok();
}

Status check(const ActivationArgs& a) {
  const char* op = "activation";
  int64_t bytes = 0;
  BERT_TRY(sizes(op, {{"n", a.n}}, kF, &bytes));
  if (bytes == 0) return Status::Ok();
  return need(op, a.x, "x");
}

Status check(const EmbedArgs& a) {
  const char* op = "embed";
  int64_t bytes = 0;
  BERT_TRY(sizes(op, {{"tokens", a.tokens}, {"width", a.width}}, kF, &bytes));
  if (bytes == 0) return Status::Ok();
  BERT_TRY(need(op, a.input_ids, "input_ids"));
  BERT_TRY(need(op, a.word_table, "word_table"));
  BERT_TRY(need(op, a.out, "out"));
  if ((a.gamma == nullptr) != (a.beta == nullptr)) return bad(op, "gamma and beta must both be given or both null");
  const int64_t ids = a.tokens * kI;
  BERT_TRY(disjoint(op, a.out, bytes, "out", a.input_ids, ids, "input_ids"));
  BERT_TRY(disjoint(op, a.out, bytes, "out", a.positions, ids, "positions"));
  BERT_TRY(disjoint(op, a.out, bytes, "out", a.token_types, ids, "token_types"));
  BERT_TRY(disjoint(op, a.out, bytes, "out", a.gamma, a.width * kF, "gamma"));
  BERT_TRY(disjoint(op, a.out, bytes, "out", a.beta, a.width * kF, "beta"));
  BERT_TRY(disjoint(op, a.out, bytes, "out", a.word_table, a.width * kF, "word_table"));
  return Status::Ok();
}

Status check(const ConvertArgs& a) {
  const char* op = a.to_f32 ? "convert_to_f32" : "convert_from_f32";
  int64_t n4 = 0;
  BERT_TRY(sizes(op, {{"n", a.n}}, 4, &n4));
  if (n4 == 0) return Status::Ok();
  BERT_TRY(need(op, a.src, "src"));
  BERT_TRY(need(op, a.dst, "dst"));
  const int64_t n2 = a.n * 2;
  return disjoint(op, a.dst, a.to_f32 ? n4 : n2, "dst", a.src, a.to_f32 ? n2 : n4, "src");
}

Status check(const PoolArgs& a) {
  const char* op = "pool_tokens";
  int64_t bytes = 0;
  BERT_TRY(sizes(op, {{"batch", a.batch}, {"seq", a.seq}, {"width", a.width}}, kF, &bytes));
  if (a.batch == 0 || a.width == 0) return Status::Ok();
  if (a.kind == TokenPooling::kCls && a.seq == 0) return bad(op, "CLS pooling needs seq >= 1");
  BERT_TRY(need(op, a.hidden, "hidden"));
  BERT_TRY(need(op, a.out, "out"));
  const int64_t out_bytes = a.batch * a.width * kF;
  BERT_TRY(disjoint(op, a.out, out_bytes, "out", a.hidden, bytes, "hidden"));
  BERT_TRY(disjoint(op, a.out, out_bytes, "out", a.mask, a.batch * a.seq * kI, "mask"));
  return Status::Ok();
}

Status check(const AttentionArgs& a) {
  const char* op = "attention";
  int64_t bytes = 0;
  BERT_TRY(sizes(op, {{"batch", a.batch}, {"seq", a.seq}, {"heads", a.heads}, {"head_dim", a.head_dim}}, kF,
                 &bytes));
  if (bytes == 0) return Status::Ok();
  const int64_t width = a.heads * a.head_dim;
  const int64_t ld = a.ld ? a.ld : width, ldo = a.ldo ? a.ldo : width;
  if (ld < width) return bad(op, "ld " + std::to_string(a.ld) + " is below heads*head_dim " + std::to_string(width));
  if (ldo < width) {
    return bad(op, "ldo " + std::to_string(a.ldo) + " is below heads*head_dim " + std::to_string(width));
  }
  if (!std::isfinite(a.scale)) return bad(op, "scale is not finite");
  if (a.key_mask && a.seq_starts) return bad(op, "key_mask and seq_starts together (the packed layout has no mask)");
  BERT_TRY(need(op, a.q, "q"));
  BERT_TRY(need(op, a.k, "k"));
  BERT_TRY(need(op, a.v, "v"));
  BERT_TRY(need(op, a.out, "out"));
  // The packed layout's row count lives in seq_starts, which check() does not read (it may be device
  // memory): its buffers' extents are the caller's.
  if (a.seq_starts) return Status::Ok();
  const int64_t rows = a.batch * a.seq;  // cannot overflow: bytes above did not
  const int64_t in_bytes = strided_bytes(rows, width, ld, kF), out_bytes = strided_bytes(rows, width, ldo, kF);
  if (in_bytes < 0 || out_bytes < 0) return bad(op, "rows x row stride overflows 64-bit byte counts");
  BERT_TRY(disjoint(op, a.out, out_bytes, "out", a.q, in_bytes, "q"));
  BERT_TRY(disjoint(op, a.out, out_bytes, "out", a.k, in_bytes, "k"));
  BERT_TRY(disjoint(op, a.out, out_bytes, "out", a.v, in_bytes, "v"));
  BERT_TRY(disjoint(op, a.out, out_bytes, "out", a.key_mask, rows * kI, "key_mask"));
  return Status::Ok();
}

Status check(const LayerNormBackwardArgs& a) {
  const char* op = "layernorm_backward";
  int64_t bytes = 0;
  BERT_TRY(sizes(op, {{"rows", a.rows}, {"cols", a.cols}}, kF, &bytes));
  if (bytes == 0) return Status::Ok();
  BERT_TRY(need(op, a.s, "s"));
  BERT_TRY(need(op, a.gamma, "gamma"));
  BERT_TRY(need(op, a.dy, "dy"));
  BERT_TRY(need(op, a.ds, "ds"));
  BERT_TRY(same_or_disjoint(op, a.ds, "ds", a.dy, "dy", bytes));
  BERT_TRY(disjoint(op, a.ds, bytes, "ds", a.s, bytes, "s"));
  const int64_t cb = a.cols * kF;
  BERT_TRY(disjoint(op, a.ds, bytes, "ds", a.gamma, cb, "gamma"));
  for (const auto& [p, name] : {std::pair<const float*, const char*>{a.dgamma, "dgamma"}, {a.dbeta, "dbeta"}}) {
    BERT_TRY(disjoint(op, p, cb, name, a.s, bytes, "s"));
    BERT_TRY(disjoint(op, p, cb, name, a.dy, bytes, "dy"));
    BERT_TRY(disjoint(op, p, cb, name, a.ds, bytes, "ds"));
    BERT_TRY(disjoint(op, p, cb, name, a.gamma, cb, "gamma"));
  }
  return disjoint(op, a.dgamma, cb, "dgamma", a.dbeta, cb, "dbeta");
}

Status check(const SoftmaxBackwardArgs& a) {
  const char* op = "softmax_backward";
  int64_t bytes = 0;
  BERT_TRY(sizes(op, {{"batch", a.batch}, {"heads", a.heads}, {"q_len", a.q_len}, {"k_len", a.k_len}}, kF, &bytes));
  if (bytes == 0) return Status::Ok();
  BERT_TRY(need(op, a.probs, "probs"));
  BERT_TRY(need(op, a.grad, "grad"));
  if (a.dropped) BERT_TRY(disjoint(op, a.grad, bytes, "grad", a.dropped, bytes, "dropped"));
  return disjoint(op, a.grad, bytes, "grad", a.probs, bytes, "probs");
}

Status check(const ActivationBackwardArgs& a) {
  const char* op = "activation_backward";
  int64_t bytes = 0;
  BERT_TRY(sizes(op, {{"n", a.n}}, kF, &bytes));
  if (bytes == 0) return Status::Ok();
  BERT_TRY(need(op, a.x, "x"));
  BERT_TRY(need(op, a.grad, "grad"));
  return same_or_disjoint(op, a.grad, "grad", a.x, "x", bytes);
}

Status check(const EmbedBackwardArgs& a) {
  const char* op = "embed_backward";
  int64_t bytes = 0;
  BERT_TRY(sizes(op, {{"tokens", a.tokens}, {"width", a.width}}, kF, &bytes));
  if (bytes == 0) return Status::Ok();
  BERT_TRY(need(op, a.d_out, "d_out"));
  const int64_t ids = a.tokens * kI;
  for (const auto& [p, name] : {std::pair<const float*, const char*>{a.d_word, "d_word"},
                                {a.d_position, "d_position"},
                                {a.d_type, "d_type"}}) {
    BERT_TRY(disjoint(op, p, a.width * kF, name, a.d_out, bytes, "d_out"));
    BERT_TRY(disjoint(op, p, a.width * kF, name, a.input_ids, ids, "input_ids"));
  }
  return Status::Ok();
}

Status check(const ColumnSumArgs& a) {
  const char* op = "column_sum";
  int64_t bytes = 0;
  BERT_TRY(sizes(op, {{"rows", a.rows}, {"cols", a.cols}, {"ld", a.ld}}, kF, &bytes));
  if (a.rows == 0 || a.cols == 0) return Status::Ok();
  const int64_t ld = a.ld ? a.ld : a.cols;
  if (ld < a.cols) return bad(op, "ld " + std::to_string(a.ld) + " is below cols " + std::to_string(a.cols));
  BERT_TRY(need(op, a.x, "x"));
  BERT_TRY(need(op, a.out, "out"));
  const int64_t xb = strided_bytes(a.rows, a.cols, ld, kF);
  if (xb < 0) return bad(op, "rows x ld overflows 64-bit byte counts");
  return disjoint(op, a.out, a.cols * kF, "out", a.x, xb, "x");
}

Status check(const CrossEntropyArgs& a) {
  const char* op = "cross_entropy";
  int64_t bytes = 0;
  BERT_TRY(sizes(op, {{"rows", a.rows}, {"classes", a.classes}, {"ld", a.ld}}, kF, &bytes));
  if (a.rows == 0 || a.classes == 0) return Status::Ok();
  const int64_t ld = a.ld ? a.ld : a.classes;
  if (ld < a.classes) return bad(op, "ld " + std::to_string(a.ld) + " is below classes " + std::to_string(a.classes));
  BERT_TRY(need(op, a.logits, "logits"));
  BERT_TRY(need(op, a.targets, "targets"));
  const int64_t lb = strided_bytes(a.rows, a.classes, ld, kF);
  if (lb < 0) return bad(op, "rows x ld overflows 64-bit byte counts");
  if (a.dlogits) {
    BERT_TRY(same_or_disjoint(op, a.dlogits, "dlogits", a.logits, "logits", lb));
    BERT_TRY(disjoint(op, a.dlogits, lb, "dlogits", a.targets, a.rows * kI, "targets"));
  }
  return Status::Ok();
}

Status check(const BceWithLogitsArgs& a) {
  const char* op = "bce_with_logits";
  int64_t bytes = 0;
  BERT_TRY(sizes(op, {{"n", a.n}}, kF, &bytes));
  if (bytes == 0) return Status::Ok();
  BERT_TRY(need(op, a.logits, "logits"));
  BERT_TRY(need(op, a.targets, "targets"));
  if (a.dlogits) {
    BERT_TRY(same_or_disjoint(op, a.dlogits, "dlogits", a.logits, "logits", bytes));
    BERT_TRY(disjoint(op, a.dlogits, bytes, "dlogits", a.targets, bytes, "targets"));
    BERT_TRY(disjoint(op, a.dlogits, bytes, "dlogits", a.mask, a.n * kI, "mask"));
  }
  return Status::Ok();
}

Status check(const MseArgs& a) {
  const char* op = "mse";
  int64_t bytes = 0;
  BERT_TRY(sizes(op, {{"n", a.n}}, kF, &bytes));
  if (bytes == 0) return Status::Ok();
  BERT_TRY(need(op, a.pred, "pred"));
  BERT_TRY(need(op, a.target, "target"));
  if (a.dpred) {
    BERT_TRY(same_or_disjoint(op, a.dpred, "dpred", a.pred, "pred", bytes));
    BERT_TRY(disjoint(op, a.dpred, bytes, "dpred", a.target, bytes, "target"));
  }
  return Status::Ok();
}

Status check(const DropoutArgs& a) {
  const char* op = "dropout";
  int64_t bytes = 0;
  BERT_TRY(sizes(op, {{"n", a.n}}, kF, &bytes));
  if (!(a.p >= 0.f && a.p < 1.f)) return bad(op, "p is " + std::to_string(a.p) + " (must be in [0, 1))");
  if (bytes == 0) return Status::Ok();
  BERT_TRY(need(op, a.x, "x"));
  return a.src ? same_or_disjoint(op, a.x, "x", a.src, "src", bytes) : Status::Ok();
}

#undef BERT_TRY

}  // namespace bert::kernels
