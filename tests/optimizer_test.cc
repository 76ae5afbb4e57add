// Tests of the optimizers (engine/train/optimizer.h) and their kernels (kernels/optimizer.h): AdamW and
// LAMB against steps computed here in double from the formulas, the linear schedule, gradient
// clipping, the NaN guard, the CPU kernels against the refs (and across thread counts), and the
// checkpoint state round trip. Every test also checks that parameters actually move.
#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <iostream>
#include <limits>
#include <string>
#include <vector>

#include "engine/train/optimizer.h"
#include "kernels/cpu/optimizer_isa.h"
#include "kernels/optimizer.h"
#include "tests/test_util.h"

namespace bert {
namespace {

using test::random_floats;

constexpr double kRelTol = 1e-6;

// |got - want| within kRelTol of want (plus a tiny floor for values near 0).
void expect_close(const std::vector<float>& got, const std::vector<double>& want, const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_NEAR(got[i], want[i], kRelTol * std::abs(want[i]) + 1e-8) << what << "[" << i << "]";
  }
}

std::vector<double> to_double(const std::vector<float>& v) { return {v.begin(), v.end()}; }

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

// Overwrites a registered buffer in place (the Optimizer holds its address).
void fill_from(std::vector<float>& buffer, const std::vector<float>& values) {
  ASSERT_EQ(buffer.size(), values.size());
  std::copy(values.begin(), values.end(), buffer.begin());
}

double sign(double x) { return x > 0 ? 1.0 : (x < 0 ? -1.0 : 0.0); }

double l2(const std::vector<double>& x) {
  double s = 0;
  for (double v : x) s += v * v;
  return std::sqrt(s);
}

std::vector<float> state_values(const std::vector<std::pair<std::string, Tensor>>& state, const std::string& name) {
  for (const auto& [key, t] : state) {
    if (key == name) return {t.as<float>(), t.as<float>() + t.numel()};
  }
  ADD_FAILURE() << "no state tensor " << name;
  return {};
}

TensorMap to_map(const std::vector<std::pair<std::string, Tensor>>& state) {
  TensorMap map;
  for (const auto& [key, t] : state) map[key] = t;
  return map;
}

// A parameter as the tests hold it: its values and its gradient buffer.
struct TestParam {
  std::string name;
  std::vector<float> value, grad;
  bool decay = true;
};

Status register_all(Optimizer& opt, std::vector<TestParam>& params) {
  for (TestParam& p : params) {
    BERT_RETURN_IF_ERROR(opt.add(p.name, p.value.data(), p.grad.data(), static_cast<int64_t>(p.value.size()), p.decay));
  }
  return Status::Ok();
}

double step_ok(Optimizer& opt, float lr) {
  Result<double> r = opt.step(lr);
  EXPECT_TRUE(r.ok()) << r.status().to_string();
  return r.ok() ? *r : -1.0;
}

// ---- AdamW ----------------------------------------------------------------------------------------

// Three steps on a decayed and an undecayed tensor, against the closed forms
//   m_t = (1 - b1) sum_k b1^(t-k) g_k,  v_t = (1 - b2) sum_k b2^(t-k) g_k^2,
//   p_t = p_(t-1) (1 - lr wd) - lr (m_t / (1 - b1^t)) / (sqrt(v_t / (1 - b2^t)) + eps).
TEST(OptimizerAdamW, ThreeStepsMatchClosedFormWithAndWithoutDecay) {
  OptimizerOptions o;
  o.kind = OptimizerKind::kAdamW;
  o.weight_decay = 0.1f;
  o.max_grad_norm = 0.f;
  const float lr = 0.01f;
  const std::vector<std::vector<std::vector<float>>> grads = {
      // step 1, 2, 3 for "w"                                     // and for "b"
      {{0.3f, -0.7f, 0.05f, 1.2f, -0.01f}, {0.4f, -2.0f, 0.02f}},
      {{-0.2f, -0.5f, 0.0f, 0.9f, 0.3f}, {0.1f, 1.0f, -0.02f}},
      {{0.6f, 0.1f, -0.4f, 0.0f, 0.25f}, {-0.3f, 0.5f, 0.05f}},
  };
  std::vector<TestParam> params = {{"w", {0.5f, -1.25f, 2.0f, 0.0f, -0.3f}, std::vector<float>(5), true},
                                   {"b", {0.1f, 0.0f, -0.7f}, std::vector<float>(3), false}};
  Optimizer opt(o);
  ASSERT_TRUE(register_all(opt, params).ok());

  const double b1 = o.beta1, b2 = o.beta2, eps = o.eps, wd = o.weight_decay;
  std::vector<std::vector<double>> want = {to_double(params[0].value), to_double(params[1].value)};
  for (int t = 1; t <= 3; ++t) {
    for (size_t j = 0; j < params.size(); ++j) fill_from(params[j].grad, grads[t - 1][j]);
    std::vector<std::vector<double>> before = want;
    step_ok(opt, lr);
    EXPECT_EQ(opt.steps(), t);
    const auto state = opt.state();
    for (size_t j = 0; j < params.size(); ++j) {
      const double decay = params[j].decay ? wd : 0.0;
      std::vector<double> m(want[j].size()), v(want[j].size());
      for (size_t i = 0; i < want[j].size(); ++i) {
        for (int k = 1; k <= t; ++k) {
          const double g = grads[k - 1][j][i];
          m[i] += (1 - b1) * std::pow(b1, t - k) * g;
          v[i] += (1 - b2) * std::pow(b2, t - k) * g * g;
        }
        const double mhat = m[i] / (1 - std::pow(b1, t)), vhat = v[i] / (1 - std::pow(b2, t));
        want[j][i] = want[j][i] * (1 - lr * decay) - lr * mhat / (std::sqrt(vhat) + eps);
      }
      const std::string what = params[j].name + " step " + std::to_string(t);
      expect_close(params[j].value, want[j], what);
      expect_close(state_values(state, "opt.m." + params[j].name), m, what + " m");
      expect_close(state_values(state, "opt.v." + params[j].name), v, what + " v");
      if (t == 1) {
        // Bias correction: the first step moves each parameter by lr * sign(g) (after the decay).
        for (size_t i = 0; i < want[j].size(); ++i) {
          const double moved = params[j].value[i] - before[j][i] * (1 - lr * decay);
          EXPECT_NEAR(moved, -lr * sign(grads[0][j][i]), 1e-4 * lr) << what << "[" << i << "]";
        }
      }
    }
  }
}

// ---- LAMB -----------------------------------------------------------------------------------------

// Three LAMB steps computed in double: u = mhat / (sqrt(vhat) + eps) + wd p, r = ||p|| / ||u|| for
// decayed tensors with both norms > 0 (else 1), p -= lr r u.
TEST(OptimizerLamb, ThreeStepsWithTrustRatioNoDecayAndZeroNorms) {
  OptimizerOptions o;
  o.kind = OptimizerKind::kLamb;
  o.eps = 1e-6f;
  o.weight_decay = 0.1f;
  o.max_grad_norm = 0.f;
  const float lr = 0.01f;
  std::vector<TestParam> params = {
      {"w", {1.5f, -2.5f, 3.0f, 0.75f, -2.0f}, std::vector<float>(5), true},  // trust ratio ~2
      {"b", {0.5f, -0.25f, 1.0f}, std::vector<float>(3), false},               // r = 1 although ||p|| != ||u||
      {"z", {0.f, 0.f, 0.f, 0.f}, std::vector<float>(4), true},                // ||p|| = 0 at step 1: r = 1
      {"zz", {0.f, 0.f}, std::vector<float>(2), true},                         // ||p|| = ||u|| = 0: stays 0
  };
  auto grads_at = [](int t, size_t j, size_t n) {
    std::vector<float> g(n);
    if (j == 3) return g;  // "zz" never gets a gradient
    for (size_t i = 0; i < n; ++i) g[i] = static_cast<float>(std::sin(1.0 + 2.3 * i + 0.7 * j + 1.9 * t) * (0.2 + 0.3 * i));
    return g;
  };
  Optimizer opt(o);
  ASSERT_TRUE(register_all(opt, params).ok());

  const double b1 = o.beta1, b2 = o.beta2, eps = o.eps, wd = o.weight_decay;
  std::vector<std::vector<double>> want, m, v;
  for (const TestParam& p : params) {
    want.push_back(to_double(p.value));
    m.emplace_back(p.value.size(), 0.0);
    v.emplace_back(p.value.size(), 0.0);
  }
  for (int t = 1; t <= 3; ++t) {
    for (size_t j = 0; j < params.size(); ++j) fill_from(params[j].grad, grads_at(t, j, params[j].value.size()));
    step_ok(opt, lr);
    for (size_t j = 0; j < params.size(); ++j) {
      const size_t n = want[j].size();
      const double decay = params[j].decay ? wd : 0.0;
      std::vector<double> u(n);
      for (size_t i = 0; i < n; ++i) {
        const double g = params[j].grad[i];  // not clipped (max_grad_norm = 0)
        m[j][i] = b1 * m[j][i] + (1 - b1) * g;
        v[j][i] = b2 * v[j][i] + (1 - b2) * g * g;
        const double mhat = m[j][i] / (1 - std::pow(b1, t)), vhat = v[j][i] / (1 - std::pow(b2, t));
        u[i] = mhat / (std::sqrt(vhat) + eps) + decay * want[j][i];
      }
      const double pn = l2(want[j]), un = l2(u);
      const double r = (params[j].decay && pn > 0 && un > 0) ? pn / un : 1.0;
      if (t == 1 && j == 0) {
        EXPECT_GT(r, 1.5) << "the test wants a trust ratio far from 1";
      }
      if (t == 1 && j == 1) {
        EXPECT_GT(std::abs(pn / un - 1.0), 0.2) << "the no-decay tensor must not have ||p|| = ||u||";
      }
      for (size_t i = 0; i < n; ++i) want[j][i] -= lr * r * u[i];
      expect_close(params[j].value, want[j], params[j].name + " step " + std::to_string(t));
    }
    if (t == 1) {
      // r = 1 cases move by exactly lr * sign(g) on the first step.
      for (size_t j : {size_t{1}, size_t{2}}) {
        for (size_t i = 0; i < params[j].value.size(); ++i) {
          const double p0 = j == 1 ? std::vector<double>{0.5, -0.25, 1.0}[i] : 0.0;
          EXPECT_NEAR(params[j].value[i] - p0, -lr * sign(params[j].grad[i]), 1e-4 * lr) << params[j].name << i;
        }
      }
    }
    for (float x : params[3].value) EXPECT_EQ(x, 0.f) << "zz must stay exactly 0 (no 0/0)";
  }
}

// ---- the schedule -----------------------------------------------------------------------------------

TEST(LinearSchedule, MatchesTransformersLinearScheduleWithWarmup) {
  const LinearSchedule s{.warmup_steps = 10, .total_steps = 110};
  EXPECT_EQ(s.lr_factor(0), 0.f);  // the first update of a warmup runs with lr 0, as in transformers
  EXPECT_FLOAT_EQ(s.lr_factor(1), 0.1f);
  EXPECT_FLOAT_EQ(s.lr_factor(5), 0.5f);
  EXPECT_FLOAT_EQ(s.lr_factor(9), 0.9f);
  EXPECT_FLOAT_EQ(s.lr_factor(10), 1.0f);  // warmup end = decay start
  EXPECT_FLOAT_EQ(s.lr_factor(60), 0.5f);
  EXPECT_FLOAT_EQ(s.lr_factor(109), 0.01f);
  EXPECT_EQ(s.lr_factor(110), 0.f);
  EXPECT_EQ(s.lr_factor(500), 0.f);
  const LinearSchedule no_warmup{.warmup_steps = 0, .total_steps = 4};
  EXPECT_FLOAT_EQ(no_warmup.lr_factor(0), 1.0f);
  EXPECT_FLOAT_EQ(no_warmup.lr_factor(1), 0.75f);
  EXPECT_EQ(no_warmup.lr_factor(4), 0.f);
  const LinearSchedule warmup_only{.warmup_steps = 4, .total_steps = 4};  // max(1, total - warmup)
  EXPECT_FLOAT_EQ(warmup_only.lr_factor(2), 0.5f);
  EXPECT_EQ(warmup_only.lr_factor(4), 0.f);
}

// ---- clipping -----------------------------------------------------------------------------------------

// Step 1 of AdamW with eps = 0.1 moves p by -lr * g / (|g| + eps): it depends on the gradient's scale,
// so it shows which gradient (clipped or not) the update used.
std::vector<double> adamw_first_step(const std::vector<float>& p0, const std::vector<double>& g, double lr, double eps) {
  std::vector<double> p(p0.begin(), p0.end());
  for (size_t i = 0; i < p.size(); ++i) p[i] -= lr * g[i] / (std::abs(g[i]) + eps);
  return p;
}

TEST(OptimizerClipping, ReturnsPreClipNormAndScalesToMaxNorm) {
  for (float max_norm : {1.0f, 100.f, 0.f}) {
    SCOPED_TRACE("max_grad_norm " + std::to_string(max_norm));
    OptimizerOptions o;
    o.eps = 0.1f;
    o.weight_decay = 0.f;
    o.max_grad_norm = max_norm;
    std::vector<TestParam> params = {{"a", {0.5f, -0.5f}, {3.f, -4.f}, true}, {"b", {1.0f}, {12.f}, false}};
    const std::vector<TestParam> before = params;
    Optimizer opt(o);
    ASSERT_TRUE(register_all(opt, params).ok());
    const double norm = step_ok(opt, 0.1f);
    EXPECT_NEAR(norm, 13.0, 1e-12);  // sqrt(9 + 16 + 144), before clipping

    const bool clipped = max_norm > 0 && max_norm < 13.0;
    const double scale = clipped ? max_norm / (13.0 + 1e-6) : 1.0;
    double post_sq = 0;
    for (size_t j = 0; j < params.size(); ++j) {
      std::vector<double> want_grad;
      for (float g : before[j].grad) want_grad.push_back(g * scale);
      if (clipped) {
        expect_close(params[j].grad, want_grad, params[j].name + " grad");
      } else {
        EXPECT_TRUE(same_bits(params[j].grad, before[j].grad)) << "unclipped gradients must be untouched";
      }
      for (float g : params[j].grad) post_sq += double(g) * g;
      expect_close(params[j].value, adamw_first_step(before[j].value, want_grad, 0.1, 0.1), params[j].name);
    }
    if (clipped) {
      EXPECT_NEAR(std::sqrt(post_sq), max_norm, 1e-6 * max_norm);
    }
  }
}

// ---- the NaN guard --------------------------------------------------------------------------------------

TEST(OptimizerNonFinite, NamesFirstBadGradientAndChangesNothing) {
  OptimizerOptions o;
  o.max_grad_norm = 1e-2f;  // would rescale every gradient if the step went on
  std::vector<TestParam> params = {
      {"embeddings.word_embeddings.weight", {0.1f, 0.2f, 0.3f}, {0.5f, -0.5f, 1.0f}, true},
      {"encoder.layer.0.output.dense.bias", {0.4f, 0.5f}, {1.0f, std::numeric_limits<float>::quiet_NaN()}, false},
      {"encoder.layer.1.output.dense.weight", {0.6f}, {std::numeric_limits<float>::infinity()}, true},
  };
  Optimizer opt(o);
  ASSERT_TRUE(register_all(opt, params).ok());
  const std::vector<TestParam> before = params;

  Result<double> r = opt.step(0.01f);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), ErrorCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("'encoder.layer.0.output.dense.bias'"), std::string::npos) << r.status().message();
  EXPECT_EQ(r.status().message().find("encoder.layer.1"), std::string::npos) << r.status().message();
  EXPECT_EQ(opt.steps(), 0);
  for (size_t j = 0; j < params.size(); ++j) {
    EXPECT_TRUE(same_bits(params[j].value, before[j].value)) << params[j].name;
    EXPECT_EQ(std::memcmp(params[j].grad.data(), before[j].grad.data(), params[j].grad.size() * 4), 0) << params[j].name;
    for (const char* moment : {"opt.m.", "opt.v."}) {
      for (float x : state_values(opt.state(), moment + params[j].name)) EXPECT_EQ(x, 0.f);
    }
  }

  // Once the gradients are fixed, the step is a first step: each parameter moves by lr * sign(g).
  params[1].grad[1] = -2.f;
  params[2].grad[0] = 3.f;
  step_ok(opt, 0.01f);
  EXPECT_EQ(opt.steps(), 1);
  for (size_t j = 0; j < params.size(); ++j) {
    const double keep = params[j].decay ? 1 - 0.01 * o.weight_decay : 1.0;
    for (size_t i = 0; i < params[j].value.size(); ++i) {
      EXPECT_NEAR(params[j].value[i] - before[j].value[i] * keep, -0.01 * sign(params[j].grad[i]), 1e-6)
          << params[j].name << "[" << i << "]";
    }
  }
}

