// Flat parameter buffers, AdamW and SGD against double-precision references, gradient
// clipping, learning-rate schedules, the dynamic loss scaler and optimizer state round trips.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <numbers>

#include "gradcheck.h"
#include "ops/ops.h"
#include "optim/adamw.h"
#include "optim/clip.h"
#include "optim/loss_scaler.h"
#include "optim/schedule.h"
#include "optim/sgd.h"

using namespace tessera;
using namespace tessera::testing;

namespace {

// A small model's worth of parameters: matrices (decayed by default) and vectors (not), with
// sizes that are not multiples of the 16-element alignment.
std::vector<Tensor> make_params(uint64_t seed) {
  Generator g(seed);
  return {randn_param({4, 6}, g).set_name("w1"), randn_param({6}, g).set_name("b1"),
          randn_param({2, 3, 5}, g).set_name("w2"), randn_param({3}, g).set_name("gain")};
}

// Deterministic gradients for step `step`, written into the parameters' segments only (the
// padding stays zero, as after a backward).
void write_grads(FlatParameters& flat, int step) {
  Generator g(1000 + uint64_t(step));
  flat.zero_grad();
  for (const ParamSegment& s : flat.segments()) {
    std::vector<float> v = Tensor::randn(s.shape, g).to_vector();
    std::memcpy(flat.grad_data() + s.offset, v.data(), v.size() * sizeof(float));
  }
}

std::vector<double> to_double(const float* p, int64_t n) {
  return {p, p + n};
}

// |got - want| <= rel * max(1, |want|) elementwise: relative for O(1) and larger values, and
// on the parameters' own scale (randn, O(1)) for values passing near zero.
void expect_close(const float* got, const std::vector<double>& want, double rel,
                  const std::string& what) {
  for (size_t i = 0; i < want.size(); ++i)
    ASSERT_LE(std::abs(double(got[i]) - want[i]), rel * std::max(1.0, std::abs(want[i])))
        << what << "[" << i << "]: got " << got[i] << ", want " << want[i];
}

bool padding_is_zero(const FlatParameters& flat, const float* buf) {
  int64_t pos = 0;
  for (const ParamSegment& s : flat.segments()) {
    for (; pos < s.offset; ++pos)
      if (buf[pos] != 0.f) return false;
    pos = s.offset + s.numel;
  }
  for (; pos < flat.numel(); ++pos)
    if (buf[pos] != 0.f) return false;
  return true;
}

const Tensor& state_buffer(const OptimizerState& s, const std::string& name) {
  for (const auto& [n, t] : s.buffers)
    if (n == name) return t;
  throw Error("no state buffer " + name);
}

}  // namespace

// ---------------------------------------------------------------- FlatParameters

TEST(FlatParameters, ValuesAliasTheParameters) {
  std::vector<Tensor> params = make_params(1);
  std::vector<std::vector<float>> before;
  for (const Tensor& p : params) before.push_back(p.to_vector());
  Tensor held = params[2];  // a second handle, as a module keeps one
  FlatParameters flat(params);

  for (size_t i = 0; i < params.size(); ++i) {
    EXPECT_EQ(params[i].to_vector(), before[i]) << "values were not copied in";
    EXPECT_EQ(params[i].impl().storage, flat.values().impl().storage);
    EXPECT_EQ(params[i].raw_data(), flat.value_data() + flat.segments()[i].offset);
  }
  // Write through the flat buffer, read through the module's handle ...
  const ParamSegment& s2 = flat.segments()[2];
  flat.value_data()[s2.offset + 7] = 42.f;
  EXPECT_EQ(held.to_vector()[7], 42.f);
  // ... and the other way round.
  held.data<float>()[3] = -5.f;
  EXPECT_EQ(flat.values().to_vector()[size_t(s2.offset + 3)], -5.f);
  EXPECT_EQ(flat.param_numel(), 24 + 6 + 30 + 3);
}

