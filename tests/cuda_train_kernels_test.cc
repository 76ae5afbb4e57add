// The CUDA training kernels (kernels/cuda/train_kernels.h: backward ops, losses, dropout, optimizers,
// clipping and loss scaling) against the CPU references at awkward sizes: every launcher vs its `_ref`
// (fp32 1e-5 relative L2, loss sums 1e-6 relative), accumulation into pre-filled gradients, dropout
// bit-identical to the CPU, deterministic reruns, multi-tensor AdamW / LAMB steps vs the CPU Optimizer
// (engine/train/optimizer.h), the dynamic loss-scaling state machine and inf/NaN detection.
// Built only with CUDA; every test skips with a message when no GPU is present.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "engine/train/optimizer.h"
#include "kernels/convert.h"
#include "kernels/cuda/train_kernels.h"
#include "kernels/optimizer.h"
#include "kernels/softmax_masked.h"
#include "kernels/train.h"
#include "tests/cuda_test_util.h"
#include "tests/test_util.h"

namespace bert::kernels {
namespace {

using test::DeviceBuffer;
using test::max_abs;
using test::random_floats;
using test::relative_l2;

constexpr double kTol = 1e-5;      // fp32 outputs, relative L2
constexpr double kLossTol = 1e-6;  // loss sums, relative (absolute below 1)

std::string last_error() { return cuda::cuda_last_error(); }

void expect_close(const std::vector<float>& got, const std::vector<float>& want, double tol, const std::string& what,
                  bool nonzero = true) {
  ASSERT_EQ(got.size(), want.size()) << what;
  EXPECT_LE(relative_l2(got.data(), want.data(), want.size()), tol) << what;
  if (nonzero) {
    EXPECT_GT(max_abs(got.data(), got.size()), 0.0) << what << " is all zero";
  }
}

std::vector<float> minus(const std::vector<float>& a, const std::vector<float>& b) {
  std::vector<float> d(a.size());
  for (size_t i = 0; i < a.size(); ++i) d[i] = a[i] - b[i];
  return d;
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0);
}

void expect_loss_close(const LossSum& got, const LossSum& want, const std::string& what) {
  EXPECT_EQ(got.count, want.count) << what;
  EXPECT_NEAR(got.sum, want.sum, kLossTol * std::max(1.0, std::fabs(want.sum))) << what;
  EXPECT_TRUE(std::isfinite(got.sum)) << what;
}

template <class T>
T read_scalar(const DeviceBuffer<T>& b) {
  return b.host().at(0);
}

template <class T>
void write_scalar(DeviceBuffer<T>& b, T value) {
  ASSERT_TRUE(cuda::copy_to_device(b.p, &value, sizeof(T))) << last_error();
}

void upload(DeviceBuffer<float>& b, const std::vector<float>& host) {
  ASSERT_EQ(b.n, host.size());
  if (!host.empty()) {
    ASSERT_TRUE(cuda::copy_to_device(b.p, host.data(), host.size() * sizeof(float))) << last_error();
  }
}

// A device buffer of `bytes` bytes to pass as an explicit workspace.
struct WorkspaceBuffer {
  DeviceBuffer<char> buffer;
  explicit WorkspaceBuffer(size_t bytes) : buffer(std::max<size_t>(bytes, 1)) {}
  cuda::Workspace get() const { return {buffer.p, buffer.n}; }
};

// ---- LayerNorm backward -----------------------------------------------------------------------------

TEST(CudaTrainKernels, LayerNormBackwardMatchesReferenceAndAccumulates) {
  BERT_REQUIRE_GPU();
  for (int64_t rows : {1, 3, 17})
    for (int64_t cols : {1, 31, 257, 768, 1031}) {
      SCOPED_TRACE(::testing::Message() << rows << "x" << cols);
      const size_t n = static_cast<size_t>(rows * cols);
      const auto s = random_floats(n, 1, -3, 3), gamma = random_floats(cols, 2, 0.5f, 1.5f), dy = random_floats(n, 3);
      const auto dgamma0 = random_floats(cols, 4), dbeta0 = random_floats(cols, 5);  // pre-filled: += expected
      std::vector<float> ds_want(n), dgamma_want = dgamma0, dbeta_want = dbeta0;
      layernorm_backward_f32_ref(
          {s.data(), gamma.data(), dy.data(), ds_want.data(), dgamma_want.data(), dbeta_want.data(), rows, cols, 1e-12f});

      DeviceBuffer<float> d_s(s), d_gamma(gamma), d_dy(dy), d_ds(n), d_dgamma(dgamma0), d_dbeta(dbeta0);
      // An explicit workspace for 17 rows, the stream-ordered allocation otherwise.
      WorkspaceBuffer ws(rows == 17 ? cuda::layernorm_backward_workspace_bytes(rows, cols) : 0);
      ASSERT_TRUE(cuda::layernorm_backward_f32(
          {d_s.p, d_gamma.p, d_dy.p, d_ds.p, d_dgamma.p, d_dbeta.p, rows, cols, 1e-12f}, nullptr,
          rows == 17 ? ws.get() : cuda::Workspace{}))
          << last_error();
      const bool nonzero = cols > 1;  // one column: xhat = 0, so ds and the dgamma increment are 0
      expect_close(d_ds.host(), ds_want, kTol, "ds", nonzero);
      expect_close(d_dgamma.host(), dgamma_want, kTol, "dgamma");
      expect_close(d_dbeta.host(), dbeta_want, kTol, "dbeta");
      expect_close(minus(d_dgamma.host(), dgamma0), minus(dgamma_want, dgamma0), kTol, "dgamma increment", nonzero);
      expect_close(minus(d_dbeta.host(), dbeta0), minus(dbeta_want, dbeta0), kTol, "dbeta increment");
    }
}

TEST(CudaTrainKernels, LayerNormBackwardInPlaceAndWithoutParameterGradients) {
  BERT_REQUIRE_GPU();
  for (auto [rows, cols] : {std::pair<int64_t, int64_t>{17, 768}, {3, 1031}, {40000, 31}}) {
    SCOPED_TRACE(::testing::Message() << rows << "x" << cols);
    const size_t n = static_cast<size_t>(rows * cols);
    const auto s = random_floats(n, 11, -2, 2), gamma = random_floats(cols, 12, 0.5f, 1.5f), dy = random_floats(n, 13);
    const auto dgamma0 = random_floats(cols, 14), dbeta0 = random_floats(cols, 15);
    std::vector<float> ds_want(n), dgamma_want = dgamma0, dbeta_want = dbeta0;
    layernorm_backward_f32_ref(
        {s.data(), gamma.data(), dy.data(), ds_want.data(), dgamma_want.data(), dbeta_want.data(), rows, cols, 1e-5f});
    {  // ds over dy: the parameter gradients must still see the original dy
      DeviceBuffer<float> d_s(s), d_gamma(gamma), d_dy(dy), d_dgamma(dgamma0), d_dbeta(dbeta0);
      ASSERT_TRUE(cuda::layernorm_backward_f32(
          {d_s.p, d_gamma.p, d_dy.p, d_dy.p, d_dgamma.p, d_dbeta.p, rows, cols, 1e-5f}))
          << last_error();
      expect_close(d_dy.host(), ds_want, kTol, "ds in place");
      expect_close(minus(d_dgamma.host(), dgamma0), minus(dgamma_want, dgamma0), kTol, "dgamma increment");
      expect_close(minus(d_dbeta.host(), dbeta0), minus(dbeta_want, dbeta0), kTol, "dbeta increment");
    }
    {  // no parameter gradients: ds only
      DeviceBuffer<float> d_s(s), d_gamma(gamma), d_dy(dy), d_ds(n);
      ASSERT_TRUE(cuda::layernorm_backward_f32({d_s.p, d_gamma.p, d_dy.p, d_ds.p, nullptr, nullptr, rows, cols, 1e-5f}))
          << last_error();
      expect_close(d_ds.host(), ds_want, kTol, "ds only");
    }
  }
}

// ---- softmax / activation backward ------------------------------------------------------------------

TEST(CudaTrainKernels, SoftmaxBackwardMatchesReference) {
  BERT_REQUIRE_GPU();
  const int64_t B = 2, heads = 3, q_len = 5;
  for (int64_t k_len : {1, 31, 128, 257, 1031}) {
    SCOPED_TRACE(k_len);
    const size_t n = static_cast<size_t>(B * heads * q_len * k_len);
    auto probs = random_floats(n, 21, -4, 4);
    std::vector<int32_t> mask(static_cast<size_t>(B * k_len), 1);
    for (int64_t k = (k_len + 1) / 2; k < k_len; ++k) mask[static_cast<size_t>(k_len + k)] = 0;  // batch 1: half masked
    softmax_masked_f32_ref({probs.data(), mask.data(), B, heads, q_len, k_len, 1.f});
    const auto grad = random_floats(n, 22);
    auto want = grad;
    softmax_backward_f32_ref({probs.data(), want.data(), B, heads, q_len, k_len, 0.125f});
    DeviceBuffer<float> d_probs(probs), d_grad(grad);
    ASSERT_TRUE(cuda::softmax_backward_f32({d_probs.p, d_grad.p, B, heads, q_len, k_len, 0.125f})) << last_error();
    expect_close(d_grad.host(), want, kTol, "dS", k_len > 1);  // one key: P = 1, dS = 0
  }
}

TEST(CudaTrainKernels, ActivationBackwardMatchesReference) {
  BERT_REQUIRE_GPU();
  for (Activation kind : {Activation::kIdentity, Activation::kGeluErf, Activation::kGeluTanh, Activation::kGeluQuick,
                          Activation::kRelu, Activation::kTanh})
    for (int64_t n : {1, 31, 1031, 100003}) {
      SCOPED_TRACE(::testing::Message() << activation_name(kind) << " n=" << n);
      auto x = random_floats(static_cast<size_t>(n), 31, -8, 8);
      if (n > 10) x[3] = 2000.f, x[5] = -2000.f, x[7] = 0.f, x[9] = -0.f;  // saturated and zero inputs
      const auto grad = random_floats(static_cast<size_t>(n), 32);
      auto want = grad;
      activation_backward_f32_ref({x.data(), want.data(), n, kind});
      DeviceBuffer<float> d_x(x), d_grad(grad);
      ASSERT_TRUE(cuda::activation_backward_f32({d_x.p, d_grad.p, n, kind})) << last_error();
      const auto got = d_grad.host();
      expect_close(got, want, kTol, "dx", n > 1 || kind != Activation::kRelu || x[0] > 0.f);
      for (float v : got) ASSERT_TRUE(std::isfinite(v));
    }
}

// ---- embedding backward ----------------------------------------------------------------------------

// One embedding-backward case against the reference (pad rows handled as the CPU trainer does:
// saved before the reference and restored after it), plus a rerun that must give the same bits.
void check_embed_backward(int64_t tokens, int64_t width, int64_t vocab, bool with_positions, bool with_types,
                          int32_t word_pad, bool explicit_workspace, uint32_t seed) {
  SCOPED_TRACE(::testing::Message() << "tokens " << tokens << " width " << width << " vocab " << vocab
                                    << (with_positions ? " +pos" : "") << (with_types ? " +types" : "")
                                    << " pad " << word_pad);
  constexpr int64_t kPositions = 40, kTypes = 2;
  std::mt19937 rng(seed);
  std::vector<int32_t> ids(static_cast<size_t>(tokens)), positions(ids.size()), types(ids.size());
  for (int64_t t = 0; t < tokens; ++t) {
    const bool heavy = rng() % 5 < 2;  // 40% of the tokens share one id
    ids[t] = heavy ? static_cast<int32_t>(7 % vocab) : static_cast<int32_t>(rng() % vocab);
    positions[t] = static_cast<int32_t>(t % kPositions);
    types[t] = t % 3 == 0 ? 1 : 0;
  }
  if (word_pad >= 0 && tokens > 2) ids[1] = ids[2] = word_pad;
  const auto d_out = random_floats(static_cast<size_t>(tokens * width), seed + 1);
  const auto word0 = random_floats(static_cast<size_t>(vocab * width), seed + 2);
  const auto pos0 = random_floats(static_cast<size_t>(kPositions * width), seed + 3);
  const auto type0 = random_floats(static_cast<size_t>(kTypes * width), seed + 4);

  auto word_want = word0, pos_want = pos0, type_want = type0;
  EmbedBackwardArgs r;
  r.input_ids = ids.data();
  r.positions = with_positions ? positions.data() : nullptr;
  r.token_types = with_types ? types.data() : nullptr;
  r.d_out = d_out.data();
  r.d_word = word_want.data(), r.d_position = pos_want.data(), r.d_type = type_want.data();
  r.tokens = tokens, r.width = width;
  embed_backward_f32_ref(r);
  if (word_pad >= 0)
    std::copy_n(word0.begin() + word_pad * width, width, word_want.begin() + word_pad * width);

  DeviceBuffer<int32_t> d_ids(ids), d_positions(positions), d_types(types);
  DeviceBuffer<float> d_d_out(d_out);
  std::vector<float> first_word, first_pos, first_type;
  for (int run = 0; run < 2; ++run) {
    DeviceBuffer<float> d_word(word0), d_pos(pos0), d_type(type0);
    EmbedBackwardArgs a = r;
    a.input_ids = d_ids.p;
    a.positions = with_positions ? d_positions.p : nullptr;
    a.token_types = with_types ? d_types.p : nullptr;
    a.d_out = d_d_out.p;
    a.d_word = d_word.p, a.d_position = d_pos.p, a.d_type = d_type.p;
    WorkspaceBuffer ws(explicit_workspace ? cuda::embed_backward_workspace_bytes(tokens, width) : 0);
    cuda::EmbedPadding padding;
    padding.word = word_pad;
    ASSERT_TRUE(cuda::embed_backward_f32(a, nullptr, explicit_workspace ? ws.get() : cuda::Workspace{}, padding))
        << last_error();
    const auto word = d_word.host(), pos = d_pos.host(), type = d_type.host();
    if (run == 1) {
      EXPECT_TRUE(same_bits(word, first_word) && same_bits(pos, first_pos) && same_bits(type, first_type))
          << "a rerun gave other bits";
      break;
    }
    first_word = word, first_pos = pos, first_type = type;
    expect_close(word, word_want, kTol, "word table");
    expect_close(minus(word, word0), minus(word_want, word0), kTol, "word increment");
    expect_close(type, type_want, kTol, "type table");
    expect_close(minus(type, type0), minus(type_want, type0), kTol, "type increment");
    if (with_positions) {
      expect_close(minus(pos, pos0), minus(pos_want, pos0), kTol, "position increment");
    } else {
      EXPECT_TRUE(same_bits(pos, pos0)) << "no position ids: the position table must not change";
    }
    if (word_pad >= 0) {
      const std::vector<float> pad_row(word.begin() + word_pad * width, word.begin() + (word_pad + 1) * width);
      const std::vector<float> pad_row0(word0.begin() + word_pad * width, word0.begin() + (word_pad + 1) * width);
      EXPECT_TRUE(same_bits(pad_row, pad_row0)) << "the padding row changed";
    }
  }
}

TEST(CudaTrainKernels, EmbedBackwardMatchesReferenceAndIsDeterministic) {
  BERT_REQUIRE_GPU();
  check_embed_backward(1, 1, 50, true, true, -1, false, 100);
  check_embed_backward(3, 31, 50, true, true, -1, true, 200);
  check_embed_backward(17, 257, 50, true, true, -1, false, 300);
  check_embed_backward(100, 768, 50, true, true, 0, false, 400);
  check_embed_backward(1000, 31, 50, false, false, -1, true, 500);    // no positions, every token in type row 0
  check_embed_backward(4096, 64, 1000, true, true, 3, false, 600);    // many chunks, scans beyond one block
  check_embed_backward(333, 257, 30522, true, true, 0, false, 700);   // a real vocabulary
}

// ---- column sums ------------------------------------------------------------------------------------

TEST(CudaTrainKernels, ColumnSumMatchesReferenceAndAccumulates) {
  BERT_REQUIRE_GPU();
  for (int64_t rows : {1, 3, 17, 1000})
    for (int64_t cols : {1, 31, 257, 768, 1031})
      for (int64_t ld_extra : {0, 3}) {
        SCOPED_TRACE(::testing::Message() << rows << "x" << cols << " ld+" << ld_extra);
        const int64_t ld = ld_extra ? cols + ld_extra : 0;
        const auto x = random_floats(static_cast<size_t>(rows * (cols + ld_extra)), 41);
        const auto out0 = random_floats(static_cast<size_t>(cols), 42);
        auto want = out0;
        column_sum_f32_ref({x.data(), want.data(), rows, cols, ld});
        DeviceBuffer<float> d_x(x), d_out(out0);
        WorkspaceBuffer ws(cuda::column_sum_workspace_bytes(rows, cols));
        ASSERT_TRUE(cuda::column_sum_f32({d_x.p, d_out.p, rows, cols, ld}, nullptr,
                                         ld_extra ? ws.get() : cuda::Workspace{}))
            << last_error();
        const auto got = d_out.host();
        expect_close(got, want, kTol, "out");
        expect_close(minus(got, out0), minus(want, out0), kTol, "increment");
      }
}

// ---- dropout --------------------------------------------------------------------------------------

TEST(CudaTrainKernels, DropoutIsBitIdenticalToTheCpu) {
  BERT_REQUIRE_GPU();
  for (int64_t n : {1, 31, 1031, 100003})
    for (float p : {0.1f, 0.5f, 0.9f})
      for (auto [seed, offset] : {std::pair<uint64_t, uint64_t>{12345, 0}, {0xDEADBEEFCAFEull, uint64_t{7} << 40}}) {
        SCOPED_TRACE(::testing::Message() << "n " << n << " p " << p << " seed " << seed << " offset " << offset);
        const auto x = random_floats(static_cast<size_t>(n), 51, 0.5f, 1.5f);  // nonzero: zeros are the mask
        auto cpu = x, ref = x;
        dropout_f32({cpu.data(), n, p, seed, offset});
        dropout_f32_ref({ref.data(), n, p, seed, offset});
        DeviceBuffer<float> d_x(x);
        ASSERT_TRUE(cuda::dropout_f32({d_x.p, n, p, seed, offset})) << last_error();
        const auto got = d_x.host();
        EXPECT_TRUE(same_bits(got, cpu)) << "differs from the CPU variant";
        EXPECT_TRUE(same_bits(got, ref)) << "differs from the reference";
        for (int64_t i = 0; i < std::min<int64_t>(n, 64); ++i)
          EXPECT_EQ(got[i] != 0.f, dropout_keep(seed, offset + static_cast<uint64_t>(i), p)) << i;
      }
  // p = 0 leaves x as it is.
  const auto x = random_floats(1031, 52);
  DeviceBuffer<float> d_x(x);
  ASSERT_TRUE(cuda::dropout_f32({d_x.p, 1031, 0.f, 1, 0})) << last_error();
  EXPECT_TRUE(same_bits(d_x.host(), x));
  // Out of place (x = drop(src)): the in-place bits, src untouched; with p = 0, a copy of src.
  for (float p : {0.3f, 0.f}) {
    auto want = x;
    dropout_f32_ref({want.data(), 1031, p, 9, 5});
    DeviceBuffer<float> d_src(x), d_out(std::vector<float>(1031, -7.f));
    ASSERT_TRUE(cuda::dropout_f32({d_out.p, 1031, p, 9, 5, d_src.p})) << last_error();
    EXPECT_TRUE(same_bits(d_out.host(), want)) << "out of place, p " << p;
    EXPECT_TRUE(same_bits(d_src.host(), x)) << "src changed, p " << p;
  }
}

// ---- losses ---------------------------------------------------------------------------------------

// One cross-entropy case: rows of `classes` logits with row stride classes + ld_extra, every third
// row ignored (when there are several), dlogits pre-filled with garbage (ignored rows must be zeroed,
// the columns between classes and ld left alone), optionally in place over the logits.
void check_cross_entropy(int64_t rows, int64_t classes, int64_t ld_extra, bool in_place, bool with_grad,
                         int32_t ignore_index, uint32_t seed) {
  SCOPED_TRACE(::testing::Message() << rows << "x" << classes << " ld+" << ld_extra << (in_place ? " in place" : "")
                                    << (with_grad ? "" : " no grad") << " ignore " << ignore_index);
  const int64_t ld = classes + ld_extra;
  const size_t n = static_cast<size_t>(rows * ld);
  const auto logits = random_floats(n, seed, -4, 4);
  std::mt19937 rng(seed);
  std::vector<int32_t> targets(static_cast<size_t>(rows));
  for (int64_t r = 0; r < rows; ++r)
    targets[r] = rows > 1 && r % 3 == 1 ? ignore_index : static_cast<int32_t>(rng() % classes);
  CrossEntropyArgs a;
  a.rows = rows, a.classes = classes, a.ld = ld_extra ? ld : 0, a.ignore_index = ignore_index, a.grad_scale = 0.37f;

  std::vector<float> x_want = logits, d_want(n, 123.f);
  a.logits = x_want.data(), a.targets = targets.data();
  a.dlogits = with_grad ? (in_place ? x_want.data() : d_want.data()) : nullptr;
  const LossSum want = cross_entropy_f32_ref(a);

  DeviceBuffer<float> d_logits(logits), d_dlogits(std::vector<float>(n, 123.f));
  DeviceBuffer<int32_t> d_targets(targets);
  DeviceBuffer<LossSum> d_result(1);
  a.logits = d_logits.p, a.targets = d_targets.p;
  a.dlogits = with_grad ? (in_place ? d_logits.p : d_dlogits.p) : nullptr;
  cuda::LossOptions o;
  o.result = d_result.p;
  ASSERT_TRUE(cuda::cross_entropy_f32(a, o)) << last_error();
  expect_loss_close(read_scalar(d_result), want, "loss");
  if (with_grad) {
    const bool nonzero = classes > 1;
    if (in_place) {
      expect_close(d_logits.host(), x_want, kTol, "dlogits in place", nonzero);
    } else {
      expect_close(d_dlogits.host(), d_want, kTol, "dlogits", nonzero);
    }
  }
}

TEST(CudaTrainKernels, CrossEntropyMatchesReference) {
  BERT_REQUIRE_GPU();
  uint32_t seed = 60;
  for (int64_t rows : {1, 3, 17})
    for (int64_t classes : {1, 2, 31, 257, 768, 1031, 1500}) check_cross_entropy(rows, classes, 0, false, true, -100, ++seed);
  check_cross_entropy(17, 31, 5, false, true, -100, ++seed);     // row stride
  check_cross_entropy(17, 1031, 5, false, true, -100, ++seed);   // row stride, block rows
  check_cross_entropy(17, 257, 0, true, true, -100, ++seed);     // dlogits over the logits
  check_cross_entropy(3, 2000, 0, true, true, -100, ++seed);     // in place, block rows
  check_cross_entropy(17, 768, 0, false, false, -100, ++seed);   // loss only
  check_cross_entropy(17, 128, 0, false, true, 128, ++seed);     // QA: ignore_index = sequence length
}

TEST(CudaTrainKernels, MaskedLmLossOverTheVocabularyWithMeanAndDeviceScale) {
  BERT_REQUIRE_GPU();
  const int64_t rows = 17, vocab = 30522;
  const size_t n = static_cast<size_t>(rows * vocab);
  auto logits = random_floats(n, 71, -6, 6);
  logits[5 * vocab + 11] = 40.f;  // one confident row
  std::vector<int32_t> targets(static_cast<size_t>(rows), -100);
  int64_t count = 0;
  for (int64_t r : {0, 4, 5, 9, 16}) targets[r] = static_cast<int32_t>((r * 7919 + 11) % vocab), ++count;
  targets[5] = 11;
  const float weight = 0.5f, loss_scale = 1024.f;

  CrossEntropyArgs a;
  a.rows = rows, a.classes = vocab, a.logits = logits.data(), a.targets = targets.data();
  std::vector<float> d_want(n, 5.f);
  a.dlogits = d_want.data();
  a.grad_scale = weight * loss_scale / static_cast<float>(count);  // what the CPU trainer passes
  const LossSum want = cross_entropy_f32_ref(a);
  ASSERT_EQ(want.count, count);

  DeviceBuffer<float> d_logits(logits), d_dlogits(std::vector<float>(n, 5.f)), d_scale(std::vector<float>{loss_scale});
  DeviceBuffer<int32_t> d_targets(targets);
  DeviceBuffer<LossSum> d_result(1);
  a.logits = d_logits.p, a.targets = d_targets.p, a.dlogits = d_dlogits.p;
  a.grad_scale = weight;
  cuda::LossOptions o;
  o.result = d_result.p, o.mean = true, o.grad_scale_device = d_scale.p;
  WorkspaceBuffer ws(cuda::loss_workspace_bytes(rows));
  ASSERT_TRUE(cuda::cross_entropy_f32(a, o, nullptr, ws.get())) << last_error();
  expect_loss_close(read_scalar(d_result), want, "MLM loss");
  expect_close(d_dlogits.host(), d_want, kTol, "MLM dlogits");
}

void check_bce(int64_t n, bool with_mask, bool mean, uint32_t seed) {
  SCOPED_TRACE(::testing::Message() << "BCE n " << n << (with_mask ? " mask" : "") << (mean ? " mean" : ""));
  auto logits = random_floats(static_cast<size_t>(n), seed, -6, 6);
  if (n > 4) logits[1] = 40.f, logits[2] = -40.f;
  const auto targets = random_floats(static_cast<size_t>(n), seed + 1, 0, 1);
  std::vector<int32_t> mask(static_cast<size_t>(n));
  int64_t count = 0;
  for (int64_t i = 0; i < n; ++i) mask[i] = (i % 4 != 3) ? 1 : 0, count += mask[i];
  if (!with_mask) count = n;
  BceWithLogitsArgs a;
  a.n = n, a.logits = logits.data(), a.targets = targets.data(), a.mask = with_mask ? mask.data() : nullptr;
  std::vector<float> d_want(static_cast<size_t>(n), 9.f);
  a.dlogits = d_want.data();
  a.grad_scale = mean ? (count ? 2.f / static_cast<float>(count) : 0.f) : 2.f;
  const LossSum want = bce_with_logits_f32_ref(a);

  DeviceBuffer<float> d_logits(logits), d_targets(targets), d_dlogits(std::vector<float>(static_cast<size_t>(n), 9.f));
  DeviceBuffer<int32_t> d_mask(mask);
  DeviceBuffer<LossSum> d_result(1);
  a.logits = d_logits.p, a.targets = d_targets.p, a.mask = with_mask ? d_mask.p : nullptr, a.dlogits = d_dlogits.p;
  a.grad_scale = 2.f;
  cuda::LossOptions o;
  o.result = d_result.p, o.mean = mean;
  ASSERT_TRUE(cuda::bce_with_logits_f32(a, o)) << last_error();
  expect_loss_close(read_scalar(d_result), want, "BCE loss");
  expect_close(d_dlogits.host(), d_want, kTol, "BCE dlogits", count > 0);
}

void check_mse(int64_t n, bool mean, uint32_t seed) {
  SCOPED_TRACE(::testing::Message() << "MSE n " << n << (mean ? " mean" : ""));
  const auto pred = random_floats(static_cast<size_t>(n), seed, -3, 3);
  const auto target = random_floats(static_cast<size_t>(n), seed + 1, -3, 3);
  MseArgs a;
  a.n = n, a.pred = pred.data(), a.target = target.data();
  std::vector<float> d_want(static_cast<size_t>(n));
  a.dpred = d_want.data();
  a.grad_scale = mean ? 3.f / static_cast<float>(n) : 3.f;
  const LossSum want = mse_f32_ref(a);

  DeviceBuffer<float> d_pred(pred), d_target(target), d_dpred(static_cast<size_t>(n));
  DeviceBuffer<LossSum> d_result(1);
  a.pred = d_pred.p, a.target = d_target.p, a.dpred = d_dpred.p, a.grad_scale = 3.f;
  cuda::LossOptions o;
  o.result = d_result.p, o.mean = mean;
  ASSERT_TRUE(cuda::mse_f32(a, o)) << last_error();
  expect_loss_close(read_scalar(d_result), want, "MSE loss");
  expect_close(d_dpred.host(), d_want, kTol, "MSE dpred");
}

TEST(CudaTrainKernels, BceAndMseMatchReference) {
  BERT_REQUIRE_GPU();
  uint32_t seed = 80;
  for (int64_t n : {1, 31, 1031, 5000, 300000}) {
    for (bool mask : {false, true})
      for (bool mean : {false, true}) check_bce(n, mask, mean, seed += 2);
    for (bool mean : {false, true}) check_mse(n, mean, seed += 2);
  }
}

// ---- single-tensor optimizer kernels -------------------------------------------------------------

TEST(CudaTrainKernels, SingleTensorOptimizerKernelsMatchReference) {
  BERT_REQUIRE_GPU();
  for (int64_t n : {1, 31, 1031, 100003})
    for (float wd : {0.f, 0.01f})
      for (int64_t step : {1, 7}) {
        SCOPED_TRACE(::testing::Message() << "n " << n << " wd " << wd << " step " << step);
        const size_t un = static_cast<size_t>(n);
        const auto p0 = random_floats(un, 91), g = random_floats(un, 92, -2, 2);
        const auto m0 = random_floats(un, 93, -0.1f, 0.1f), v0 = random_floats(un, 94, 0.f, 0.01f);
        {  // AdamW
          auto p = p0, m = m0, v = v0;
          auto gr = g;
          AdamWStepArgs a;
          a.param = p.data(), a.grad = gr.data(), a.m = m.data(), a.v = v.data(), a.n = n, a.step = step;
          a.lr = 1e-3f, a.weight_decay = wd;
          adamw_step_f32_ref(a);
          DeviceBuffer<float> dp(p0), dg(g), dm(m0), dv(v0);
          a.param = dp.p, a.grad = dg.p, a.m = dm.p, a.v = dv.p;
          ASSERT_TRUE(cuda::adamw_step_f32(a)) << last_error();
          expect_close(minus(dp.host(), p0), minus(p, p0), kTol, "AdamW param step");
          expect_close(dm.host(), m, kTol, "AdamW m");
          expect_close(dv.host(), v, kTol, "AdamW v");
        }
        {  // LAMB: update, then apply
          auto m = m0, v = v0;
          std::vector<float> u(un);
          LambUpdateArgs a;
          a.param = p0.data(), a.grad = g.data(), a.m = m.data(), a.v = v.data(), a.update = u.data(), a.n = n;
          a.step = step, a.weight_decay = wd;
          lamb_update_f32_ref(a);
          DeviceBuffer<float> dp(p0), dg(g), dm(m0), dv(v0), du(un);
          a.param = dp.p, a.grad = dg.p, a.m = dm.p, a.v = dv.p, a.update = du.p;
          ASSERT_TRUE(cuda::lamb_update_f32(a)) << last_error();
          expect_close(dm.host(), m, kTol, "LAMB m");
          expect_close(dv.host(), v, kTol, "LAMB v");
          expect_close(du.host(), u, kTol, "LAMB update");
          auto p = p0;
          lamb_apply_f32_ref(p.data(), u.data(), n, 0.003f);
          upload(du, u);
          ASSERT_TRUE(cuda::lamb_apply_f32(dp.p, du.p, n, 0.003f)) << last_error();
          expect_close(minus(dp.host(), p0), minus(p, p0), kTol, "LAMB apply");
        }
        {  // sums of squares, scaling, finiteness
          DeviceBuffer<float> dg(g);
          DeviceBuffer<double> d_sum(1);
          ASSERT_TRUE(cuda::sum_squares_f32(dg.p, n, d_sum.p)) << last_error();
          const double want = sum_squares_f32_ref(g.data(), n);
          EXPECT_NEAR(read_scalar(d_sum), want, 1e-12 * want);
          auto scaled = g;
          scale_f32(scaled.data(), n, 0.37f);
          ASSERT_TRUE(cuda::scale_f32(dg.p, n, 0.37f)) << last_error();
          EXPECT_TRUE(same_bits(dg.host(), scaled)) << "scale_f32";
          DeviceBuffer<float> d_factor(std::vector<float>{0.37f});
          scale_f32(scaled.data(), n, 0.37f);
          ASSERT_TRUE(cuda::scale_by_device_f32(dg.p, n, d_factor.p)) << last_error();
          EXPECT_TRUE(same_bits(dg.host(), scaled)) << "scale_by_device_f32";
          DeviceBuffer<int> d_flag(std::vector<int>{0});
          ASSERT_TRUE(cuda::all_finite_f32(dg.p, n, d_flag.p)) << last_error();
          EXPECT_EQ(read_scalar(d_flag), 0);
        }
      }
}

// ---- multi-tensor optimizers vs the CPU Optimizer -------------------------------------------------

const std::vector<int64_t> kListSizes = {1, 31, 4097, 1031, 12289};
const std::vector<bool> kListDecay = {true, false, true, false, true};

// Five tensors on the device (parameters, gradients, zero moments, fp16 copies) and their list.
struct DeviceModel {
  std::vector<std::unique_ptr<DeviceBuffer<float>>> params, grads, m, v;
  std::vector<std::unique_ptr<DeviceBuffer<uint16_t>>> halves;
  cuda::DeviceTensorListStorage storage;