// ---- registration and options ---------------------------------------------------------------------------

TEST(OptimizerRegistration, RejectsBadParametersAndOptions) {
  std::vector<float> w = {1.f, -2.f}, dw = {0.5f, 0.25f}, b = {3.f}, db = {-1.f};
  Optimizer opt;
  ASSERT_TRUE(opt.add("w", w.data(), dw.data(), 2, true).ok());
  Status dup = opt.add("w", b.data(), db.data(), 1, false);
  EXPECT_FALSE(dup.ok());
  EXPECT_NE(dup.message().find("'w'"), std::string::npos) << dup.message();
  EXPECT_FALSE(opt.add("", b.data(), db.data(), 1, false).ok());
  EXPECT_FALSE(opt.add("neg", b.data(), db.data(), -1, false).ok());
  EXPECT_FALSE(opt.add("null", nullptr, db.data(), 1, false).ok());
  ASSERT_TRUE(opt.add("b", b.data(), db.data(), 1, false).ok());
  EXPECT_EQ(opt.num_params(), 2u);

  // Invalid lr or options: an error and no change.
  EXPECT_FALSE(opt.step(-1.f).ok());
  EXPECT_FALSE(opt.step(std::numeric_limits<float>::quiet_NaN()).ok());
  OptimizerOptions bad;
  bad.beta1 = 1.f;
  Optimizer bad_opt(bad);
  ASSERT_TRUE(bad_opt.add("w", w.data(), dw.data(), 2, true).ok());
  Result<double> bad_step = bad_opt.step(0.1f);
  ASSERT_FALSE(bad_step.ok());
  EXPECT_NE(bad_step.status().message().find("beta1"), std::string::npos);
  EXPECT_EQ(w, (std::vector<float>{1.f, -2.f}));

  // Zero gradients: the norm is 0 and only the decoupled weight decay moves the decayed tensor.
  opt.zero_grads();
  EXPECT_EQ(dw, (std::vector<float>{0.f, 0.f}));
  EXPECT_EQ(db, (std::vector<float>{0.f}));
  EXPECT_EQ(step_ok(opt, 0.1f), 0.0);
  const double keep = 1 - 0.1 * double(opt.options().weight_decay);
  expect_close(w, {1.0 * keep, -2.0 * keep}, "w");
  EXPECT_EQ(b[0], 3.f);

  // Registration closes with the first step (the bias correction's step count is shared).
  std::vector<float> late = {1.f}, dlate = {1.f};
  Status after = opt.add("late", late.data(), dlate.data(), 1, true);
  EXPECT_FALSE(after.ok());
  EXPECT_NE(after.message().find("'late'"), std::string::npos);
}