TEST(FlatParameters, OffsetsAreAlignedAndPaddingIsZero) {
  std::vector<Tensor> params = make_params(2);
  FlatParameters flat(params);
  int64_t prev_end = 0;
  for (size_t i = 0; i < flat.size(); ++i) {
    const ParamSegment& s = flat.segments()[i];
    EXPECT_EQ(s.offset % FlatParameters::kAlignElems, 0) << s.name;
    EXPECT_GE(s.offset, prev_end) << s.name << " overlaps the previous parameter";
    EXPECT_LT(s.offset - prev_end, FlatParameters::kAlignElems) << s.name << ": padding too big";
    EXPECT_EQ(reinterpret_cast<uintptr_t>(params[i].raw_data()) % 64, 0u) << s.name;
    EXPECT_EQ(reinterpret_cast<uintptr_t>(params[i].grad().raw_data()) % 64, 0u) << s.name;
    EXPECT_EQ(s.numel, params[i].numel());
    EXPECT_EQ(s.name, params[i].name());
    prev_end = s.offset + s.numel;
  }
  EXPECT_EQ(flat.numel() % FlatParameters::kAlignElems, 0);
  EXPECT_GE(flat.numel(), prev_end);
  EXPECT_EQ(flat.find("w2"), 2);
  EXPECT_EQ(flat.find("nope"), -1);
  EXPECT_TRUE(padding_is_zero(flat, flat.value_data()));
}

TEST(FlatParameters, BackwardAccumulatesIntoTheFlatGradBuffer) {
  std::vector<Tensor> params = make_params(3);
  FlatParameters flat(params);
  const Tensor& a = params[0];
  const Tensor& b = params[1];
  auto loss = [&] { return ops::add(ops::sum(ops::mul(a, a)), ops::sum(ops::scale(b, 3.f))); };
  auto expect_grads = [&](float k) {  // grads == k * (d loss / d param)
    std::vector<float> av = a.to_vector(), ga = flat.grad_view(0).to_vector();
    for (size_t i = 0; i < av.size(); ++i) ASSERT_FLOAT_EQ(ga[i], k * 2.f * av[i]);
    for (float x : flat.grad_view(1).to_vector()) ASSERT_FLOAT_EQ(x, k * 3.f);
    for (size_t i = 2; i < flat.size(); ++i)
      for (float x : flat.grad_view(i).to_vector()) ASSERT_EQ(x, 0.f);
  };
  const float* grad_storage = flat.grad_data();

  loss().backward();
  expect_grads(1.f);
  EXPECT_EQ(a.grad().raw_data(), flat.grad_data() + flat.segments()[0].offset);
  loss().backward();
  expect_grads(2.f);  // accumulated in place

  flat.zero_grad();
  for (float x : flat.grads().to_vector()) ASSERT_EQ(x, 0.f);
  EXPECT_TRUE(a.grad().defined()) << "zero_grad must keep the views attached";
  loss().backward();
  expect_grads(1.f);
  EXPECT_EQ(flat.grad_data(), grad_storage);
  EXPECT_EQ(a.grad().raw_data(), flat.grad_data() + flat.segments()[0].offset);
  EXPECT_TRUE(padding_is_zero(flat, flat.grad_data()));
}

TEST(FlatParameters, ReattachesGradsDroppedByTensorZeroGrad) {
  std::vector<Tensor> params = make_params(4);
  FlatParameters flat(params);
  Tensor a = params[0];
  ops::sum(a).backward();
  a.zero_grad();  // the per-tensor API drops the view
  EXPECT_FALSE(a.grad().defined());
  flat.zero_grad();
  ASSERT_TRUE(a.grad().defined());
  EXPECT_EQ(a.grad().raw_data(), flat.grad_data() + flat.segments()[0].offset);
  for (float x : a.grad().to_vector()) EXPECT_EQ(x, 0.f);

  // A backward after Tensor::zero_grad() puts the gradient elsewhere; sync_grads copies it in.
  a.zero_grad();
  ops::sum(ops::scale(a, 2.f)).backward();
  EXPECT_NE(a.grad().raw_data(), flat.grad_data() + flat.segments()[0].offset);
  flat.sync_grads();
  EXPECT_EQ(a.grad().raw_data(), flat.grad_data() + flat.segments()[0].offset);
  for (float x : flat.grad_view(0).to_vector()) EXPECT_EQ(x, 2.f);
}

TEST(FlatParameters, AdoptsExistingGradients) {
  std::vector<Tensor> params = make_params(5);
  ops::sum(ops::scale(params[1], -4.f)).backward();
  FlatParameters flat(params);
  for (float x : flat.grad_view(1).to_vector()) EXPECT_EQ(x, -4.f);
  for (float x : flat.grad_view(0).to_vector()) EXPECT_EQ(x, 0.f);
}