  explicit DeviceModel(const std::vector<std::vector<float>>& values) {
    std::vector<cuda::DeviceTensorEntry> entries;
    for (size_t i = 0; i < values.size(); ++i) {
      const size_t n = values[i].size();
      params.push_back(std::make_unique<DeviceBuffer<float>>(values[i]));
      grads.push_back(std::make_unique<DeviceBuffer<float>>(n));
      m.push_back(std::make_unique<DeviceBuffer<float>>(n));
      v.push_back(std::make_unique<DeviceBuffer<float>>(n));
      halves.push_back(std::make_unique<DeviceBuffer<uint16_t>>(n));
      cuda::DeviceTensorEntry e;
      e.param = params[i]->p, e.grad = grads[i]->p, e.m = m[i]->p, e.v = v[i]->p, e.param_f16 = halves[i]->p;
      e.n = static_cast<int64_t>(n), e.decay = kListDecay[i];
      entries.push_back(e);
    }
    EXPECT_TRUE(storage.build(entries)) << last_error();
  }
  const cuda::DeviceTensorList& list() const { return storage.list(); }
  static std::vector<float> concat(const std::vector<std::unique_ptr<DeviceBuffer<float>>>& buffers) {
    std::vector<float> all;
    for (const auto& b : buffers) {
      const auto h = b->host();
      all.insert(all.end(), h.begin(), h.end());
    }
    return all;
  }
};

std::vector<float> concat(const std::vector<std::vector<float>>& parts) {
  std::vector<float> all;
  for (const auto& p : parts) all.insert(all.end(), p.begin(), p.end());
  return all;
}

std::vector<float> cpu_state(const Optimizer& opt, const std::string& prefix) {
  std::vector<float> all;
  const auto state = opt.state();
  for (size_t i = 0; i < kListSizes.size(); ++i) {
    const std::string name = prefix + "t" + std::to_string(i);
    bool found = false;
    for (const auto& [key, t] : state) {
      if (key != name) continue;
      all.insert(all.end(), t.as<float>(), t.as<float>() + t.numel());
      found = true;
    }
    EXPECT_TRUE(found) << name;
  }
  return all;
}

// Three steps of the CPU Optimizer (global-norm clipping included) and of the device path
// global_grad_norm_multi -> (AdamW | LAMB) multi with the clip factor fused and a device step counter.
void check_multi_tensor_steps(OptimizerKind kind) {
  OptimizerOptions o;
  o.kind = kind;
  o.lr = 1e-3f;
  o.eps = kind == OptimizerKind::kLamb ? 1e-6f : 1e-8f;
  o.weight_decay = 0.01f;
  o.max_grad_norm = 1.f;
  std::vector<std::vector<float>> values, grads;
  for (size_t i = 0; i < kListSizes.size(); ++i) {
    values.push_back(random_floats(static_cast<size_t>(kListSizes[i]), 101 + static_cast<uint32_t>(i)));
    grads.emplace_back(static_cast<size_t>(kListSizes[i]));
  }
  if (kind == OptimizerKind::kLamb) std::fill(values[4].begin(), values[4].end(), 0.f);  // ||p|| = 0: ratio 1
  const std::vector<float> initial = concat(values);
  DeviceModel dev(values);
  Optimizer opt(o);
  for (size_t i = 0; i < kListSizes.size(); ++i)
    ASSERT_TRUE(opt.add("t" + std::to_string(i), values[i].data(), grads[i].data(), kListSizes[i], kListDecay[i]).ok());

  DeviceBuffer<float> d_norm(1), d_clip(1);
  DeviceBuffer<int> d_found(std::vector<int>{0});
  DeviceBuffer<int64_t> d_steps(std::vector<int64_t>{0});
  WorkspaceBuffer ws(cuda::multi_tensor_workspace_bytes(dev.list()));
  for (int t = 1; t <= 3; ++t) {
    SCOPED_TRACE(::testing::Message() << "step " << t);
    const float grad_size = t == 1 ? 3.f : t == 2 ? 1e-3f : 1.f;  // clipped, not clipped, clipped
    for (size_t i = 0; i < grads.size(); ++i) {
      grads[i] = random_floats(grads[i].size(), 200 * t + static_cast<uint32_t>(i), -grad_size, grad_size);
      upload(*dev.grads[i], grads[i]);
    }
    cuda::GradNormOutputs norm_out;
    norm_out.norm = d_norm.p, norm_out.clip_factor = d_clip.p, norm_out.found_inf = d_found.p;
    norm_out.max_norm = o.max_grad_norm;
    ASSERT_TRUE(cuda::global_grad_norm_multi(dev.list(), norm_out, nullptr, t == 2 ? ws.get() : cuda::Workspace{}))
        << last_error();
    cuda::MultiTensorStep s;
    s.lr = o.lr, s.beta1 = o.beta1, s.beta2 = o.beta2, s.eps = o.eps, s.weight_decay = o.weight_decay;
    s.step_counter = d_steps.p, s.grad_factor = d_clip.p, s.skip = d_found.p;
    if (kind == OptimizerKind::kLamb) {
      ASSERT_TRUE(cuda::lamb_step_multi(dev.list(), s, nullptr, t == 3 ? ws.get() : cuda::Workspace{}))
          << last_error();
    } else {
      ASSERT_TRUE(cuda::adamw_step_multi(dev.list(), s)) << last_error();
    }
    Result<double> cpu_norm = opt.step(o.lr);
    ASSERT_TRUE(cpu_norm.ok()) << cpu_norm.status().to_string();

    EXPECT_NEAR(read_scalar(d_norm), *cpu_norm, 1e-6 * *cpu_norm);
    EXPECT_EQ(read_scalar(d_found), 0);
    EXPECT_EQ(read_scalar(d_steps), t);
    const auto params = DeviceModel::concat(dev.params);
    expect_close(minus(params, initial), minus(concat(values), initial), kTol, "parameter change");
    expect_close(DeviceModel::concat(dev.m), cpu_state(opt, "opt.m."), kTol, "m");
    expect_close(DeviceModel::concat(dev.v), cpu_state(opt, "opt.v."), kTol, "v");
  }
  // The fp16 copies are the fp32 parameters rounded to nearest even.
  for (size_t i = 0; i < kListSizes.size(); ++i) {
    const auto p = dev.params[i]->host();
    std::vector<uint16_t> want(p.size());
    convert_f32_to_f16_ref(p.data(), want.data(), static_cast<int64_t>(p.size()));
    EXPECT_TRUE(dev.halves[i]->host() == want) << "fp16 copy of tensor " << i;
  }
}

TEST(CudaTrainKernels, AdamWMultiTensorMatchesCpuOptimizer) {
  BERT_REQUIRE_GPU();
  check_multi_tensor_steps(OptimizerKind::kAdamW);
}

TEST(CudaTrainKernels, LambMultiTensorMatchesCpuOptimizer) {
  BERT_REQUIRE_GPU();
  check_multi_tensor_steps(OptimizerKind::kLamb);
}

TEST(CudaTrainKernels, GlobalNormClipFactorAndScaling) {
  BERT_REQUIRE_GPU();
  std::vector<std::vector<float>> values;
  for (size_t i = 0; i < kListSizes.size(); ++i) values.push_back(random_floats(static_cast<size_t>(kListSizes[i]), 111));
  DeviceModel dev(values);
  std::vector<std::vector<float>> grads;
  double want_sum = 0;
  for (size_t i = 0; i < kListSizes.size(); ++i) {
    grads.push_back(random_floats(values[i].size(), 120 + static_cast<uint32_t>(i), -2, 2));
    upload(*dev.grads[i], grads[i]);
    want_sum += sum_squares_f32_ref(grads[i].data(), kListSizes[i]);
  }
  DeviceBuffer<double> d_sum(1);
  DeviceBuffer<float> d_norm(1), d_clip(1);
  DeviceBuffer<int> d_found(std::vector<int>{0});
  cuda::GradNormOutputs out;
  out.sum_squares = d_sum.p, out.norm = d_norm.p, out.clip_factor = d_clip.p, out.found_inf = d_found.p;
  out.max_norm = 1e9f;  // no clipping: factor 1, scale_multi writes nothing
  ASSERT_TRUE(cuda::global_grad_norm_multi(dev.list(), out)) << last_error();
  EXPECT_NEAR(read_scalar(d_sum), want_sum, 1e-12 * want_sum);
  EXPECT_NEAR(read_scalar(d_norm), std::sqrt(want_sum), 1e-6 * std::sqrt(want_sum));
  EXPECT_EQ(read_scalar(d_clip), 1.f);
  EXPECT_EQ(read_scalar(d_found), 0);
  ASSERT_TRUE(cuda::scale_multi(dev.list(), d_clip.p)) << last_error();
  EXPECT_TRUE(same_bits(DeviceModel::concat(dev.grads), concat(grads)));

  out.max_norm = 1.f;  // clipping: max_norm / (norm + 1e-6), applied as the CPU's scale_f32 does
  ASSERT_TRUE(cuda::global_grad_norm_multi(dev.list(), out)) << last_error();
  const float factor = read_scalar(d_clip);
  EXPECT_NEAR(factor, 1.0 / (std::sqrt(want_sum) + 1e-6), 1e-6 * factor);
  ASSERT_TRUE(cuda::scale_multi(dev.list(), d_clip.p)) << last_error();
  for (auto& g : grads) scale_f32(g.data(), static_cast<int64_t>(g.size()), factor);
  EXPECT_TRUE(same_bits(DeviceModel::concat(dev.grads), concat(grads)));

  // A non-finite gradient: the norm is not finite and found_inf is set.
  grads[2][4096] = std::numeric_limits<float>::infinity();
  upload(*dev.grads[2], grads[2]);
  ASSERT_TRUE(cuda::global_grad_norm_multi(dev.list(), out)) << last_error();
  EXPECT_FALSE(std::isfinite(read_scalar(d_norm)));
  EXPECT_EQ(read_scalar(d_found), 1);
}

// ---- mixed precision: inf / NaN detection and the loss-scale state machine -------------------------

TEST(CudaTrainKernels, UnscaleAndCheckFindsInjectedInfAndNan) {
  BERT_REQUIRE_GPU();
  const int64_t n = 1031;
  const auto g = random_floats(static_cast<size_t>(n), 131, -1000, 1000);
  DeviceBuffer<float> d_scale(std::vector<float>{4096.f});
  DeviceBuffer<int> d_found(std::vector<int>{0});
  {  // clean: unscaled exactly (power-of-two scale), flag untouched
    DeviceBuffer<float> d_g(g);
    ASSERT_TRUE(cuda::unscale_and_check(d_g.p, n, 1.f, d_scale.p, d_found.p)) << last_error();
    auto want = g;
    for (float& x : want) x *= 1.f / 4096.f;
    EXPECT_TRUE(same_bits(d_g.host(), want));
    EXPECT_EQ(read_scalar(d_found), 0);
  }
  const float kInf = std::numeric_limits<float>::infinity(), kNan = std::numeric_limits<float>::quiet_NaN();
  for (auto [index, value] : {std::pair<int64_t, float>{n - 1, kInf}, {0, kNan}, {517, -kInf}}) {
    SCOPED_TRACE(::testing::Message() << "x[" << index << "] = " << value);
    auto bad = g;
    bad[index] = value;
    DeviceBuffer<float> d_g(bad);
    write_scalar(d_found, 0);
    ASSERT_TRUE(cuda::unscale_and_check(d_g.p, n, 1.f, d_scale.p, d_found.p)) << last_error();
    EXPECT_EQ(read_scalar(d_found), 1);
    write_scalar(d_found, 0);
    ASSERT_TRUE(cuda::all_finite_f32(d_g.p, n, d_found.p)) << last_error();
    EXPECT_EQ(read_scalar(d_found), 1);
  }
  // The multi-tensor form, with a NaN in the last element of the last tensor.
  std::vector<std::vector<float>> values;
  for (size_t i = 0; i < kListSizes.size(); ++i) values.push_back(random_floats(static_cast<size_t>(kListSizes[i]), 132));
  DeviceModel dev(values);
  for (size_t i = 0; i < kListSizes.size(); ++i) upload(*dev.grads[i], values[i]);
  write_scalar(d_found, 0);
  ASSERT_TRUE(cuda::unscale_and_check_multi(dev.list(), 0.5f, nullptr, d_found.p)) << last_error();
  EXPECT_EQ(read_scalar(d_found), 0);
  auto halved = concat(values);
  for (float& x : halved) x *= 0.5f;
  EXPECT_TRUE(same_bits(DeviceModel::concat(dev.grads), halved));
  values[4].back() = kNan;
  upload(*dev.grads[4], values[4]);
  ASSERT_TRUE(cuda::unscale_and_check_multi(dev.list(), 1.f, d_scale.p, d_found.p)) << last_error();
  EXPECT_EQ(read_scalar(d_found), 1);
}

TEST(CudaTrainKernels, LossScalingSkipsOverflowStepsBacksOffAndGrows) {
  BERT_REQUIRE_GPU();
  std::vector<std::vector<float>> values;
  for (size_t i = 0; i < kListSizes.size(); ++i) values.push_back(random_floats(static_cast<size_t>(kListSizes[i]), 141));
  DeviceModel dev(values);
  DeviceBuffer<float> d_scale(std::vector<float>{65536.f});
  DeviceBuffer<int> d_found(std::vector<int>{0}), d_good(std::vector<int>{0});
  DeviceBuffer<int64_t> d_steps(std::vector<int64_t>{0});
  const int kGrowthInterval = 3;
  cuda::MultiTensorStep s;
  s.lr = 1e-3f, s.weight_decay = 0.01f, s.step_counter = d_steps.p, s.skip = d_found.p;

  // One training step with gradients g * scale (an inf injected on request).
  auto step = [&](int t, bool overflow) {
    const float scale = read_scalar(d_scale);
    for (size_t i = 0; i < kListSizes.size(); ++i) {
      auto g = random_floats(values[i].size(), 150 + static_cast<uint32_t>(t * 10 + i));
      for (float& x : g) x *= scale;
      if (overflow && i == 2) g[100] = std::numeric_limits<float>::infinity();
      upload(*dev.grads[i], g);
    }
    ASSERT_TRUE(cuda::unscale_and_check_multi(dev.list(), 1.f, d_scale.p, d_found.p)) << last_error();
    EXPECT_EQ(read_scalar(d_found), overflow ? 1 : 0);
    ASSERT_TRUE(cuda::adamw_step_multi(dev.list(), s)) << last_error();
    ASSERT_TRUE(cuda::update_loss_scale(d_scale.p, d_found.p, d_good.p, kGrowthInterval, 2.f, 0.5f)) << last_error();
    EXPECT_EQ(read_scalar(d_found), 0) << "update_loss_scale clears found_inf";
  };

  const auto params0 = DeviceModel::concat(dev.params);
  step(1, true);  // overflow: nothing changes, the scale backs off
  EXPECT_TRUE(same_bits(DeviceModel::concat(dev.params), params0)) << "a skipped step changed the parameters";
  EXPECT_EQ(max_abs(DeviceModel::concat(dev.m).data(), params0.size()), 0.0) << "a skipped step changed m";
  EXPECT_EQ(read_scalar(d_steps), 0);
  EXPECT_EQ(read_scalar(d_scale), 32768.f);
  EXPECT_EQ(read_scalar(d_good), 0);
  for (int t = 2; t <= 4; ++t) {  // clean steps: applied; after growth_interval of them the scale doubles
    step(t, false);
    EXPECT_EQ(read_scalar(d_steps), t - 1);
    EXPECT_EQ(read_scalar(d_good), (t - 1) % kGrowthInterval);
    EXPECT_EQ(read_scalar(d_scale), t < 4 ? 32768.f : 65536.f);
  }
  EXPECT_FALSE(same_bits(DeviceModel::concat(dev.params), params0));
  step(5, true);  // overflow again
  EXPECT_EQ(read_scalar(d_steps), 3);
  EXPECT_EQ(read_scalar(d_scale), 32768.f);
  EXPECT_EQ(read_scalar(d_good), 0);

  // Growth that would overflow float is not applied (the count still restarts).
  write_scalar(d_scale, 3e38f);
  write_scalar(d_good, kGrowthInterval - 1);
  ASSERT_TRUE(cuda::update_loss_scale(d_scale.p, d_found.p, d_good.p, kGrowthInterval, 2.f, 0.5f)) << last_error();
  EXPECT_EQ(read_scalar(d_scale), 3e38f);
  EXPECT_EQ(read_scalar(d_good), 0);
}

// ---- argument errors ------------------------------------------------------------------------------

TEST(CudaTrainKernels, BadArgumentsAreRefusedWithAMessage) {
  BERT_REQUIRE_GPU();
  DeviceBuffer<float> buf(static_cast<size_t>(4096));
  DeviceBuffer<int> flag(std::vector<int>{0});
  // A workspace smaller than asked for.
  WorkspaceBuffer small(64);
  EXPECT_FALSE(cuda::layernorm_backward_f32({buf.p, buf.p, buf.p, buf.p, buf.p, buf.p, 4, 1000, 1e-12f}, nullptr,
                                            small.get()));
  EXPECT_NE(last_error().find("workspace"), std::string::npos) << last_error();
  EXPECT_FALSE(cuda::dropout_f32({buf.p, 16, 1.f, 1, 0}));
  EXPECT_NE(last_error().find("dropout_f32"), std::string::npos) << last_error();
  CrossEntropyArgs ce;
  ce.logits = buf.p, ce.rows = 2, ce.classes = 10, ce.ld = 5;
  EXPECT_FALSE(cuda::cross_entropy_f32(ce));
  EXPECT_NE(last_error().find("ld"), std::string::npos) << last_error();
  EXPECT_FALSE(cuda::update_loss_scale(buf.p, flag.p, flag.p, 0, 2.f, 0.5f));
  EXPECT_NE(last_error().find("growth_interval"), std::string::npos) << last_error();
  DeviceModel dev({random_floats(100, 1)});
  cuda::MultiTensorStep s;
  EXPECT_FALSE(cuda::lamb_update_multi(dev.list(), s, cuda::Workspace{}));
  EXPECT_NE(last_error().find("workspace"), std::string::npos) << last_error();
  s.beta1 = 1.f;
  EXPECT_FALSE(cuda::adamw_step_multi(dev.list(), s));
  EXPECT_NE(last_error().find("betas"), std::string::npos) << last_error();
}

}  // namespace
}  // namespace bert::kernels