// ---- kernels: CPU vs ref, thread counts -------------------------------------------------------------------

// Runs `produce` with 1, 2 and 3 OpenMP threads; returns the 1-thread result and expects the same
// bits from the others.
std::vector<float> thread_invariant(const std::function<std::vector<float>()>& produce, const std::string& what) {
  const int saved = omp_get_max_threads();
  omp_set_num_threads(1);
  std::vector<float> single = produce();
  for (int threads : {2, 3}) {
    omp_set_num_threads(threads);
    EXPECT_TRUE(same_bits(produce(), single)) << what << ": " << threads << " threads differ from 1";
  }
  omp_set_num_threads(saved);
  return single;
}

// max_i |got - want| / max(|want|, floor).
double max_rel_diff(const std::vector<float>& got, const std::vector<float>& want, double floor) {
  double worst = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    worst = std::max(worst, std::abs(double(got[i]) - want[i]) / std::max(std::abs(double(want[i])), floor));
  }
  return worst;
}

std::vector<float> concat(std::initializer_list<const std::vector<float>*> parts) {
  std::vector<float> out;
  for (const auto* p : parts) out.insert(out.end(), p->begin(), p->end());
  return out;
}

TEST(OptimizerKernels, CpuMatchesRefAtAwkwardSizesAndThreadCounts) {
  for (int64_t n : {int64_t{1}, int64_t{7}, int64_t{17}, int64_t{1000}, int64_t{100003}}) {
    SCOPED_TRACE("n = " + std::to_string(n));
    const size_t sz = static_cast<size_t>(n);
    const std::vector<float> p0 = random_floats(sz, 1, -1.f, 1.f);
    const std::vector<float> g = random_floats(sz, 2, -2.f, 2.f);
    const std::vector<float> m0 = random_floats(sz, 3, -0.5f, 0.5f);
    std::vector<float> v0 = random_floats(sz, 4, 0.f, 0.5f);
    for (size_t i = 0; i < sz; ++i) v0[i] += m0[i] * m0[i];  // as real moments are: v >= m^2 roughly

    // AdamW, with and without decay; plain, and with the clip factor and the zeroing folded in.
    for (float wd : {0.f, 0.05f})
      for (bool fused : {false, true}) {
        kernels::AdamWStepArgs a;
        a.n = n;
        a.step = 3;
        a.lr = 0.01f;
        a.weight_decay = wd;
        a.grad_scale = fused ? 0.37f : 1.f;
        a.zero_grad = fused;
        auto run = [&](void (*fn)(const kernels::AdamWStepArgs&)) {
          std::vector<float> p = p0, gr = g, m = m0, v = v0;
          kernels::AdamWStepArgs args = a;
          args.param = p.data();
          args.grad = gr.data();
          args.m = m.data();
          args.v = v.data();
          fn(args);
          return concat({&p, &m, &v, &gr});
        };
        const std::vector<float> want = run(kernels::adamw_step_f32_ref);
        const std::vector<float> got = thread_invariant([&] { return run(kernels::adamw_step_f32); }, "adamw");
        EXPECT_LE(max_rel_diff(got, want, 1.0), 5e-7) << "adamw wd " << wd << " fused " << fused;
        EXPECT_GT(test::max_abs_diff(want.data(), p0.data(), sz), 1e-6) << "adamw must move the parameters";
        // The gradient comes back untouched, or zeroed.
        const std::vector<float> grad_after(got.end() - n, got.end());
        EXPECT_EQ(grad_after, fused ? std::vector<float>(sz, 0.f) : g) << "adamw wd " << wd;
        if (fused) {  // the scale is the in-place clip's: the same bits as scaling the gradient first
          std::vector<float> p = p0, gs = g, m = m0, v = v0;
          kernels::scale_f32(gs.data(), n, a.grad_scale);
          kernels::AdamWStepArgs b = a;
          b.grad_scale = 1.f, b.zero_grad = false, b.param = p.data(), b.grad = gs.data(), b.m = m.data(), b.v = v.data();
          kernels::adamw_step_f32(b);
          const std::vector<float> unfused = concat({&p, &m, &v});
          EXPECT_TRUE(std::equal(unfused.begin(), unfused.end(), got.begin())) << "fused clip changed the bits";
        }
      }

    // LAMB update u (and m, v), then the apply.
    kernels::LambUpdateArgs l;
    l.n = n;
    l.step = 2;
    l.weight_decay = 0.01f;
    auto run_lamb = [&](void (*fn)(const kernels::LambUpdateArgs&)) {
      std::vector<float> m = m0, v = v0, u(sz, -7.f);
      kernels::LambUpdateArgs args = l;
      args.param = p0.data();
      args.grad = g.data();
      args.m = m.data();
      args.v = v.data();
      args.update = u.data();
      fn(args);
      return concat({&u, &m, &v});
    };
    const std::vector<float> lamb_want = run_lamb(kernels::lamb_update_f32_ref);
    const std::vector<float> lamb_got = thread_invariant([&] { return run_lamb(kernels::lamb_update_f32); }, "lamb");
    EXPECT_LE(max_rel_diff(lamb_got, lamb_want, 1.0), 5e-7);
    EXPECT_GT(test::max_abs(lamb_want.data(), sz), 1e-3) << "u must not be zero";

    const std::vector<float> u(lamb_want.begin(), lamb_want.begin() + n);
    auto run_apply = [&](void (*fn)(float*, const float*, int64_t, float)) {
      std::vector<float> p = p0;
      fn(p.data(), u.data(), n, 0.02f);
      return p;
    };
    const std::vector<float> apply_want = run_apply(kernels::lamb_apply_f32_ref);
    const std::vector<float> apply_got = thread_invariant([&] { return run_apply(kernels::lamb_apply_f32); }, "apply");
    EXPECT_LE(max_rel_diff(apply_got, apply_want, 1.0), 5e-7);
    EXPECT_GT(test::max_abs_diff(apply_want.data(), p0.data(), sz), 1e-6);

    // Sum of squares: tight, and the same bits for every thread count.
    const double ss_ref = kernels::sum_squares_f32_ref(g.data(), n);
    const std::vector<float> ss_bits = thread_invariant(
        [&] {
          const double s = kernels::sum_squares_f32(g.data(), n);
          std::vector<float> bits(2);
          std::memcpy(bits.data(), &s, sizeof s);
          return bits;
        },
        "sum_squares");
    double ss;
    std::memcpy(&ss, ss_bits.data(), sizeof ss);
    EXPECT_NEAR(ss, ss_ref, 1e-12 * ss_ref);
    EXPECT_GT(ss, 0.0);

    // Scale: float multiplication, so exact.
    auto run_scale = [&](void (*fn)(float*, int64_t, float)) {
      std::vector<float> x = g;
      fn(x.data(), n, 0.37f);
      return x;
    };
    const std::vector<float> scale_want = run_scale(kernels::scale_f32_ref);
    EXPECT_TRUE(same_bits(thread_invariant([&] { return run_scale(kernels::scale_f32); }, "scale"), scale_want));
    EXPECT_FLOAT_EQ(scale_want[0], g[0] * 0.37f);

    // all_finite: NaN / +Inf / -Inf at the start, middle and end.
    EXPECT_TRUE(kernels::all_finite_f32_ref(g.data(), n));
    EXPECT_TRUE(kernels::all_finite_f32(g.data(), n));
    for (float bad : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(),
                      -std::numeric_limits<float>::infinity()}) {
      for (int64_t at : {int64_t{0}, n / 2, n - 1}) {
        std::vector<float> x = g;
        x[static_cast<size_t>(at)] = bad;
        EXPECT_FALSE(kernels::all_finite_f32_ref(x.data(), n)) << bad << " at " << at;
        EXPECT_FALSE(kernels::all_finite_f32(x.data(), n)) << bad << " at " << at;
        EXPECT_FALSE(std::isfinite(kernels::sum_squares_f32(x.data(), n))) << bad << " at " << at;
      }
    }
  }
  const std::vector<float> three_four = {3.f, -4.f};
  EXPECT_EQ(kernels::sum_squares_f32_ref(three_four.data(), 2), 25.0);
  EXPECT_EQ(kernels::sum_squares_f32(three_four.data(), 2), 25.0);
  std::vector<float> big(3, 3e38f);  // finite values whose squares overflow float but not double
  EXPECT_TRUE(std::isfinite(kernels::sum_squares_f32(big.data(), 3)));
}

