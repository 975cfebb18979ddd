// f16 autocast on CUDA against the CPU under f16 autocast, from the same inputs: every op that
// consults autocast (matmul, linear, linear_gelu, attention), forward and every gradient; a tiny
// GPT's loss and gradients; and a few AdamW steps with dynamic loss scaling, including a scale so
// large that the f16 gradients overflow and the step is skipped on both backends alike. Without
// a device every test skips, saying why.
//
// Bounds (normwise relative error, max |cuda - cpu| / max |cpu|). Both backends round the
// operands to f16 with the same code (core/half.h) and multiply them exactly into f32 sums, so
// GEMM results differ only by the f32 summation order (~1e-6): kGemm = 1e-4 is far below the
// ~4e-4 that an operand not rounded to f16 on one side would show. Where an f16 value is
// stored after the GEMM (linear_gelu's output and its f16 gradient), a sum landing next to a
// rounding boundary may round the other way: one f16 ulp (2^-11 = 4.9e-4) of that element, so
// kRoundedOutput = 2e-3 (cudatest::tol<f16>()). Attention rounds q, k, v (and its incoming
// gradient) to f16 on both backends and computes in f32: at head size 8 both run f32 kernels
// on the same rounded values (kAttention = 1e-5: summation order only); at head size 64 the
// GPU's tensor-core kernels also round P and dS to f16 inside, about one f16 unit roundoff of
// the result: kRoundedOutput (test_cuda_attention_tc.cpp compares the kernels themselves).
// Whole-model results carry a few such flips through two layers: the bf16 bounds of
// test_cuda_gpt.cpp scaled by f16's 8x finer ulp.
#include <gtest/gtest.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/rng.h"
#include "core/tensor.h"
#include "cuda_test_util.h"
#include "nn/gpt.h"
#include "ops/autocast.h"
#include "ops/ops.h"
#include "optim/adamw.h"
#include "optim/flat_params.h"
#include "optim/loss_scaler.h"

