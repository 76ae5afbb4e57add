// CPU emulation of the CUDA device's fused attention (kernels/cuda/attention.h) and fused training attention
// (kernels/cuda/attention_train.h) on host memory. Each (sequence, head) runs on one OpenMP thread with the
// [seq, seq] matrices in thread-local scratch (the GPU never materialises them; here it costs nothing to), the
// softmax, its backward and the dropout through the CPU trainer's own kernels (kernels/softmax_masked.h,
// kernels/train.h), so the semantics are those of engine/src/trainer.cc. fp16 attention converts its head
// slices to fp32, computes in fp32 and rounds the output once. Argument checks mirror the .cu launchers.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "kernels/cpu/dispatch.h"
#include "kernels/cuda/attention.h"
#include "kernels/cuda/attention_train.h"
#include "kernels/cuda_emu/emu_internal.h"
#include "kernels/softmax_masked.h"
#include "kernels/train.h"

namespace bert::kernels::cuda {

namespace {

using emu::fail;

template <typename T>
T* grow(std::vector<T>& v, size_t n) {
  if (v.size() < n) v.resize(n);
  return v.data();
}

inline float dot(const float* a, const float* b, int64_t n) {
  float s = 0.f;
#pragma omp simd reduction(+ : s)
  for (int64_t i = 0; i < n; ++i) s += a[i] * b[i];
  return s;
}

inline void axpy(float alpha, const float* x, float* y, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) y[i] += alpha * x[i];
}

// dst [rows, d] dense = the head slice of rows (row stride ld) as fp32.
void gather_head(const void* base, Elem e, int64_t ld, int64_t row0, int64_t rows, int64_t col0, int64_t d,
                 float* dst) {
  for (int64_t r = 0; r < rows; ++r)
    emu::to_f32(static_cast<const char*>(base) + ((row0 + r) * ld + col0) * elem_size(e), e, dst + r * d, d);
}

// s [L, L] = q [L, d] k [L, d]^T.
void scores(const float* q, const float* k, int64_t L, int64_t d, float* s) {
  for (int64_t i = 0; i < L; ++i)
    for (int64_t j = 0; j < L; ++j) s[i * L + j] = dot(q + i * d, k + j * d, d);
}

// o [L, d] = p [L, L] v [L, d].
void context(const float* p, const float* v, int64_t L, int64_t d, float* o) {
  for (int64_t i = 0; i < L; ++i) {
    float* oi = o + i * d;
    for (int64_t c = 0; c < d; ++c) oi[c] = 0.f;
    for (int64_t j = 0; j < L; ++j) axpy(p[i * L + j], v + j * d, oi, d);
  }
}

bool valid(const AttentionArgs& a) {
  if (!a.q || !a.k || !a.v || !a.out) return fail("attention: q, k, v and out must be non-null device pointers");
  if (a.dtype != Elem::kF32 && a.dtype != Elem::kF16) return fail("attention: dtype must be fp32 or fp16");
  if (a.head_dim < 1 || a.head_dim > 128) return fail("attention: head_dim must be in 1..128");
  if (a.heads < 1 || a.heads > 65535) return fail("attention: heads must be in 1..65535");
  if (a.batch < 0 || a.batch > 65535) return fail("attention: batch must be in 0..65535");
  if (a.seq < 0 || a.seq > INT32_MAX) return fail("attention: seq must be in 0..2^31-1");
  if (a.ld_qkv < a.heads * a.head_dim) return fail("attention: ld_qkv must be >= heads*head_dim");
  if (a.ld_out < a.heads * a.head_dim) return fail("attention: ld_out must be >= heads*head_dim");
  if (a.seq_starts && a.key_mask) return fail("attention: key_mask is for the padded layout only (seq_starts is set)");
  return true;
}

bool fail_in(const char* fn, const char* what) { return fail(std::string(fn) + ": " + what); }

bool valid(const AttentionTrainArgs& a, const char* fn) {
  if (!a.q || !a.k || !a.v) return fail_in(fn, "q, k and v must be non-null device pointers");
  if (a.head_dim < 1 || a.head_dim > 128) return fail_in(fn, "head_dim must be in 1..128");
  if (a.heads < 1 || a.heads > 65535) return fail_in(fn, "heads must be in 1..65535");
  if (a.batch < 0 || a.batch > 65535) return fail_in(fn, "batch must be in 0..65535");
  if (a.seq < 0 || a.seq > INT32_MAX) return fail_in(fn, "seq must be in 0..2^31-1");
  if (a.ld_qkv < a.heads * a.head_dim) return fail_in(fn, "ld_qkv must be >= heads*head_dim");
  if (!(a.dropout_p >= 0.f && a.dropout_p < 1.f)) return fail_in(fn, "dropout_p must be in [0, 1)");
  return true;
}

// Per-thread scratch of the training attention for one (sequence, head).
struct TrainScratch {
  std::vector<float> q, k, v, s, p, dout, dq, dk, dv;
};

// Loads q / k / v of (b, h) into t.q / t.k / t.v and returns t.s holding the raw scores q k^T [seq, seq].
float* load_scores(const AttentionTrainArgs& a, int64_t b, int64_t h, TrainScratch& t) {
  const int64_t L = a.seq, d = a.head_dim;
  float* q = grow(t.q, size_t(L * d));
  float* k = grow(t.k, size_t(L * d));
  float* v = grow(t.v, size_t(L * d));
  gather_head(a.q, Elem::kF32, a.ld_qkv, b * L, L, h * d, d, q);
  gather_head(a.k, Elem::kF32, a.ld_qkv, b * L, L, h * d, d, k);
  gather_head(a.v, Elem::kF32, a.ld_qkv, b * L, L, h * d, d, v);
  float* s = grow(t.s, size_t(L * L));
  scores(q, k, L, d, s);
  return s;
}

void softmax_rows(float* s, const int32_t* key_mask, int64_t b, int64_t L, float scale) {
  SoftmaxMaskedArgs sm;
  sm.scores = s, sm.key_mask = key_mask ? key_mask + b * L : nullptr;
  sm.batch = 1, sm.heads = 1, sm.q_len = L, sm.k_len = L, sm.scale = scale;
  cpu_kernels().softmax_masked(sm);
}

// P_used of (b, h): a dropped copy of P in `buf`, or P itself without dropout.
const float* dropped(const AttentionTrainArgs& a, int64_t b, int64_t h, const float* probs, std::vector<float>& buf) {
  if (!(a.dropout_p > 0.f)) return probs;
  const int64_t L = a.seq;
  float* p = grow(buf, size_t(L * L));
  std::copy(probs, probs + L * L, p);
  DropoutArgs d;
  d.x = p, d.n = L * L, d.p = a.dropout_p, d.seed = a.dropout_seed;
  d.offset = a.dropout_offset + uint64_t((b * a.heads + h) * L) * uint64_t(L);
  dropout_f32(d);
  return p;
}

}  // namespace