// Every ISA's compiled copy of the optimizer kernels (kernels/cpu/optimizer_portable.h) gives the
// baseline copy's bits, at awkward sizes; copies this CPU cannot run are skipped with a message.
TEST(OptimizerKernels, EveryIsaCopyGivesTheBaselineBits) {
  const kernels::OptimizerKernels& base = kernels::optimizer_kernels(kernels::CpuIsa::kScalar);
  for (kernels::CpuIsa isa : {kernels::CpuIsa::kAvx2, kernels::CpuIsa::kAvx512}) {
    if (static_cast<int>(isa) > static_cast<int>(kernels::cpu_isa_supported())) {
      std::cout << "[ skipped  ] the " << kernels::cpu_isa_name(isa) << " optimizer copy: this CPU lacks it\n";
      continue;
    }
    const kernels::OptimizerKernels& k = kernels::optimizer_kernels(isa);
    for (int64_t n : {int64_t{1}, int64_t{17}, int64_t{8193}, int64_t{100003}}) {
      SCOPED_TRACE(std::string(kernels::cpu_isa_name(isa)) + " n = " + std::to_string(n));
      const size_t sz = static_cast<size_t>(n);
      const std::vector<float> p0 = random_floats(sz, 71, -1.f, 1.f), g0 = random_floats(sz, 72, -2.f, 2.f);
      const std::vector<float> m0 = random_floats(sz, 73, -0.5f, 0.5f), v0 = random_floats(sz, 74, 0.f, 0.5f);
      auto adamw = [&](const kernels::OptimizerKernels& t) {
        std::vector<float> p = p0, g = g0, m = m0, v = v0;
        kernels::AdamWStepArgs a;
        a.param = p.data(), a.grad = g.data(), a.m = m.data(), a.v = v.data(), a.n = n, a.step = 4, a.lr = 0.01f;
        a.weight_decay = 0.05f, a.grad_scale = 0.7f, a.zero_grad = true;
        t.adamw_step(a);
        return concat({&p, &m, &v, &g});
      };
      auto lamb = [&](const kernels::OptimizerKernels& t) {
        std::vector<float> p = p0, m = m0, v = v0, u(sz);
        kernels::LambUpdateArgs a;
        a.param = p.data(), a.grad = g0.data(), a.m = m.data(), a.v = v.data(), a.update = u.data(), a.n = n;
        a.step = 2, a.weight_decay = 0.01f;
        t.lamb_update(a);
        t.lamb_apply(p.data(), u.data(), n, 0.3f);
        t.scale(p.data(), n, 0.9f);
        return concat({&p, &m, &v, &u});
      };
      const std::vector<float> want = adamw(base), got = adamw(k);
      EXPECT_TRUE(same_bits(got, want)) << "adamw";
      EXPECT_GT(test::max_abs_diff(want.data(), p0.data(), sz), 1e-6);
      EXPECT_TRUE(same_bits(lamb(k), lamb(base))) << "lamb";
      EXPECT_EQ(k.sum_squares(g0.data(), n), base.sum_squares(g0.data(), n));
      std::vector<float> bad = g0;
      EXPECT_TRUE(k.all_finite(bad.data(), n));
      bad[sz / 2] = std::numeric_limits<float>::infinity();
      EXPECT_FALSE(k.all_finite(bad.data(), n));
    }
  }
}