TEST(FlatParameters, RejectsBadParameters) {
  Generator g(6);
  expect_error([&] { FlatParameters f(std::vector<Tensor>{}); }, {"empty"});
  expect_error([&] { FlatParameters f({Tensor::randn({3}, g).set_name("x")}); },
               {"'x'", "does not require grad"});
  expect_error(
      [&] { FlatParameters f({Tensor::randn({3}, g, 0, 1, DType::bf16).set_requires_grad()}); },
      {"#0", "bf16[3]", "expected f32"});
  Tensor p = randn_param({3}, g).set_name("p");
  expect_error([&] { FlatParameters f({ops::scale(p, 2.f)}); }, {"not a leaf"});
  expect_error([&] { FlatParameters f({p, p}); }, {"'p'", "share storage"});
}

// ---------------------------------------------------------------- AdamW

namespace {

// Above cpu::kParallelGrain elements, so the steps run the multi-threaded path, with several
// short parameters (runs of a few elements per thread) between long ones.
std::vector<Tensor> make_large_params(uint64_t seed) {
  Generator g(seed);
  return {randn_param({180, 190}, g).set_name("big"), randn_param({190}, g).set_name("bias"),
          randn_param({3, 7}, g).set_name("small"),   randn_param({5}, g).set_name("gain"),
          randn_param({64, 33}, g).set_name("w"),     randn_param({100, 100}, g).set_name("w2")};
}

// Six AdamW steps at varying learning rates against textbook AdamW in double, one parameter at
// a time, with the default decay flags except parameter 2 flipped.
void check_adamw_against_reference(std::vector<Tensor> params) {
  FlatParameters flat(params);
  AdamWOptions opt;
  opt.beta1 = 0.9f;
  opt.beta2 = 0.99f;
  opt.eps = 1e-6f;
  opt.weight_decay = 0.1f;
  AdamW adam(flat, opt);
  for (size_t k = 0; k < flat.size(); ++k)
    EXPECT_EQ(adam.decays(k), params[k].ndim() >= 2) << "default decay of " << params[k].name();
  adam.set_decay(2, !adam.decays(2));

  const int64_t n = flat.numel();
  std::vector<double> p = to_double(flat.value_data(), n), m(size_t(n), 0.0), v(size_t(n), 0.0);
  const double b1 = opt.beta1, b2 = opt.beta2, eps = opt.eps, wd = opt.weight_decay;
  const float lrs[] = {1e-2f, 3e-2f, 2e-2f, 5e-3f, 1e-2f, 4e-2f};
  for (int t = 1; t <= 6; ++t) {
    const float lr = lrs[t - 1];
    write_grads(flat, t);
    for (size_t k = 0; k < flat.size(); ++k) {
      const ParamSegment& s = flat.segments()[k];
      for (int64_t i = s.offset; i < s.offset + s.numel; ++i) {
        const double g = flat.grad_data()[i];
        if (adam.decays(k)) p[i] -= lr * wd * p[i];
        m[i] = b1 * m[i] + (1 - b1) * g;
        v[i] = b2 * v[i] + (1 - b2) * g * g;
        const double mhat = m[i] / (1 - std::pow(b1, t)), vhat = v[i] / (1 - std::pow(b2, t));
        p[i] -= lr * mhat / (std::sqrt(vhat) + eps);
      }
    }
    adam.step(lr);
    ASSERT_EQ(adam.step_count(), t);
    expect_close(flat.value_data(), p, 1e-6, "param after step " + std::to_string(t));
  }
  OptimizerState st = adam.state();
  expect_close(state_buffer(st, "exp_avg").data<float>(), m, 1e-6, "exp_avg");
  expect_close(state_buffer(st, "exp_avg_sq").data<float>(), v, 1e-6, "exp_avg_sq");
  EXPECT_TRUE(padding_is_zero(flat, flat.value_data()));
}

}  // namespace

TEST(AdamW, MatchesDoubleReference) {
  check_adamw_against_reference(make_params(7));
}

TEST(AdamW, MatchesDoubleReferenceOnTheParallelPath) {
  check_adamw_against_reference(make_large_params(17));
}