namespace tessera {
namespace {

using cudatest::CudaTest;
using cudatest::expect_close;

const Device kGpu = Device::cuda(0);

constexpr double kGemm = 1e-4;
constexpr double kRoundedOutput = 2e-3;
constexpr double kAttention = 1e-5;  // f32 kernels on both sides (test_cuda_gpt.cpp's f32 bound)
constexpr double kModelLoss = 2e-3;
constexpr double kModelGrad = 5e-3;

using Op = std::function<Tensor(const std::vector<Tensor>&)>;

Tensor randn(cudatest::Rng& rng, const Shape& s, float stddev = 1.f) {
  return Tensor::from_vector(rng.normal(size_t(s.numel()), stddev), s);
}

// Runs op under f16 autocast on CPU leaf copies and on GPU leaf copies of inputs, then the
// backward of sum(out * r) with the same random r, and compares the output and every gradient.
void compare_f16_op(const std::string& name, const std::vector<Tensor>& inputs, const Op& op,
                    double fwd_bound, double grad_bound, cudatest::Rng& rng) {
  AutocastGuard guard(DType::f16);
  std::vector<Tensor> xc, xg;
  for (const Tensor& t : inputs) {
    xc.push_back(t.clone().set_requires_grad());
    xg.push_back(t.to(kGpu).set_requires_grad());
  }
  Tensor yc = op(xc), yg = op(xg);
  ASSERT_TRUE(yg.is_cuda()) << name << ": output on " << yg.device().str();
  ASSERT_EQ(yc.dtype(), yg.dtype()) << name << ": the backends store different output dtypes";
  expect_close(name + " fwd", "f16", ops::cast(yg, DType::f32).to_vector(),
               ops::cast(yc, DType::f32).to_vector(), fwd_bound);
  Tensor r = randn(rng, yc.shape());
  ops::sum(ops::mul(ops::cast(yc, DType::f32), r)).backward();
  ops::sum(ops::mul(ops::cast(yg, DType::f32), r.to(kGpu))).backward();
  for (size_t i = 0; i < inputs.size(); ++i) {
    ASSERT_TRUE(xc[i].grad().defined()) << name << ": input " << i << " has no CPU gradient";
    ASSERT_TRUE(xg[i].grad().defined()) << name << ": input " << i << " has no GPU gradient";
    EXPECT_TRUE(xg[i].grad().is_cuda()) << name << ": gradient " << i << " left the GPU";
    expect_close(name + " grad " + std::to_string(i), "f16", xg[i].grad().to_vector(),
                 xc[i].grad().to_vector(), grad_bound);
  }
}

TEST_F(CudaTest, F16AutocastOpsMatchCpuF16Autocast) {
  cudatest::Rng rng;
  TS_TRACE_SEED(rng);
  using V = std::vector<Tensor>;
  compare_f16_op(
      "matmul", {randn(rng, Shape{33, 40}), randn(rng, Shape{40, 19})},
      [](const V& x) { return ops::matmul(x[0], x[1]); }, kGemm, kGemm, rng);
  compare_f16_op(
      "matmul batched", {randn(rng, Shape{3, 5, 8}), randn(rng, Shape{3, 8, 6})},
      [](const V& x) { return ops::matmul(x[0], x[1]); }, kGemm, kGemm, rng);
  compare_f16_op(
      "linear+bias",
      {randn(rng, Shape{3, 7, 24}), randn(rng, Shape{40, 24}), randn(rng, Shape{40})},
      [](const V& x) { return ops::linear(x[0], x[1], x[2]); }, kGemm, kGemm, rng);
  // The GPT-2 head's shape class: a vocabulary that is a multiple of nothing.
  compare_f16_op(
      "linear head", {randn(rng, Shape{2, 16, 64}), randn(rng, Shape{97, 64}, 0.02f)},
      [](const V& x) { return ops::linear(x[0], x[1]); }, kGemm, kGemm, rng);
  compare_f16_op(
      "linear_gelu+bias",
      {randn(rng, Shape{9, 32}), randn(rng, Shape{48, 32}), randn(rng, Shape{48})},
      [](const V& x) { return ops::linear_gelu(x[0], x[1], x[2]); }, kRoundedOutput, kRoundedOutput,
      rng);
  compare_f16_op(
      "attention hs8 (f32 kernels, f16-rounded q/k/v)", {randn(rng, Shape{2, 13, 3 * 32}, 0.5f)},
      [](const V& x) { return ops::attention(x[0], 4); }, kAttention, kAttention, rng);
  compare_f16_op(
      "attention hs64 (tensor cores)", {randn(rng, Shape{2, 70, 3 * 128})},
      [](const V& x) { return ops::attention(x[0], 2); }, kRoundedOutput, kRoundedOutput, rng);
}

// An operand beyond f16's range becomes inf on the GPU as on the CPU (no clamping).
TEST_F(CudaTest, F16AutocastOverflowIsInfOnBothBackends) {
  AutocastGuard guard(DType::f16);
  Tensor x = Tensor::ones(Shape{3, 4});
  x.data<float>()[5] = 70000.f;
  Tensor w = Tensor::ones(Shape{2, 4});
  const std::vector<float> yc = ops::linear(x, w).to_vector();
  const std::vector<float> yg = ops::linear(x.to(kGpu), w.to(kGpu)).to_vector();
  cudatest::expect_exact("linear overflow to inf", "f16", cudatest::canonical_bits(yg),
                         cudatest::canonical_bits(yc));
  EXPECT_TRUE(std::isinf(yg[2])) << yg[2];
}

nn::GPTConfig tiny_config() {
  nn::GPTConfig c;
  c.n_layer = 2;
  c.n_head = 2;
  c.n_embd = 32;
  c.context = 16;
  c.vocab_size = 97;
  return c;
}

struct Models {
  Models(const nn::GPTConfig& c, uint64_t seed) {
    Generator g1(seed), g2(seed);
    cpu = std::make_unique<nn::GPT>(c, g1);
    gpu = std::make_unique<nn::GPT>(c, g2);
    gpu->to(kGpu);
  }
  std::unique_ptr<nn::GPT> cpu, gpu;
};

Tensor random_tokens(cudatest::Rng& rng, int64_t vocab, int64_t B, int64_t T) {
  return Tensor::from_ints(rng.ints(size_t(B * T), 0, int32_t(vocab - 1)), Shape{B, T});
}

TEST_F(CudaTest, F16AutocastGptLossAndGradientsMatchCpu) {
  cudatest::Rng rng;
  TS_TRACE_SEED(rng);
  const nn::GPTConfig c = tiny_config();
  Models m(c, rng.u64());
  const Tensor ids = random_tokens(rng, c.vocab_size, 3, 16);
  const Tensor targets = random_tokens(rng, c.vocab_size, 3, 16);
  AutocastGuard guard(DType::f16);
  Tensor lc = m.cpu->loss(ids, targets), lg = m.gpu->loss(ids.to(kGpu), targets.to(kGpu));
  lc.backward();
  lg.backward();
  expect_close("gpt loss", "f16", lg.to_vector(), lc.to_vector(), kModelLoss);
  const auto pc = m.cpu->named_parameters(), pg = m.gpu->named_parameters();
  ASSERT_EQ(pc.size(), pg.size());
  for (size_t i = 0; i < pc.size(); ++i) {
    ASSERT_TRUE(pg[i].second.grad().defined()) << pc[i].first << " has no GPU gradient";
    expect_close("gpt grad " + pc[i].first, "f16", pg[i].second.grad().to_vector(),
                 pc[i].second.grad().to_vector(), kModelGrad);
  }
}

// AdamW steps under f16 autocast with a DynamicLossScaler per backend, as loss_scaler.h's loop:
// the first scale (2^40) overflows the f16 gradients on both, which skip the step and back off
// alike; the following steps agree in verdict, scale and loss.
TEST_F(CudaTest, F16LossScaledAdamWStepsMatchCpu) {
  cudatest::Rng rng;
  TS_TRACE_SEED(rng);
  const nn::GPTConfig c = tiny_config();
  Models m(c, rng.u64());
  FlatParameters fc(m.cpu->parameters()), fg(m.gpu->parameters());
  AdamW oc(fc), og(fg);
  LossScalerOptions so;
  so.init_scale = 1099511627776.f;    // 2^40
  so.backoff_factor = 1.f / 65536.f;  // one skip brings it to 2^24, a second to 2^8
  DynamicLossScaler sc(so), sg(so);
  const Tensor ids = random_tokens(rng, c.vocab_size, 2, 16);
  const Tensor targets = random_tokens(rng, c.vocab_size, 2, 16);
  AutocastGuard guard(DType::f16);
  int skipped = 0;
  for (int step = 0; step < 6; ++step) {
    SCOPED_TRACE("step " + std::to_string(step));
    fc.zero_grad();
    fg.zero_grad();
    Tensor lc = m.cpu->loss(ids, targets), lg = m.gpu->loss(ids.to(kGpu), targets.to(kGpu));
    sc.scale_loss(lc).backward();
    sg.scale_loss(lg).backward();
    const bool ok_c = sc.unscale(fc), ok_g = sg.unscale(fg);
    EXPECT_EQ(ok_g, ok_c) << "the backends disagree on whether the gradients are finite";
    if (ok_c) oc.step(1e-3f);
    if (ok_g) og.step(1e-3f);
    sc.update(ok_c);
    sg.update(ok_g);
    skipped += !ok_c;
    EXPECT_EQ(sg.scale(), sc.scale());
    expect_close("gpt f16 loss-scaled step " + std::to_string(step), "f16", lg.to_vector(),
                 lc.to_vector(), kModelLoss);
  }
  EXPECT_GE(skipped, 1) << "a scale of 2^40 did not overflow the f16 gradients";
  EXPECT_LT(skipped, 6) << "no step ever ran";
}

}  // namespace
}  // namespace tessera