// The same calls give the same parameters whatever the thread count (both kinds, clipping active).
TEST(OptimizerKernels, OptimizerIsBitIdenticalAcrossThreadCounts) {
  for (OptimizerKind kind : {OptimizerKind::kAdamW, OptimizerKind::kLamb}) {
    const std::vector<float> result = thread_invariant(
        [&] {
          OptimizerOptions o;
          o.kind = kind;
          o.lr = 1e-3f;
          o.max_grad_norm = 0.5f;
          std::vector<TestParam> params = {{"big", random_floats(100003, 10), {}, true},
                                           {"small", random_floats(17, 11), {}, false}};
          Optimizer opt(o);
          for (TestParam& p : params) p.grad.resize(p.value.size());
          EXPECT_TRUE(register_all(opt, params).ok());
          for (int t = 0; t < 3; ++t) {
            for (size_t j = 0; j < params.size(); ++j) {
              fill_from(params[j].grad, random_floats(params[j].value.size(), 20 + 3 * t + j));
            }
            step_ok(opt, o.lr);
          }
          const std::vector<float> initial = random_floats(100003, 10);
          EXPECT_GT(test::max_abs_diff(params[0].value.data(), initial.data(), initial.size()), 1e-4);
          return concat({&params[0].value, &params[1].value});
        },
        kind == OptimizerKind::kLamb ? "lamb" : "adamw");
    EXPECT_FALSE(result.empty());
  }
}