TEST(AdamW, CustomDecayFilter) {
  std::vector<Tensor> params = make_params(8);
  FlatParameters flat(params);
  AdamWOptions opt;
  opt.decay_filter = [](const Tensor& p) { return p.name() == "gain"; };
  AdamW adam(flat, opt);
  EXPECT_FALSE(adam.decays(0));
  EXPECT_TRUE(adam.decays(3));
  // With a zero gradient only the decay moves a parameter.
  std::vector<float> before = flat.values().to_vector();
  flat.zero_grad();
  adam.step(0.5f);
  std::vector<float> after = flat.values().to_vector();
  for (size_t k = 0; k < flat.size(); ++k) {
    const ParamSegment& s = flat.segments()[k];
    const float keep = adam.decays(k) ? 1.f - 0.5f * opt.weight_decay : 1.f;
    for (int64_t i = s.offset; i < s.offset + s.numel; ++i)
      ASSERT_FLOAT_EQ(after[size_t(i)], before[size_t(i)] * keep) << s.name;
  }
}

TEST(AdamW, MinimisesLeastSquares) {
  // min over (x, c) of mean((A x + c - y)^2), y = A x* + c*: the optimum has zero loss.
  Generator g(9);
  Tensor A = Tensor::randn({32, 8}, g);
  Tensor x_true = Tensor::randn({8, 1}, g), c_true = Tensor::randn({1}, g);
  Tensor y = ops::add(ops::matmul(A, x_true), c_true);
  Tensor x = randn_param({8, 1}, g).set_name("x");
  Tensor c = Tensor::zeros({1}).set_requires_grad().set_name("c");
  FlatParameters flat({x, c});
  AdamWOptions opt;
  opt.weight_decay = 0.f;  // decay would move the optimum away from zero loss
  AdamW adam(flat, opt);
  LRSchedule sched({ScheduleKind::cosine, 0.1f, 1e-3f, 20, 400});
  auto loss_fn = [&] {
    Tensor r = ops::add(ops::add(ops::matmul(A, x), c), ops::scale(y, -1.f));
    return ops::mean(ops::mul(r, r));
  };
  const float first = loss_fn().item();
  for (int64_t step = 0; step < 400; ++step) {
    flat.zero_grad();
    loss_fn().backward();
    adam.step(sched(step));
  }
  const float last = loss_fn().item();
  EXPECT_LT(last, first / 100.f) << "loss " << first << " -> " << last;
}

// ---------------------------------------------------------------- SGD

TEST(SGD, MomentumMatchesDoubleReference) {
  for (bool large : {false, true})
    for (bool nesterov : {false, true}) {
      std::vector<Tensor> params = large ? make_large_params(18) : make_params(10);
      FlatParameters flat(params);
      SGDOptions opt;
      opt.momentum = 0.8f;
      opt.nesterov = nesterov;
      opt.weight_decay = 0.05f;
      SGD sgd(flat, opt);
      const int64_t n = flat.numel();
      std::vector<double> p = to_double(flat.value_data(), n), buf(size_t(n), 0.0);
      const double mu = opt.momentum, wd = opt.weight_decay;
      for (int t = 1; t <= 5; ++t) {
        const float lr = 0.05f * float(t);
        write_grads(flat, t);
        for (size_t k = 0; k < flat.size(); ++k) {
          const ParamSegment& s = flat.segments()[k];
          for (int64_t i = s.offset; i < s.offset + s.numel; ++i) {
            double g = flat.grad_data()[i];
            if (sgd.decays(k)) g += wd * p[i];
            buf[i] = mu * buf[i] + g;
            p[i] -= lr * (nesterov ? g + mu * buf[i] : buf[i]);
          }
        }
        sgd.step(lr);
        expect_close(flat.value_data(), p, 1e-6,
                     fmt::format("large={} nesterov={} param after step {}", large, nesterov, t));
      }
      expect_close(state_buffer(sgd.state(), "momentum").data<float>(), buf, 1e-6, "momentum");
    }
}

