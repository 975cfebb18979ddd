// The op-level dispatch end to end: every op GPT-2 training uses, and a tiny GPT (2 layers,
// 32 wide) trained for a few AdamW steps, run once with CPU tensors and once with CUDA tensors
// from the same weights and inputs, compared output by output and gradient by gradient.
// The kernels themselves are compared in test_cuda_kernels*; this checks the glue: devices of
// every intermediate, dtype conversions, gradients added into the flat buffers, the engine's
// accumulation, the optimizer on device buffers. Without a device every test skips, saying why.
#include <gtest/gtest.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/backend.h"
#include "core/rng.h"
#include "core/tensor.h"
#include "cuda_test_util.h"
#include "kernels/common/op_kernels.h"
#include "kernels/cpu/sharded_cross_entropy.h"
#include "nn/gpt.h"
#include "ops/autocast.h"
#include "ops/ops.h"
#include "ops/rope_table.h"
#include "optim/adamw.h"
#include "optim/clip.h"
#include "optim/flat_params.h"

namespace tessera {
namespace {

using cudatest::CudaTest;
using cudatest::expect_close;
using nn::GPT;
using nn::GPTConfig;

const Device kGpu = Device::cuda(0);

// Normwise relative error bounds for whole-model results. f32: both backends compute in f32 and
// differ only in summation order (GEMMs, reductions), which a 2-layer
// model amplifies little. bf16: the GEMM operands are rounded to bf16 on both sides, but a value
// that lands near a rounding boundary can round differently after a different summation order,
// a few bf16 ulps (2^-8 = 3.9e-3) that the backward carries through two more roundings per
// layer.
constexpr double kModelF32 = 1e-4;
constexpr double kModelBf16Loss = 1e-2;
constexpr double kModelBf16Grad = 3e-2;

GPTConfig tiny_config() {
  GPTConfig c;
  c.n_layer = 2;
  c.n_head = 2;
  c.n_embd = 32;
  c.context = 16;
  c.vocab_size = 97;  // not a multiple of anything: partial tiles in the head GEMM and the loss
  return c;
}

struct Batch {
  Tensor ids, targets;
};

Batch random_batch(cudatest::Rng& rng, const GPTConfig& c, int64_t B, int64_t T) {
  const auto n = size_t(B * T);
  std::vector<int32_t> targets = rng.ints(n, 0, int32_t(c.vocab_size - 1));
  targets[1] = -1;  // one ignored position
  return {Tensor::from_ints(rng.ints(n, 0, int32_t(c.vocab_size - 1)), Shape{B, T}),
          Tensor::from_ints(targets, Shape{B, T})};
}

// Two identical models from one seed, the second moved to the GPU.
struct ModelPair {
  ModelPair(const GPTConfig& c, uint64_t seed) {
    Generator g1(seed), g2(seed);
    cpu = std::make_unique<GPT>(c, g1);
    gpu = std::make_unique<GPT>(c, g2);
    gpu->to(kGpu);
  }
  std::unique_ptr<GPT> cpu, gpu;
};

void compare_model_gradients(DType autocast, double loss_bound, double grad_bound) {
  cudatest::Rng rng;
  TS_TRACE_SEED(rng);
  const GPTConfig c = tiny_config();
  ModelPair m(c, rng.u64());
  const Batch b = random_batch(rng, c, 3, 16);
  AutocastGuard guard(autocast);
  const char* dt = dtype_name(autocast);

  Tensor loss_cpu = m.cpu->loss(b.ids, b.targets);
  loss_cpu.backward();
  Tensor loss_gpu = m.gpu->loss(b.ids.to(kGpu), b.targets.to(kGpu));
  ASSERT_TRUE(loss_gpu.is_cuda()) << "the loss of a model on the GPU is on "
                                  << loss_gpu.device().str();
  loss_gpu.backward();

  expect_close(std::string("gpt loss"), dt, loss_gpu.to_vector(), loss_cpu.to_vector(), loss_bound);
  const auto cpu_params = m.cpu->named_parameters(), gpu_params = m.gpu->named_parameters();
  ASSERT_EQ(cpu_params.size(), gpu_params.size());
  for (size_t i = 0; i < cpu_params.size(); ++i) {
    const auto& [name, pc] = cpu_params[i];
    const Tensor& pg = gpu_params[i].second;
    ASSERT_TRUE(pg.is_cuda()) << name << " was not moved to the GPU";
    ASSERT_TRUE(pc.grad().defined()) << name << " has no gradient on the CPU";
    ASSERT_TRUE(pg.grad().defined()) << name << " has no gradient on the GPU";
    EXPECT_TRUE(pg.grad().is_cuda()) << name << "'s gradient is on " << pg.grad().device().str();
    expect_close("gpt grad " + name, dt, pg.grad().to_vector(), pc.grad().to_vector(), grad_bound);
  }
}

TEST_F(CudaTest, GptLossAndEveryGradientMatchCpuF32) {
  compare_model_gradients(DType::f32, kModelF32, kModelF32);
}

TEST_F(CudaTest, GptLossAndEveryGradientMatchCpuBf16Autocast) {
  compare_model_gradients(DType::bf16, kModelBf16Loss, kModelBf16Grad);
}

// Five steps of the training loop (flat buffers, clipping, AdamW) on each backend: the losses
// and the final weights agree, and everything stays on the GPU.
TEST_F(CudaTest, GptFiveAdamWStepsMatchCpu) {
  cudatest::Rng rng;
  TS_TRACE_SEED(rng);
  const GPTConfig c = tiny_config();
  ModelPair m(c, rng.u64());
  FlatParameters flat_cpu(m.cpu->parameters()), flat_gpu(m.gpu->parameters());
  ASSERT_TRUE(flat_gpu.device() == kGpu);
  AdamW opt_cpu(flat_cpu), opt_gpu(flat_gpu);
  for (const auto& [name, buf] : opt_gpu.state().buffers)
    EXPECT_TRUE(buf.is_cuda()) << "AdamW state '" << name << "' is on " << buf.device().str();
  for (int step = 0; step < 5; ++step) {
    SCOPED_TRACE("step " + std::to_string(step));
    const Batch b = random_batch(rng, c, 2, 16);
    flat_cpu.zero_grad();
    flat_gpu.zero_grad();
    Tensor lc = m.cpu->loss(b.ids, b.targets);
    Tensor lg = m.gpu->loss(b.ids.to(kGpu), b.targets.to(kGpu));
    lc.backward();
    lg.backward();
    const double nc = clip_grad_norm(flat_cpu, 1.0), ng = clip_grad_norm(flat_gpu, 1.0);
    EXPECT_NEAR(ng, nc, kModelF32 * nc) << "gradient norms differ";
    opt_cpu.step(1e-3f);
    opt_gpu.step(1e-3f);
    expect_close("gpt adamw loss step " + std::to_string(step), "f32", lg.to_vector(),
                 lc.to_vector(), kModelF32);
  }
  // The first moments are linear in the gradients (the weights themselves are not compared:
  // Adam's update is ~lr * sign(g), so an element whose gradient is ~0 may step either way on
  // either backend). After 5 steps the gradients come from slightly different weights, hence
  // a bound above the single-pass one.
  expect_close("gpt adamw exp_avg after 5 steps", "f32",
               opt_gpu.state().buffers.at(0).second.to_vector(),
               opt_cpu.state().buffers.at(0).second.to_vector(), 1e-3);
}

// Every GPU kernel sums in a fixed order (no atomics anywhere, the embedding backward included;
// cuBLASLt is deterministic for one GPU and library version): two identical 5-step trainings
// from the same weights on the same batches end with bit-identical parameters. This is what
// makes a GPU checkpoint resume bit-exact.
TEST_F(CudaTest, GptTrainingOnTheGpuRepeatsBitForBit) {
  cudatest::Rng rng;
  TS_TRACE_SEED(rng);
  GPTConfig c = tiny_config();
  // A tiny vocabulary: every id repeats ~55 times in a batch of 384 positions, and 384 rows are
  // more than one 256-row chunk of the bias-gradient column sums (summed in chunk order).
  c.vocab_size = 7;
  const uint64_t seed = rng.u64();
  std::vector<Batch> batches;
  for (int step = 0; step < 5; ++step) batches.push_back(random_batch(rng, c, 24, 16));
  auto train = [&]() {
    Generator g(seed);
    GPT model(c, g);
    model.to(kGpu);
    FlatParameters flat(model.parameters());
    AdamW opt(flat);
    std::vector<float> losses;
    for (const Batch& b : batches) {
      flat.zero_grad();
      Tensor loss = model.loss(b.ids.to(kGpu), b.targets.to(kGpu));
      loss.backward();
      clip_grad_norm(flat, 1.0);
      opt.step(1e-3f);
      losses.push_back(loss.item());
    }
    std::vector<std::pair<std::string, std::vector<uint32_t>>> params;
    for (const auto& [name, p] : model.named_parameters())
      params.emplace_back(name, cudatest::canonical_bits(p.to_vector()));
    return std::make_pair(losses, params);
  };
  const auto [losses1, params1] = train();
  const auto [losses2, params2] = train();
  EXPECT_EQ(losses2, losses1) << "the same training on the GPU gave different losses";
  ASSERT_EQ(params2.size(), params1.size());
  bool all = true;
  for (size_t i = 0; i < params1.size(); ++i) {
    const bool same = params2[i].second == params1[i].second;
    EXPECT_TRUE(same) << params1[i].first << " differs between two runs";
    all = all && same;
  }
  cudatest::report("gpt 5 adamw steps twice on the gpu", "f32", all ? "0 (exact)" : "differs",
                   "exact", all);
}

// ---- per op: forward and the gradient of every input, CUDA vs CPU ----

using OpFn = std::function<Tensor(const std::vector<Tensor>&)>;

// Runs op on CPU copies and on GPU copies of `inputs`, reduces each output to a scalar with the
// same random weights (so every output element gets a distinct gradient), and compares the
// output and each input's gradient.
void compare_op(const std::string& name, const std::vector<Tensor>& inputs, const OpFn& op,
                double bound, cudatest::Rng& rng) {
  std::vector<Tensor> xc, xg;
  for (const Tensor& t : inputs) {
    const bool grad = is_floating(t.dtype());
    Tensor c = t.clone(), g = t.to(kGpu);
    if (grad) c.set_requires_grad(), g.set_requires_grad();
    xc.push_back(c);
    xg.push_back(g);
  }
  Tensor yc = op(xc), yg = op(xg);
  ASSERT_TRUE(yg.is_cuda()) << name << ": output on " << yg.device().str();
  ASSERT_EQ(yc.dtype(), yg.dtype()) << name;
  const char* dt = dtype_name(yc.dtype());
  expect_close(name + " fwd", dt, yg.to_vector(), yc.to_vector(), bound);
  if (!yc.requires_grad()) return;
  Tensor r = Tensor::from_vector(rng.normal(size_t(yc.numel())), yc.shape());
  ops::sum(ops::mul(ops::cast(yc, DType::f32), r)).backward();
  ops::sum(ops::mul(ops::cast(yg, DType::f32), r.to(kGpu))).backward();
  for (size_t i = 0; i < inputs.size(); ++i) {
    if (!xc[i].requires_grad() || !xc[i].grad().defined()) continue;
    ASSERT_TRUE(xg[i].grad().defined()) << name << ": input " << i << " has no GPU gradient";
    expect_close(name + " grad " + std::to_string(i), dt, xg[i].grad().to_vector(),
                 xc[i].grad().to_vector(), bound);
  }
}

Tensor randn(cudatest::Rng& rng, const Shape& s, DType t = DType::f32, float stddev = 1.f) {
  return Tensor::from_vector(rng.normal(size_t(s.numel()), stddev), s, t);
}

TEST_F(CudaTest, EveryDispatchedOpMatchesCpu) {
  cudatest::Rng rng;
  TS_TRACE_SEED(rng);
  using V = std::vector<Tensor>;
  for (DType t : {DType::f32, DType::bf16}) {
    SCOPED_TRACE(dtype_name(t));
    const double tol = t == DType::f32 ? 1e-5 : 1e-2;
    const std::string sfx = std::string(" ") + dtype_name(t);
    compare_op(
        "add broadcast" + sfx, {randn(rng, Shape{4, 5, 33}, t), randn(rng, Shape{5, 33}, t)},
        [](const V& x) { return ops::add(x[0], x[1]); }, tol, rng);
    compare_op(
        "mul broadcast" + sfx, {randn(rng, Shape{6, 40}, t), randn(rng, Shape{40}, t)},
        [](const V& x) { return ops::mul(x[0], x[1]); }, tol, rng);
    compare_op(
        "scale" + sfx, {randn(rng, Shape{7, 9}, t)},
        [](const V& x) { return ops::scale(x[0], -0.37f); }, tol, rng);
    compare_op(
        "gelu" + sfx, {randn(rng, Shape{3, 100}, t)}, [](const V& x) { return ops::gelu(x[0]); },
        tol, rng);
    compare_op(
        "silu" + sfx, {randn(rng, Shape{3, 100}, t)}, [](const V& x) { return ops::silu(x[0]); },
        tol, rng);
    compare_op(
        "swiglu" + sfx, {randn(rng, Shape{3, 5, 2 * 40}, t)},
        [](const V& x) { return ops::swiglu(x[0]); }, tol, rng);
    compare_op(
        "rope gqa" + sfx,
        {randn(rng, Shape{2, 9, (4 + 2 * 2) * 16}, t),
         ops::rope_table(20, 16, 500000.0, ops::Llama3RopeScaling{})},
        [](const V& x) { return ops::rope(x[0], x[1], 4, 2, 11); }, tol, rng);
    compare_op(
        "softmax" + sfx, {randn(rng, Shape{5, 77}, t)},
        [](const V& x) { return ops::softmax(x[0]); }, tol, rng);
    compare_op(
        "rms_norm" + sfx, {randn(rng, Shape{6, 48}, t), randn(rng, Shape{48})},
        [](const V& x) { return ops::rms_norm(x[0], x[1]); }, tol, rng);
    compare_op(
        "layer_norm" + sfx,
        {randn(rng, Shape{2, 5, 64}, t), randn(rng, Shape{64}), randn(rng, Shape{64})},
        [](const V& x) { return ops::layer_norm(x[0], x[1], x[2]); }, tol, rng);
    compare_op(
        "embedding" + sfx,
        {randn(rng, Shape{23, 16}, t), Tensor::from_ints(rng.ints(30, 0, 22), Shape{5, 6})},
        [](const V& x) { return ops::embedding(x[0], x[1]); }, tol, rng);
    {
      AutocastGuard guard(t);  // GEMM operands in t, f32 output
      const double gemm_tol = t == DType::f32 ? 1e-5 : 1e-2;
      compare_op(
          "linear+bias" + sfx,
          {randn(rng, Shape{3, 7, 24}), randn(rng, Shape{40, 24}), randn(rng, Shape{40})},
          [](const V& x) { return ops::linear(x[0], x[1], x[2]); }, gemm_tol, rng);
      compare_op(
          "linear_gelu" + sfx,
          {randn(rng, Shape{9, 32}), randn(rng, Shape{48, 32}), randn(rng, Shape{48})},
          [](const V& x) { return ops::linear_gelu(x[0], x[1], x[2]); }, gemm_tol, rng);
      compare_op(
          "matmul batched" + sfx, {randn(rng, Shape{3, 5, 8}), randn(rng, Shape{3, 8, 6})},
          [](const V& x) { return ops::matmul(x[0], x[1]); }, gemm_tol, rng);
      compare_op(
          "layer_norm to compute dtype" + sfx,
          {randn(rng, Shape{4, 32}), randn(rng, Shape{32}), randn(rng, Shape{32})},
          [t](const V& x) { return ops::layer_norm(x[0], x[1], x[2], 1e-5f, t); }, tol, rng);
      compare_op(
          "swiglu to compute dtype" + sfx, {randn(rng, Shape{4, 2 * 48})},
          [](const V& x) { return ops::swiglu(x[0]); }, tol, rng);
    }
  }
  // f32-only ops (the CPU ops take f32 here).
  compare_op(
      "attention f32", {randn(rng, Shape{2, 13, 3 * 32}, DType::f32, 0.5f)},
      [](const V& x) { return ops::attention(x[0], 4); }, 1e-5, rng);
  compare_op(
      "attention gqa f32", {randn(rng, Shape{2, 13, (4 + 2 * 2) * 8}, DType::f32, 0.5f)},
      [](const V& x) { return ops::attention(x[0], 4, 2); }, 1e-5, rng);
  compare_op(
      "sum f32", {randn(rng, Shape{1000})}, [](const V& x) { return ops::sum(x[0]); }, 1e-6, rng);
  compare_op(
      "mean f32", {randn(rng, Shape{37, 3})}, [](const V& x) { return ops::mean(x[0]); }, 1e-6,
      rng);
  compare_op(
      "cast f32->bf16", {randn(rng, Shape{50})},
      [](const V& x) { return ops::cast(x[0], DType::bf16); }, 0.0, rng);
  for (DType g : {DType::f32, DType::bf16}) {
    std::vector<int32_t> tg = rng.ints(12, 0, 40);
    tg[3] = -1;
    compare_op(
        std::string("cross_entropy grad ") + dtype_name(g),
        {randn(rng, Shape{3, 4, 41}), Tensor::from_ints(tg, Shape{3, 4})},
        [g](const V& x) { return ops::cross_entropy(x[0], x[1], -1, g); },
        g == DType::f32 ? 1e-5 : 1e-2, rng);
  }
  for (DType g : {DType::f32, DType::bf16}) {
    // This rank holds ids 20 .. 39 of 40; its partner's statistics (ids 0 .. 19) come from the
    // CPU kernel, the same for both backends.
    std::vector<int32_t> tg = rng.ints(12, 0, 39);
    tg[3] = -1, tg[5] = 25, tg[6] = 4;  // an ignored row, a target here, one at the partner
    const Tensor targets = Tensor::from_ints(tg, Shape{3, 4});
    const Tensor partner = randn(rng, Shape{12, 20});
    ops::GatherShardStats gather = [=](const Tensor& mine) {
      Tensor all = Tensor::empty(Shape{2, 2, 12});
      cpu::sharded_cross_entropy_stats(partner.data<float>(), tg.data(), all.data<float>(), 12, 20,
                                       0, -1);
      const Tensor m = mine.to(Device::cpu());
      std::copy_n(m.data<float>(), 24, all.data<float>() + 24);
      return all.to(mine.device());
    };
    compare_op(
        std::string("sharded_cross_entropy grad ") + dtype_name(g),
        {randn(rng, Shape{3, 4, 20}), targets},
        [g, gather](const V& x) {
          return ops::sharded_cross_entropy(x[0], x[1], 20, 40, -1, g, gather);
        },
        g == DType::f32 ? 1e-5 : 1e-2, rng);
  }
  compare_op(
      "embedding vocabulary shard f32",
      {randn(rng, Shape{10, 16}), Tensor::from_ints(rng.ints(30, 0, 40), Shape{5, 6})},
      [](const V& x) { return ops::embedding(x[0], x[1], 15); }, 1e-6, rng);
  {
    Generator gc(7), gg(7);  // the same (seed, offset): the same mask on both backends
    compare_op(
        "dropout f32", {randn(rng, Shape{300})},
        [&](const V& x) { return ops::dropout(x[0], 0.3f, x[0].is_cuda() ? gg : gc); }, 1e-6, rng);
  }
}

// Ops whose inputs are on different devices, or that have no CUDA path, say so.
TEST_F(CudaTest, MixedDevicesAndMissingPathsAreClearErrors) {
  Tensor a = Tensor::ones(Shape{4}), b = Tensor::ones(Shape{4}, DType::f32, kGpu);
  try {
    ops::add(a, b);
    FAIL() << "add of a cpu and a cuda tensor did not throw";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("'a'"), std::string::npos) << msg;
    EXPECT_NE(msg.find("cuda:0"), std::string::npos) << msg;
  }
  Tensor x = Tensor::ones(Shape{1, 1, 4, 4}, DType::f32, kGpu);
  Tensor w = Tensor::ones(Shape{1, 1, 3, 3}, DType::f32, kGpu);
  EXPECT_TRUE(ops::conv2d(x, w, Tensor()).is_cuda());  // dispatched (test_cuda_classifier)
  // A host pointer to device buffers is refused.
  Tensor p = Tensor::ones(Shape{8}, DType::f32, kGpu).set_requires_grad();
  FlatParameters flat({p});
  EXPECT_THROW(flat.value_data(), Error);
  EXPECT_NE(flat.value_ptr(), nullptr);
}

// The null entries of an op table (every entry is a function pointer).
template <class Table>
int null_entries(const Table& t) {
  static_assert(sizeof(Table) % sizeof(void (*)()) == 0);
  uintptr_t p[sizeof(Table) / sizeof(void (*)())];
  std::memcpy(p, &t, sizeof t);
  int n = 0;
  for (uintptr_t e : p) n += e == 0;
  return n;
}

// The CUDA backend's op table has every entry set but those op_kernels.h names as missing: a
// designated initialiser that forgets one compiles and leaves it null, which would crash the
// first op to call it.
TEST_F(CudaTest, TheOpTableSetsEveryKernel) {
  const kernels::OpKernels* ops = backend_for(kGpu).ops;
  ASSERT_NE(ops, nullptr);
  struct Untyped {  // OpKernels past its three typed tables
    char bytes[sizeof(kernels::OpKernels) - 3 * sizeof(kernels::TypedOpKernels<float>)];
  } untyped;
  static_assert(offsetof(kernels::OpKernels, gemm) == 3 * sizeof(kernels::TypedOpKernels<float>));
  std::memcpy(&untyped, &ops->gemm, sizeof untyped);
  EXPECT_EQ(null_entries(untyped), 0);
  EXPECT_EQ(null_entries(ops->of<float>()), 2);  // the tensor-core attention (16-bit only)
  EXPECT_EQ(null_entries(ops->of<bf16>()), 0);
  // The cross-entropies' gradients and the window attention have no f16 kernel.
  EXPECT_EQ(null_entries(ops->of<f16>()), 4);
}

// An op on a device whose backend has no op table says so, naming the op and the device,
// rather than computing on the host.
TEST_F(CudaTest, ADeviceWithoutOpKernelsIsAClearError) {
  DeviceBackend without_ops = backend_for(kGpu);
  without_ops.ops = nullptr;
  Tensor a = Tensor::ones(Shape{4}, DType::f32, kGpu);
  register_backend(DeviceType::cuda, &without_ops);
  std::string msg;
  try {
    ops::add(a, a);
  } catch (const Error& e) {
    msg = e.what();
  }
  register_backend(DeviceType::cuda, nullptr);
  EXPECT_NE(msg.find("add"), std::string::npos) << msg;
  EXPECT_NE(msg.find("cuda:0 has no op kernels"), std::string::npos) << msg;
  EXPECT_TRUE(ops::add(a, a).is_cuda());  // the built-in table is back
}

// Device tensors in core: transfers, fills, casts, clones, copies.
TEST_F(CudaTest, DeviceTensorBasicsMatchHost) {
  cudatest::Rng rng;
  TS_TRACE_SEED(rng);
  const std::vector<float> v = rng.normal(257);
  Tensor h = Tensor::from_vector(v, Shape{257});
  Tensor d = h.to(kGpu);
  EXPECT_TRUE(d.is_cuda());
  cudatest::expect_exact("to(cuda) round trip", "f32", d.to(Device::cpu()).to_vector(), v);
  cudatest::expect_exact("to(bf16) on device", "bf16", d.to(DType::bf16).to_vector(),
                         h.to(DType::bf16).to_vector());
  cudatest::expect_exact("clone on device", "f32", d.clone().to_vector(), v);
  Tensor z = Tensor::zeros(Shape{3, 5}, DType::bf16, kGpu);
  cudatest::expect_exact("zeros on device", "bf16", z.to_vector(), std::vector<float>(15, 0.f));
  Tensor f = Tensor::full(Shape{6}, 2.5, DType::f32, kGpu);
  cudatest::expect_exact("full on device", "f32", f.to_vector(), std::vector<float>(6, 2.5f));
  Tensor c = Tensor::zeros(Shape{257}, DType::bf16, kGpu);
  c.copy_from(h);  // across devices, converting
  cudatest::expect_exact("copy_from cpu f32 into cuda bf16", "bf16", c.to_vector(),
                         h.to(DType::bf16).to_vector());
  EXPECT_FLOAT_EQ(Tensor::full(Shape{}, 3.0, DType::f32, kGpu).item(), 3.f);
  // Strided device copies: test_cuda_runtime compares them with the CPU's.
  EXPECT_TRUE(
      Tensor::zeros(Shape{4, 4}, DType::f32, kGpu).transpose_view(0, 1).contiguous().is_cuda());
}

}  // namespace
}  // namespace tessera