// ---- checkpoint state ------------------------------------------------------------------------------------

std::vector<TestParam> state_test_params() {
  return {{"encoder.weight", random_floats(1000, 30), std::vector<float>(1000), true},
          {"encoder.bias", random_floats(7, 31), std::vector<float>(7), false}};
}

void set_grads(std::vector<TestParam>& params, int step) {
  for (size_t j = 0; j < params.size(); ++j) fill_from(params[j].grad, random_floats(params[j].value.size(), 100 * step + j));
}

// step(lr, zero_grads = true) (AdamW folds the clip and the zeroing into its update pass) gives the bits
// of step(lr) then zero_grads(), with clipping active and not; an error step zeroes nothing.
TEST(OptimizerClipping, StepWithZeroGradsMatchesStepThenZeroGrads) {
  for (OptimizerKind kind : {OptimizerKind::kAdamW, OptimizerKind::kLamb})
    for (float max_norm : {0.5f, 0.f}) {
      SCOPED_TRACE(std::string(kind == OptimizerKind::kLamb ? "lamb" : "adamw") + " max_grad_norm " +
                   std::to_string(max_norm));
      OptimizerOptions o;
      o.kind = kind;
      o.max_grad_norm = max_norm;  // the random gradients have norm ~18: 0.5 clips
      std::vector<TestParam> apart = state_test_params(), fused = state_test_params();
      Optimizer a(o), b(o);
      ASSERT_TRUE(register_all(a, apart).ok());
      ASSERT_TRUE(register_all(b, fused).ok());
      for (int t = 0; t < 3; ++t) {
        set_grads(apart, t), set_grads(fused, t);
        ASSERT_TRUE(a.step(1e-2f).ok());
        a.zero_grads();
        ASSERT_TRUE(b.step(1e-2f, /*zero_grads=*/true).ok());
        for (size_t j = 0; j < apart.size(); ++j) {
          EXPECT_TRUE(same_bits(fused[j].value, apart[j].value)) << apart[j].name << " step " << t;
          EXPECT_EQ(fused[j].grad, std::vector<float>(fused[j].grad.size(), 0.f)) << fused[j].name;
        }
      }
      const std::vector<TestParam> initial = state_test_params();
      EXPECT_GT(test::max_abs_diff(fused[0].value.data(), initial[0].value.data(), initial[0].value.size()), 1e-3);
      // A NaN gradient: an error, and the gradients stay as they were.
      set_grads(fused, 9);
      fused[1].grad[2] = std::numeric_limits<float>::quiet_NaN();
      const std::vector<float> grad_before = fused[0].grad;
      EXPECT_FALSE(b.step(1e-2f, true).ok());
      EXPECT_EQ(fused[0].grad, grad_before);
    }
}