bool attention(const AttentionArgs& a, void*) {
  if (!valid(a)) return false;
  if (a.batch == 0 || a.seq == 0) return true;
  const int64_t d = a.head_dim, jobs = a.batch * a.heads;
  if (a.seq_starts)
    for (int64_t b = 0; b < a.batch; ++b)
      if (a.seq_starts[b + 1] < a.seq_starts[b])
        return fail("attention: seq_starts must be non-decreasing (sequence " + std::to_string(b) + ")");
  const auto softmax = cpu_kernels().softmax_masked;
#pragma omp parallel if (jobs * a.seq * a.seq * d >= emu::kParallelMinWork)
  {
    std::vector<float> q, k, v, s, o;
#pragma omp for schedule(dynamic)
    for (int64_t job = 0; job < jobs; ++job) {
      const int64_t b = job / a.heads, h = job % a.heads;
      const int64_t row0 = a.seq_starts ? a.seq_starts[b] : b * a.seq;
      const int64_t L = a.seq_starts ? a.seq_starts[b + 1] - a.seq_starts[b] : a.seq;
      if (L <= 0) continue;
      float* qf = grow(q, size_t(L * d));
      float* kf = grow(k, size_t(L * d));
      float* vf = grow(v, size_t(L * d));
      gather_head(a.q, a.dtype, a.ld_qkv, row0, L, h * d, d, qf);
      gather_head(a.k, a.dtype, a.ld_qkv, row0, L, h * d, d, kf);
      gather_head(a.v, a.dtype, a.ld_qkv, row0, L, h * d, d, vf);
      float* sf = grow(s, size_t(L * L));
      scores(qf, kf, L, d, sf);
      SoftmaxMaskedArgs sm;
      sm.scores = sf, sm.key_mask = a.key_mask ? a.key_mask + b * a.seq : nullptr;
      sm.batch = 1, sm.heads = 1, sm.q_len = L, sm.k_len = L, sm.scale = a.scale;
      softmax(sm);
      float* of = grow(o, size_t(L * d));
      context(sf, vf, L, d, of);
      for (int64_t r = 0; r < L; ++r)
        emu::from_f32(of + r * d, static_cast<char*>(a.out) + ((row0 + r) * a.ld_out + h * d) * elem_size(a.dtype),
                      a.dtype, d);
    }
  }
  return true;
}