TEST(SGD, PlainStepAndOptionChecks) {
  std::vector<Tensor> params = make_params(11);
  FlatParameters flat(params);
  SGD sgd(flat);
  EXPECT_TRUE(sgd.state().buffers.empty());
  std::vector<float> before = flat.values().to_vector();
  write_grads(flat, 1);
  std::vector<float> grads = flat.grads().to_vector();
  sgd.step(0.25f);
  std::vector<float> after = flat.values().to_vector();
  for (size_t i = 0; i < after.size(); ++i) ASSERT_FLOAT_EQ(after[i], before[i] - 0.25f * grads[i]);

  SGDOptions bad;
  bad.nesterov = true;
  expect_error([&] { SGD s(flat, bad); }, {"sgd", "nesterov"});
  expect_error([&] { sgd.step(-1.f); }, {"sgd", "learning rate -1"});
  expect_error([&] { sgd.step(std::numeric_limits<float>::quiet_NaN()); }, {"learning rate"});
}

// ---------------------------------------------------------------- clipping

TEST(ClipGradNorm, NormAndClipping) {
  for (bool large : {false, true}) {
    std::vector<Tensor> params = large ? make_large_params(12) : make_params(12);
    FlatParameters flat(params);
    write_grads(flat, 1);
    auto ref_norm = [&] {
      double s = 0;
      for (const ParamSegment& seg : flat.segments())
        for (int64_t i = seg.offset; i < seg.offset + seg.numel; ++i)
          s += double(flat.grad_data()[i]) * double(flat.grad_data()[i]);
      return std::sqrt(s);
    };
    const double norm = ref_norm();
    ASSERT_GT(norm, 1.0);

    // Below the threshold: reported, nothing changes.
    std::vector<float> before = flat.grads().to_vector();
    EXPECT_NEAR(clip_grad_norm(flat, norm * 2), norm, 1e-12 * norm);
    EXPECT_EQ(flat.grads().to_vector(), before);

    // Above: reported before clipping, and the clipped norm is max_norm.
    const double max_norm = norm / 3;
    EXPECT_NEAR(clip_grad_norm(flat, max_norm), norm, 1e-12 * norm);
    EXPECT_NEAR(ref_norm(), max_norm, 1e-6 * max_norm);
    std::vector<float> after = flat.grads().to_vector();
    for (size_t i = 0; i < after.size(); ++i)
      ASSERT_NEAR(after[i], before[i] / 3.f, 1e-6f * std::abs(before[i]) + 1e-7f);
    EXPECT_NEAR(grad_norm(flat), max_norm, 1e-6 * max_norm);

    expect_error([&] { clip_grad_norm(flat, 0.0); }, {"clip_grad_norm", "max_norm 0"});
  }
}

TEST(ClipGradNorm, NonFiniteNormIsReturnedUnscaled) {
  std::vector<Tensor> params = make_params(13);
  FlatParameters flat(params);
  for (float bad : {std::numeric_limits<float>::infinity(), std::nanf("")}) {
    write_grads(flat, 2);
    flat.grad_data()[flat.segments()[2].offset + 4] = bad;
    std::vector<float> before = flat.grads().to_vector();
    const double norm = clip_grad_norm(flat, 1.0);
    EXPECT_FALSE(std::isfinite(norm));
    EXPECT_EQ(std::isnan(norm), std::isnan(bad));
    std::vector<float> after = flat.grads().to_vector();
    EXPECT_EQ(std::memcmp(after.data(), before.data(), after.size() * sizeof(float)), 0)
        << "scaled despite a norm of " << norm;
  }
}

// ---------------------------------------------------------------- schedules

TEST(Schedule, WarmupThenCosine) {
  // total 111 with 10 warm-up steps: the decay spans steps 10..110, midpoint at 60.
  const float peak = 1.f, lo = 0.1f;
  LRSchedule s({ScheduleKind::cosine, peak, lo, 10, 111});
  EXPECT_FLOAT_EQ(s(0), peak / 11.f);
  EXPECT_FLOAT_EQ(s(9), peak * 10.f / 11.f);
  EXPECT_FLOAT_EQ(s(10), peak);
  EXPECT_FLOAT_EQ(s(60), (peak + lo) / 2.f);
  EXPECT_FLOAT_EQ(s(35),
                  lo + 0.5f * (1.f + std::cos(std::numbers::pi_v<float> / 4.f)) * (peak - lo));
  EXPECT_FLOAT_EQ(s(110), lo);
  EXPECT_FLOAT_EQ(s(500), lo);  // held after the end
  for (int64_t t = 1; t < 10; ++t) EXPECT_GT(s(t), s(t - 1)) << t;
  for (int64_t t = 11; t < 111; ++t) EXPECT_LT(s(t), s(t - 1)) << t;
  expect_error([&] { s(-1); }, {"cosine", "step -1"});
}