TEST(OptimizerState, SaveLoadContinuesBitIdentically) {
  for (OptimizerKind kind : {OptimizerKind::kAdamW, OptimizerKind::kLamb}) {
    SCOPED_TRACE(kind == OptimizerKind::kLamb ? "lamb" : "adamw");
    OptimizerOptions o;
    o.kind = kind;
    o.max_grad_norm = 1.0f;  // the random gradients have norm ~18: clipping is active
    const float lr = 1e-2f;

    std::vector<TestParam> straight = state_test_params();
    Optimizer a(o);
    ASSERT_TRUE(register_all(a, straight).ok());
    for (int t = 0; t < 4; ++t) {
      set_grads(straight, t);
      step_ok(a, lr);
    }

    std::vector<TestParam> first_half = state_test_params();
    Optimizer b(o);
    ASSERT_TRUE(register_all(b, first_half).ok());
    for (int t = 0; t < 2; ++t) {
      set_grads(first_half, t);
      step_ok(b, lr);
    }
    const TensorMap saved = to_map(b.state());
    EXPECT_EQ(saved.size(), 1u + 2u * first_half.size());

    std::vector<TestParam> resumed = first_half;  // the parameters as a checkpoint would restore them
    Optimizer c(o);
    ASSERT_TRUE(register_all(c, resumed).ok());
    const Status loaded = c.load_state(saved);
    ASSERT_TRUE(loaded.ok()) << loaded.to_string();
    EXPECT_EQ(c.steps(), 2);
    for (int t = 2; t < 4; ++t) {
      set_grads(resumed, t);
      step_ok(c, lr);
    }
    EXPECT_EQ(c.steps(), 4);
    for (size_t j = 0; j < straight.size(); ++j) {
      EXPECT_TRUE(same_bits(resumed[j].value, straight[j].value)) << straight[j].name;
      const std::vector<TestParam> initial = state_test_params();
      EXPECT_GT(test::max_abs_diff(straight[j].value.data(), initial[j].value.data(), initial[j].value.size()), 1e-3);
    }
    const TensorMap resumed_state = to_map(c.state());
    for (const auto& [key, t] : a.state()) {
      const Tensor& other = resumed_state.at(key);
      EXPECT_EQ(std::memcmp(t.data, other.data, t.nbytes()), 0) << key;
    }
  }
}