bool attention_train_forward(const AttentionTrainArgs& a, float* out, int64_t ld_out, float* lse, void*) {
  constexpr const char* fn = "attention_train_forward";
  if (!valid(a, fn)) return false;
  if (!out || !lse) return fail_in(fn, "out and lse must be non-null device pointers");
  if (ld_out < a.heads * a.head_dim) return fail_in(fn, "ld_out must be >= heads*head_dim");
  if (a.batch == 0 || a.seq == 0) return true;
  const int64_t L = a.seq, d = a.head_dim, jobs = a.batch * a.heads;
#pragma omp parallel if (jobs * L * L * d >= emu::kParallelMinWork)
  {
    TrainScratch t;
#pragma omp for schedule(dynamic)
    for (int64_t job = 0; job < jobs; ++job) {
      const int64_t b = job / a.heads, h = job % a.heads;
      float* s = load_scores(a, b, h, t);
      // The log-sum-exp of the scaled scores, a masked key's score replaced by -1e30.
      const int32_t* mask = a.key_mask ? a.key_mask + b * L : nullptr;
      float* lse_row = lse + job * L;
      for (int64_t i = 0; i < L; ++i) {
        const float* si = s + i * L;
        float m = -1e30f;
        for (int64_t j = 0; j < L; ++j) {
          const float x = (!mask || mask[j]) ? a.scale * si[j] : -1e30f;
          if (x > m) m = x;
        }
        double sum = 0.0;
        for (int64_t j = 0; j < L; ++j) {
          const float x = (!mask || mask[j]) ? a.scale * si[j] : -1e30f;
          sum += std::exp(double(x) - double(m));
        }
        lse_row[i] = static_cast<float>(double(m) + std::log(sum));
      }
      softmax_rows(s, a.key_mask, b, L, a.scale);
      const float* p_used = dropped(a, b, h, s, t.p);
      float* o = grow(t.dq, size_t(L * d));
      context(p_used, t.v.data(), L, d, o);
      for (int64_t r = 0; r < L; ++r) std::copy(o + r * d, o + (r + 1) * d, out + (b * L + r) * ld_out + h * d);
    }
  }
  return true;
}