TEST(Schedule, ConstantAndParsing) {
  LRSchedule c({ScheduleKind::constant, 3e-4f, 0.f, 0, 0});
  for (int64_t t : {0, 1, 1000}) EXPECT_EQ(c(t), 3e-4f);
  LRSchedule cw({ScheduleKind::constant, 1.f, 0.f, 3, 0});
  EXPECT_FLOAT_EQ(cw(0), 0.25f);
  EXPECT_FLOAT_EQ(cw(3), 1.f);

  EXPECT_EQ(parse_schedule_kind("constant"), ScheduleKind::constant);
  EXPECT_EQ(parse_schedule_kind("cosine"), ScheduleKind::cosine);
  expect_error([] { parse_schedule_kind("linear"); }, {"'linear'", "constant", "cosine"});
  expect_error(
      [] {
        LRSchedule({ScheduleKind::cosine, 1.f, 0.f, 10, 10});
      },
      {"total_steps 10", "warmup_steps 10"});
  expect_error([] { LRSchedule({ScheduleKind::cosine, 1.f, 2.f, 0, 10}); }, {"min_lr 2"});
}

// ---------------------------------------------------------------- loss scaling

TEST(LossScaler, UnscalesAScaledBackward) {
  std::vector<Tensor> params = make_params(14);
  FlatParameters flat(params);
  DynamicLossScaler scaler;
  EXPECT_EQ(scaler.scale(), 65536.f);
  const Tensor& a = params[0];
  scaler.scale_loss(ops::sum(ops::mul(a, a))).backward();
  std::vector<float> av = a.to_vector(), scaled = flat.grad_view(0).to_vector();
  for (size_t i = 0; i < av.size(); ++i) ASSERT_EQ(scaled[i], 65536.f * 2.f * av[i]);
  EXPECT_TRUE(scaler.unscale(flat));
  std::vector<float> g = flat.grad_view(0).to_vector();
  for (size_t i = 0; i < av.size(); ++i) ASSERT_EQ(g[i], 2.f * av[i]);  // powers of 2: exact
  expect_error([&] { scaler.unscale(flat); }, {"unscale called twice"});
  EXPECT_TRUE(scaler.update(true));
}

TEST(LossScaler, BacksOffOnOverflowAndGrowsAfterCleanSteps) {
  std::vector<Tensor> params = make_params(15);
  FlatParameters flat(params);
  LossScalerOptions opt;
  opt.growth_interval = 3;
  DynamicLossScaler scaler(opt);

  for (float bad : {std::numeric_limits<float>::infinity(), std::nanf("")}) {
    const float scale = scaler.scale();
    write_grads(flat, 1);
    flat.grad_data()[flat.segments()[1].offset] = bad;
    EXPECT_FALSE(scaler.unscale(flat));
    EXPECT_FALSE(scaler.update(false));
    EXPECT_EQ(scaler.scale(), scale / 2);
  }
  EXPECT_EQ(scaler.scale(), 16384.f);
  EXPECT_EQ(scaler.skipped_steps(), 2);

  // growth_interval clean steps in a row double the scale, not fewer.
  for (int i = 0; i < 2; ++i) {
    write_grads(flat, 2 + i);
    EXPECT_TRUE(scaler.unscale(flat));
    EXPECT_TRUE(scaler.update(true));
    EXPECT_EQ(scaler.scale(), 16384.f) << "grew too early";
  }
  write_grads(flat, 4);
  EXPECT_TRUE(scaler.update(scaler.unscale(flat)));
  EXPECT_EQ(scaler.scale(), 32768.f);
  EXPECT_EQ(scaler.clean_steps(), 0);
  EXPECT_EQ(scaler.skipped_steps(), 2);

  // An overflow resets the clean-step count.
  scaler.update(true);
  scaler.update(true);
  scaler.update(false);
  scaler.update(true);
  scaler.update(true);
  EXPECT_EQ(scaler.scale(), 16384.f);

  // The state round trip resumes the counters.
  DynamicLossScaler other(opt);
  other.load_state(scaler.state());
  other.update(true);
  EXPECT_EQ(other.scale(), 32768.f);
  EXPECT_EQ(other.skipped_steps(), 3);
}