TEST(OptimizerState, LoadRejectsMissingOrMisshapenTensorsByName) {
  std::vector<TestParam> params = {{"w", {1.f, -2.f, 3.f, -4.f, 5.f, -6.f}, {0.5f, 0.5f, -0.5f, 0.25f, -1.f, 2.f}, true},
                                   {"b", {0.5f, 1.f, -1.f}, {-1.f, 1.f, 0.5f}, false}};
  OptimizerOptions o;
  o.weight_decay = 0.f;
  Optimizer opt(o);
  ASSERT_TRUE(register_all(opt, params).ok());
  TensorMap good = to_map(opt.state());
  Tensor seven = make_owned_tensor(DType::kI64, {1});
  *static_cast<int64_t*>(mutable_data(seven)) = 7;
  good["opt.step"] = seven;  // a partial load would leave the count at 7

  struct Case {
    std::string what, must_name;
    std::function<void(TensorMap&)> spoil;
    ErrorCode code;
  };
  const std::vector<Case> cases = {
      {"missing v", "'opt.v.b'", [](TensorMap& m) { m.erase("opt.v.b"); }, ErrorCode::kNotFound},
      {"missing step", "'opt.step'", [](TensorMap& m) { m.erase("opt.step"); }, ErrorCode::kNotFound},
      {"wrong shape", "'opt.m.w'", [](TensorMap& m) { m["opt.m.w"] = make_owned_tensor(DType::kF32, {2, 3}); },
       ErrorCode::kInvalidArgument},
      {"wrong length", "'opt.v.w'", [](TensorMap& m) { m["opt.v.w"] = make_owned_tensor(DType::kF32, {5}); },
       ErrorCode::kInvalidArgument},
      {"wrong dtype", "'opt.m.b'", [](TensorMap& m) { m["opt.m.b"] = make_owned_tensor(DType::kF16, {3}); },
       ErrorCode::kInvalidArgument},
  };
  for (const Case& c : cases) {
    TensorMap spoiled = good;
    c.spoil(spoiled);
    const Status st = opt.load_state(spoiled);
    ASSERT_FALSE(st.ok()) << c.what;
    EXPECT_EQ(st.code(), c.code) << c.what;
    EXPECT_NE(st.message().find(c.must_name), std::string::npos) << c.what << ": " << st.message();
    EXPECT_EQ(opt.steps(), 0) << c.what;
  }
  const Status wrong_shape = [&] {
    TensorMap spoiled = good;
    spoiled["opt.m.w"] = make_owned_tensor(DType::kF32, {2, 3});
    return opt.load_state(spoiled);
  }();
  EXPECT_NE(wrong_shape.message().find("[2, 3]"), std::string::npos) << wrong_shape.message();

  // Nothing was loaded: the next step is still a first step (each parameter moves by lr * sign(g)).
  const std::vector<TestParam> before = params;
  step_ok(opt, 0.01f);
  for (size_t j = 0; j < params.size(); ++j) {
    for (size_t i = 0; i < params[j].value.size(); ++i) {
      EXPECT_NEAR(params[j].value[i] - before[j].value[i], -0.01 * sign(before[j].grad[i]), 1e-6) << params[j].name << i;
    }
  }
}

}  // namespace
}  // namespace bert