bool attention_train_backward(const AttentionTrainArgs& a, const AttentionGradArgs& g, void*) {
  constexpr const char* fn = "attention_train_backward";
  if (!valid(a, fn)) return false;
  if (!g.out || !g.d_out || !g.dq || !g.dk || !g.dv || !g.lse || !g.delta_workspace)
    return fail_in(fn, "out, d_out, dq, dk, dv, lse and delta_workspace must be non-null device pointers");
  const int64_t width = a.heads * a.head_dim;
  if (g.ld_out < width) return fail_in(fn, "ld_out must be >= heads*head_dim");
  if (g.ld_dout < width) return fail_in(fn, "ld_dout must be >= heads*head_dim");
  if (g.ld_dqkv < width) return fail_in(fn, "ld_dqkv must be >= heads*head_dim");
  if (a.batch == 0 || a.seq == 0) return true;
  const int64_t L = a.seq, d = a.head_dim, jobs = a.batch * a.heads;
#pragma omp parallel if (jobs * L * L * d >= emu::kParallelMinWork)
  {
    TrainScratch t;
    std::vector<float> dp_buf;
#pragma omp for schedule(dynamic)
    for (int64_t job = 0; job < jobs; ++job) {
      const int64_t b = job / a.heads, h = job % a.heads;
      float* s = load_scores(a, b, h, t);
      softmax_rows(s, a.key_mask, b, L, a.scale);  // s = P
      const float* p_used = dropped(a, b, h, s, t.p);
      const float* q = t.q.data();
      const float* k = t.k.data();
      const float* v = t.v.data();
      float* dout = grow(t.dout, size_t(L * d));
      gather_head(g.d_out, Elem::kF32, g.ld_dout, b * L, L, h * d, d, dout);
      // delta = rowsum(dout * out), what the GPU's backward keeps in the workspace.
      float* delta = g.delta_workspace + job * L;
      for (int64_t i = 0; i < L; ++i) delta[i] = dot(dout + i * d, g.out + (b * L + i) * g.ld_out + h * d, d);
      // dV = P_used^T dout.
      float* dv = grow(t.dv, size_t(L * d));
      std::fill(dv, dv + L * d, 0.f);
      for (int64_t i = 0; i < L; ++i)
        for (int64_t j = 0; j < L; ++j) axpy(p_used[i * L + j], dout + i * d, dv + j * d, d);
      // dP = dropout(dout V^T), then dS = scale * P * (dP - rowsum(dP * P)) in place.
      float* dp = grow(dp_buf, size_t(L * L));
      scores(dout, v, L, d, dp);
      if (a.dropout_p > 0.f) {
        DropoutArgs dr;
        dr.x = dp, dr.n = L * L, dr.p = a.dropout_p, dr.seed = a.dropout_seed;
        dr.offset = a.dropout_offset + uint64_t(job * L) * uint64_t(L);
        dropout_f32(dr);
      }
      softmax_backward_f32({s, dp, 1, 1, L, L, a.scale});
      // dQ = dS K, dK = dS^T Q.
      float* dq = grow(t.dq, size_t(L * d));
      float* dk = grow(t.dk, size_t(L * d));
      std::fill(dq, dq + L * d, 0.f);
      std::fill(dk, dk + L * d, 0.f);
      for (int64_t i = 0; i < L; ++i)
        for (int64_t j = 0; j < L; ++j) {
          const float ds = dp[i * L + j];
          axpy(ds, k + j * d, dq + i * d, d);
          axpy(ds, q + i * d, dk + j * d, d);
        }
      for (int64_t r = 0; r < L; ++r) {
        const int64_t off = (b * L + r) * g.ld_dqkv + h * d;
        std::copy(dq + r * d, dq + (r + 1) * d, g.dq + off);
        std::copy(dk + r * d, dk + (r + 1) * d, g.dk + off);
        std::copy(dv + r * d, dv + (r + 1) * d, g.dv + off);
      }
    }
  }
  return true;
}

}  // namespace bert::kernels::cuda