TEST(LossScaler, DisabledOnlyChecksFiniteness) {
  std::vector<Tensor> params = make_params(16);
  FlatParameters flat(params);
  LossScalerOptions opt;
  opt.enabled = false;
  DynamicLossScaler scaler(opt);
  EXPECT_EQ(scaler.scale(), 1.f);
  write_grads(flat, 1);
  std::vector<float> before = flat.grads().to_vector();
  EXPECT_TRUE(scaler.unscale(flat));
  EXPECT_EQ(flat.grads().to_vector(), before);
  scaler.update(true);
  flat.grad_data()[0] = std::numeric_limits<float>::infinity();
  EXPECT_FALSE(scaler.unscale(flat));
  scaler.update(false);
  EXPECT_EQ(scaler.scale(), 1.f);
  EXPECT_EQ(scaler.skipped_steps(), 1);
}

// ---------------------------------------------------------------- state round trip

namespace {

// Runs `make` optimizers on two copies of one model: A steps 3 times, B is built from A's
// parameters and loads A's state, then both take 4 more identical steps. They must agree to
// the bit; a B that skipped load_state must not.
template <class Make>
void check_resume_is_bit_identical(Make make, bool large) {
  auto copy_params = [](const FlatParameters& src) {
    std::vector<Tensor> out;
    for (const Tensor& p : src.params())
      out.push_back(p.clone().set_requires_grad().set_name(p.name()));
    return out;
  };
  FlatParameters flat_a(large ? make_large_params(20) : make_params(20));
  auto opt_a = make(flat_a);
  for (int t = 0; t < 3; ++t) {
    write_grads(flat_a, t);
    opt_a->step(1e-2f);
  }
  FlatParameters flat_b(copy_params(flat_a)), flat_c(copy_params(flat_a));
  auto opt_b = make(flat_b);
  auto opt_c = make(flat_c);  // not restored
  opt_b->load_state(opt_a->state());
  EXPECT_EQ(opt_b->step_count(), 3);
  for (int t = 3; t < 7; ++t) {
    for (auto* f : {&flat_a, &flat_b, &flat_c}) write_grads(*f, t);
    opt_a->step(2e-2f);
    opt_b->step(2e-2f);
    opt_c->step(2e-2f);
  }
  const size_t bytes = size_t(flat_a.numel()) * sizeof(float);
  EXPECT_EQ(std::memcmp(flat_a.value_data(), flat_b.value_data(), bytes), 0);
  EXPECT_NE(std::memcmp(flat_a.value_data(), flat_c.value_data(), bytes), 0)
      << "state did not matter: the test cannot tell a restore from none";
  OptimizerState sa = opt_a->state(), sb = opt_b->state();
  ASSERT_EQ(sa.buffers.size(), sb.buffers.size());
  for (size_t i = 0; i < sa.buffers.size(); ++i)
    EXPECT_EQ(std::memcmp(sa.buffers[i].second.raw_data(), sb.buffers[i].second.raw_data(), bytes),
              0)
        << sa.buffers[i].first;
}

}  // namespace

TEST(OptimizerState, AdamWResumesBitIdentically) {
  for (bool large : {false, true})
    check_resume_is_bit_identical(
        [](FlatParameters& f) { return std::make_unique<AdamW>(f, AdamWOptions{}); }, large);
}

TEST(OptimizerState, SGDResumesBitIdentically) {
  auto make = [](FlatParameters& f) {
    SGDOptions o;
    o.momentum = 0.9f;
    o.nesterov = true;
    o.weight_decay = 0.01f;
    return std::make_unique<SGD>(f, o);
  };
  for (bool large : {false, true}) check_resume_is_bit_identical(make, large);
}

TEST(OptimizerState, RefusesMismatchedState) {
  FlatParameters flat(make_params(21));
  AdamW adam(flat);
  SGDOptions o;
  o.momentum = 0.9f;
  SGD sgd(flat, o);
  expect_error([&] { sgd.load_state(adam.state()); }, {"sgd", "'adamw'"});

  Generator g(22);
  FlatParameters small({randn_param({3}, g)});
  AdamW adam_small(small);
  expect_error([&] { adam.load_state(adam_small.state()); },
               {"adamw", "exp_avg", "f32[16]", "different parameter layout"});
  adam.load_state(adam.state());  // its own live buffers: a no-op, not a self-overlapping copy
}
