// The fused CUDA AdamW and SGD and the fp16 loss scaler's unscale-and-check against the CPU
// optimizers and scaler themselves (optim/adamw.h, optim/sgd.h, optim/loss_scaler.h) on flat
// parameter buffers with fresh random values. Without a device every device test is skipped;
// the argument checks at the end run everywhere.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "core/backend.h"
#include "core/rng.h"
#include "cuda_test_util.h"
#include "kernels/cuda/optim.h"
#include "optim/adamw.h"
#include "optim/flat_params.h"
#include "optim/loss_scaler.h"
#include "optim/sgd.h"

using namespace tessera;
using namespace tessera::cudatest;

namespace {

class CudaOptim : public CudaTest {};

// A model-like mix: matrices (decayed) and vectors (not), so the decay runs alternate.
std::vector<Tensor> make_params(Generator& gen) {
  std::vector<Tensor> ps;
  for (Shape s : {Shape{64, 33}, Shape{33}, Shape{7, 5, 3}, Shape{5}, Shape{129, 16}})
    ps.push_back(Tensor::randn(s, gen).set_requires_grad());
  return ps;
}

// Random gradients inside the parameters, zero in the alignment padding (as autograd leaves it).
std::vector<float> random_grads(Rng& rng, const FlatParameters& flat, float scale) {
  std::vector<float> g(static_cast<size_t>(flat.numel()), 0.f);
  for (const ParamSegment& s : flat.segments()) {
    const std::vector<float> v = rng.normal(static_cast<size_t>(s.numel), scale);
    std::copy(v.begin(), v.end(), g.begin() + s.offset);
  }
  return g;
}

std::vector<float> values(const Tensor& t) {
  const float* p = t.data<float>();
  return std::vector<float>(p, p + t.numel());
}

TEST_F(CudaOptim, AdamWMatchesTheCpuOptimizer) {
  Rng rng;
  TS_TRACE_SEED(rng);
  Generator gen(rng.u64());
  FlatParameters flat(make_params(gen));
  AdamWOptions opt;
  opt.weight_decay = 0.1f;
  AdamW adam(flat, opt);
  const int64_t n = flat.numel();

  // The same decay runs as Optimizer::rebuild_runs, one per parameter (adjacent equal ones
  // need not merge for the kernel).
  std::vector<cuda::DecayRange> runs;
  const auto& segs = flat.segments();
  for (size_t i = 0; i < segs.size(); ++i)
    runs.push_back(
        {segs[i].offset, i + 1 < segs.size() ? segs[i + 1].offset : n, adam.decays(i) ? 1 : 0});
  DevBuf<cuda::DecayRange> druns(runs);
  DevBuf<float> dp(values(flat.values())), dg(static_cast<size_t>(n));
  DevBuf<float> dm(std::vector<float>(static_cast<size_t>(n), 0.f));
  DevBuf<float> dv(std::vector<float>(static_cast<size_t>(n), 0.f));
  DevBuf<bf16> dp16(static_cast<size_t>(n));

  const float lr = 3e-3f;
  for (int64_t t = 1; t <= 3; ++t) {
    const std::vector<float> g = random_grads(rng, flat, 0.5f);
    std::copy(g.begin(), g.end(), flat.grad_data());
    adam.step(lr);
    dg.upload(g);
    cuda::AdamWStep a;
    a.p = dp.get(), a.g = dg.get(), a.m = dm.get(), a.v = dv.get(), a.n = n;
    a.runs = druns.get(), a.nruns = int32_t(runs.size());
    a.beta1 = opt.beta1, a.beta2 = opt.beta2, a.eps = opt.eps;
    a.p_bf16 = dp16.get();
    cuda::adamw_coefficients(a, lr, opt.weight_decay, t);
    cuda::adamw_step(a);
  }
  const OptimizerState st = adam.state();
  ASSERT_EQ(st.buffers.size(), 2u);
  expect_close("adamw params (3 steps)", "f32", dp.download(), values(flat.values()), 1e-5);
  expect_close("adamw exp_avg", "f32", dm.download(), values(st.buffers[0].second), 1e-5);
  expect_close("adamw exp_avg_sq", "f32", dv.download(), values(st.buffers[1].second), 1e-5);
  expect_close("adamw bf16 copy", dp16.download(), to_storage<bf16>(values(flat.values())));
}

TEST_F(CudaOptim, UnscaleAndCheckMatchesTheLossScaler) {
  Rng rng;
  TS_TRACE_SEED(rng);
  Generator gen(rng.u64());
  FlatParameters flat(make_params(gen));
  DynamicLossScaler scaler;
  const int64_t n = flat.numel();
  const float bad_values[] = {0.f, std::numeric_limits<float>::infinity(), NAN};
  for (float bad : bad_values) {
    std::vector<float> g = random_grads(rng, flat, scaler.scale());
    if (bad != 0.f) g[static_cast<size_t>(flat.segments()[2].offset + 4)] = bad;
    std::copy(g.begin(), g.end(), flat.grad_data());
    DevBuf<float> dg(g);
    const float inv = 1.f / scaler.scale();
    const bool cpu_ok = scaler.unscale(flat);
    const bool gpu_ok = cuda::unscale_grads(dg.get(), n, inv);
    EXPECT_EQ(gpu_ok, cpu_ok) << "finiteness verdict with injected " << bad;
    EXPECT_EQ(cpu_ok, bad == 0.f);
    // One multiply by the same f32 inverse on both sides: bit-identical (NaN compared as NaN).
    expect_exact(bad == 0.f ? "unscale (finite)" : "unscale (inf/nan injected)", "f32",
                 canonical_bits(dg.download()), canonical_bits(values(flat.grads())));
    scaler.update(cpu_ok);
  }
}

// tessera::SGD on flat buffers on the GPU (one cuda::sgd_step launch per step) against the same
// optimizer on the CPU: three steps, then a changed decay layout (the device copy of the decay
// runs must follow set_decay), then two more. Parameters and momentum buffer compared.
void check_sgd(const SGDOptions& opt, const std::string& label) {
  SCOPED_TRACE(label);
  Rng rng;
  TS_TRACE_SEED(rng);
  Generator gen(rng.u64());
  std::vector<Tensor> host_params = make_params(gen), dev_params;
  for (const Tensor& p : host_params)
    dev_params.push_back(p.clone().to(Device::cuda(0)).set_requires_grad());
  FlatParameters flat(host_params), dflat(dev_params);
  ASSERT_TRUE(dflat.device() == Device::cuda(0));
  SGD sgd(flat, opt), dsgd(dflat, opt);
  const OptimizerState dst = dsgd.state();
  ASSERT_EQ(dst.buffers.size(), opt.momentum > 0 ? 1u : 0u);
  for (const auto& [name, buf] : dst.buffers)
    EXPECT_TRUE(buf.is_cuda()) << "SGD state '" << name << "' is on " << buf.device().str();
  const float lr = 0.05f;
  for (int t = 1; t <= 5; ++t) {
    if (t == 4) {  // the first parameter (a matrix, decayed by default) stops decaying
      sgd.set_decay(0, !sgd.decays(0));
      dsgd.set_decay(0, !dsgd.decays(0));
    }
    const std::vector<float> g = random_grads(rng, flat, 0.5f);
    std::copy(g.begin(), g.end(), flat.grad_data());
    dflat.grads().copy_from(Tensor::from_vector(g, Shape{flat.numel()}));
    sgd.step(lr);
    dsgd.step(lr);
  }
  // The same formula per element; the compilers may contract differently (FMA), a few ulps.
  expect_close("sgd params (5 steps) " + label, "f32", dflat.values().to_vector(),
               values(flat.values()), tol<float>());
  if (opt.momentum > 0)
    expect_close("sgd momentum (5 steps) " + label, "f32",
                 dsgd.state().buffers[0].second.to_vector(), values(sgd.state().buffers[0].second),
                 tol<float>());
}

TEST_F(CudaOptim, SGDMatchesTheCpuOptimizer) {
  SGDOptions plain;
  check_sgd(plain, "plain");
  SGDOptions decay;
  decay.weight_decay = 0.1f;
  check_sgd(decay, "weight decay");
  SGDOptions momentum;
  momentum.momentum = 0.9f, momentum.weight_decay = 0.05f;
  check_sgd(momentum, "momentum + decay");
  SGDOptions nesterov;
  nesterov.momentum = 0.8f, nesterov.nesterov = true, nesterov.weight_decay = 0.05f;
  check_sgd(nesterov, "nesterov + decay");
}

// Argument errors are raised on the host before any launch: no device needed.
// Bitwise equality of two doubles, NaN equal to NaN.
bool same_f64(double a, double b) {
  return (std::isnan(a) && std::isnan(b)) || std::memcmp(&a, &b, sizeof a) == 0;
}

// decide_step, the verdict a device-decided training step's update kernels read
// (train/step_decider.h), against the host's rules step by step: DynamicLossScaler::update, the
// trainer's fp16 overflow test and DDP's / ZeRO's unscale-and-clip. Two ranks' random sums with
// inf and NaN injected (the second rank's squares a replica's, not added, every third step; the
// first rank's loss not one of the mean's, a pipeline's first stage, every fourth), a clip at 1, a
// loss scale that grows every 3 clean steps and backs off by 4x to its floor of 0.5, reached at
// least once; every field, every step.
TEST_F(CudaOptim, DecideStepAppliesTheHostRules) {
  Rng rng;
  TS_TRACE_SEED(rng);
  const Device gpu = Device::cuda(0);
  const DeviceBackend& b = backend_for(gpu);
  LossScalerOptions so;
  so.init_scale = 8.f;
  so.growth_interval = 3;
  so.backoff_factor = 0.25f;
  so.min_scale = 0.5f;
  DynamicLossScaler host(so);
  StepGate g;
  g.loss_scale = so.init_scale;
  Tensor gate = Tensor::empty({8}, DType::i64, gpu), sums = Tensor::empty({8}, DType::i64, gpu);
  Tensor record = Tensor::empty({4}, DType::i64, gpu);
  static_assert(sizeof(StepGate) <= 64 && sizeof(RankStepSums) * 2 == 64 &&
                sizeof(StepRecord) == 32);
  b.copy_from_host(gate.raw_data(), &g, sizeof g);
  int64_t applied = 0, grown = 0, floored = 0;
  for (int step = 0; step < 300; ++step) {
    SCOPED_TRACE("step " + std::to_string(step));
    const std::vector<float> u = rng.uniform(8, 0.f, 1.f);
    const float scale = host.scale();
    RankStepSums s[2];
    for (int r = 0; r < 2; ++r) {
      // Norms around the clip (each rank's share up to 2 x (scale)^2) and losses near 3.
      s[r].squares = double(u[size_t(r)]) * 2.0 * double(scale) * double(scale);
      s[r].loss = 3.0 + double(u[size_t(2 + r)]);
    }
    s[0].counted = 1;
    s[1].counted = step % 3 == 0 ? 0 : 1;  // a replica's squares are not added
    // A pipeline's first stage has no loss (its sum stays 0; a NaN there must not count).
    if (step % 4 == 1) s[0].loss_counted = 0, s[0].loss = step % 8 == 1 ? 0.0 : std::nan("");
    if (u[4] < 0.12f) s[u[5] < 0.5f ? 0 : 1].squares = std::numeric_limits<double>::infinity();
    if (u[6] < 0.05f) s[1].loss = std::numeric_limits<double>::quiet_NaN();
    if (u[7] < 0.04f) s[0].squares = std::numeric_limits<double>::quiet_NaN();
    // From step 150 on, overflow until the scale has reached its floor: random overflows rarely
    // come close enough together to back off past the growth (one run in a few hundred).
    if (step >= 150 && floored == 0) s[0].squares = std::numeric_limits<double>::infinity();
    b.copy_from_host(sums.raw_data(), s, sizeof s);
    StepDecisionArgs a;
    a.gate = static_cast<StepGate*>(gate.raw_data());
    a.record = static_cast<StepRecord*>(record.raw_data());
    a.sums = static_cast<const RankStepSums*>(sums.raw_data());
    a.ranks = 2;
    a.micro_batches = 2;
    a.max_norm = 1.0;
    a.scaler_enabled = 1;
    a.growth_factor = so.growth_factor, a.backoff_factor = so.backoff_factor;
    a.min_scale = so.min_scale, a.growth_interval = so.growth_interval;
    b.decide_step(a);
    StepGate got;
    StepRecord rec;
    b.copy_to_host(&got, gate.raw_data(), sizeof got);
    b.copy_to_host(&rec, record.raw_data(), sizeof rec);
    b.synchronize();

    // The host: the sums as Communicator::sum_f64 / average_f64 form them (a pipeline's loss:
    // its last stage's), then the trainer.
    double squares = 0, loss = 0, losses = 0;
    for (const RankStepSums& r : s) {
      if (r.counted != 0) squares += r.squares;
      if (r.loss_counted != 0) loss += r.loss, losses += 1;
    }
    loss /= losses;
    const double norm = std::sqrt(squares) / double(scale);
    const bool finite_loss = std::isfinite(loss), finite_norm = std::isfinite(norm);
    const bool ok = finite_loss && finite_norm;
    const bool overflow = !ok && finite_loss && scale > so.min_scale;
    double factor = 1.0 / double(scale);
    if (norm > 1.0) factor *= 1.0 / norm;
    host.update(ok);
    applied += ok;
    grown += host.scale() > scale;
    floored += host.scale() == so.min_scale;

    EXPECT_TRUE(same_f64(rec.loss, loss)) << rec.loss << " vs " << loss;
    EXPECT_TRUE(same_f64(rec.grad_norm, norm)) << rec.grad_norm << " vs " << norm;
    EXPECT_EQ(rec.outcome, ok ? kStepApplied : overflow ? kStepOverflow : kStepBad);
    EXPECT_EQ(got.skip, ok ? 0 : 1);
    if (finite_norm) {
      EXPECT_EQ(got.factor, float(factor));
    }
    EXPECT_EQ(rec.scale_used, scale);
    EXPECT_EQ(rec.scale_after, host.scale());
    EXPECT_EQ(got.loss_scale, host.scale());
    EXPECT_EQ(got.seed, host.scale() / 2.f);
    EXPECT_EQ(got.clean_steps, host.clean_steps());
    EXPECT_EQ(got.skipped_steps, host.skipped_steps());
    EXPECT_EQ(got.applied, applied);
  }
  // The run went through every rule.
  EXPECT_GT(grown, 0) << "the scale never grew";
  EXPECT_GT(floored, 0) << "the scale never reached its floor";
  EXPECT_GT(applied, 0);
}

// The gated AdamW (the device's verdict: a skip, a gradient factor, the update count on the
// device) against the host's AdamW on gradients scaled by the same factor, with steps skipped
// in between: the bias corrections must follow the updates applied, not the calls.
TEST_F(CudaOptim, GatedAdamWFollowsTheDevicesVerdict) {
  Rng rng;
  TS_TRACE_SEED(rng);
  Generator gen(rng.u64());
  std::vector<Tensor> cpu_params = make_params(gen), gpu_params;
  for (const Tensor& p : cpu_params)
    gpu_params.push_back(p.clone().to(Device::cuda(0)).set_requires_grad());
  FlatParameters cflat(cpu_params), gflat(gpu_params);
  AdamWOptions opt;
  opt.weight_decay = 0.1f;
  AdamW cpu(cflat, opt), gpu(gflat, opt);
  const DeviceBackend& b = backend_for(Device::cuda(0));
  Tensor gate = Tensor::empty({8}, DType::i64, Device::cuda(0));
  StepGate g;
  const bool skip[] = {false, true, true, false, false, true, false};
  for (int step = 0; step < 7; ++step) {
    SCOPED_TRACE("step " + std::to_string(step));
    const std::vector<float> grads = random_grads(rng, cflat, 1.f);
    const float factor = 0.25f + 0.1f * float(step);
    g.skip = skip[step] ? 1 : 0;
    g.factor = factor;
    g.applied += skip[step] ? 0 : 1;
    b.copy_from_host(gate.raw_data(), &g, sizeof g);
    b.copy_from_host(gflat.grad_ptr(), grads.data(), grads.size() * sizeof(float));
    gpu.step(1e-2f, static_cast<const StepGate*>(gate.raw_data()));
    if (!skip[step]) {
      std::vector<float> scaled = grads;
      for (float& x : scaled) x *= factor;
      std::copy(scaled.begin(), scaled.end(), cflat.grad_data());
      cpu.step(1e-2f);
    }
    std::vector<float> got(static_cast<size_t>(gflat.numel()));
    b.copy_to_host(got.data(), gflat.value_ptr(), got.size() * sizeof(float));
    b.synchronize();
    // Same formula and scalars; the two compilers may contract a * b + c differently.
    expect_close("gated adamw", "f32", got, values(cflat.values()), 1e-5);
  }
}

TEST(CudaOptimArgs, SgdStepRefusesMissingBuffersBeforeLaunching) {
  cuda::SGDStep a;
  a.n = 0;
  EXPECT_NO_THROW(cuda::sgd_step(a));  // nothing to do, nothing touched
  a.n = 10;
  try {
    cuda::sgd_step(a);
    FAIL() << "sgd_step with null buffers did not throw";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("sgd_step"), std::string::npos) << e.what();
  }
  float dummy = 0.f;  // never dereferenced: the checks fail first
  a.p = &dummy, a.g = &dummy, a.weight_decay = 0.1f;
  try {
    cuda::sgd_step(a);
    FAIL() << "sgd_step with weight decay and no decay runs did not throw";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("decay runs"), std::string::npos) << e.what();
  }
  a.n = -1;
  EXPECT_THROW(cuda::sgd_step(a), Error);
}

}  // namespace
