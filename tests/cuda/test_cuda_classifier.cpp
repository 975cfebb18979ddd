// The classifier models on the GPU: the conv2d and max_pool2d ops dispatched to the CUDA
// kernels (forward and backward, every autocast dtype), transpose/reshape of device tensors,
// the MLP and CNN classifiers run once with CPU tensors and once with CUDA tensors from the
// same weights (loss and every gradient), and a few SGD steps on each backend. The kernels
// themselves are compared in test_cuda_kernels_nn; this checks the ops' glue. Device tests skip
// without a device, saying why; the host-side test at the end (conv2d's f16 autocast on the
// CPU) runs everywhere.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/rng.h"
#include "core/tensor.h"
#include "cuda_test_util.h"
#include "nn/classifiers.h"
#include "ops/autocast.h"
#include "ops/ops.h"
#include "optim/flat_params.h"
#include "optim/sgd.h"

namespace tessera {
namespace {

using cudatest::CudaTest;
using cudatest::expect_close;

const Device kGpu = Device::cuda(0);

// GEMM-like results from 16-bit operands with f32 output: the same rounded operands on both
// sides (products exact in f32), only the summation order differs (as test_cuda_kernels_nn).
constexpr double kTolMixed = 1e-4;
// Whole-model bounds, as test_cuda_gpt's: f32 differs only in summation order, which a few
// layers amplify little; bf16 autocast may round a value near a boundary differently after a
// different summation order, a few bf16 ulps (3.9e-3) that the backward carries further.
constexpr double kModelF32 = 1e-4;
constexpr double kModelBf16Loss = 1e-2;
constexpr double kModelBf16Grad = 3e-2;

Tensor randn(cudatest::Rng& rng, const Shape& s, DType t = DType::f32, float stddev = 1.f) {
  return Tensor::from_vector(rng.normal(size_t(s.numel()), stddev), s, t);
}

using V = std::vector<Tensor>;
using OpFn = std::function<Tensor(const V&)>;

// Runs op on CPU copies and on GPU copies of `inputs`, reduces each output to a scalar with the
// same random weights (every output element gets its own gradient), and compares the output
// and every input's gradient with `bound` (0: bit for bit).
void compare_op(const std::string& name, const V& inputs, const OpFn& op, double bound,
                cudatest::Rng& rng) {
  V xc, xg;
  for (const Tensor& t : inputs) {
    Tensor c = t.clone(), g = t.to(kGpu);
    c.set_requires_grad(), g.set_requires_grad();
    xc.push_back(c);
    xg.push_back(g);
  }
  Tensor yc = op(xc), yg = op(xg);
  ASSERT_TRUE(yg.is_cuda()) << name << ": output on " << yg.device().str();
  ASSERT_EQ(yc.dtype(), yg.dtype()) << name;
  ASSERT_EQ(yc.shape(), yg.shape()) << name;
  const char* dt = dtype_name(yc.dtype());
  expect_close(name + " fwd", dt, yg.to_vector(), yc.to_vector(), bound);
  Tensor r = Tensor::from_vector(rng.normal(size_t(yc.numel())), yc.shape());
  ops::sum(ops::mul(ops::cast(yc, DType::f32), r)).backward();
  ops::sum(ops::mul(ops::cast(yg, DType::f32), r.to(kGpu))).backward();
  for (size_t i = 0; i < inputs.size(); ++i) {
    ASSERT_TRUE(xc[i].grad().defined()) << name << ": input " << i << " has no CPU gradient";
    ASSERT_TRUE(xg[i].grad().defined()) << name << ": input " << i << " has no GPU gradient";
    EXPECT_TRUE(xg[i].grad().is_cuda())
        << name << ": gradient " << i << " on " << xg[i].grad().device().str();
    expect_close(name + " grad " + std::to_string(i), dt, xg[i].grad().to_vector(),
                 xc[i].grad().to_vector(), bound);
  }
}

// ---- ops ----

TEST_F(CudaTest, Conv2dOpMatchesCpuInEveryComputeDtype) {
  cudatest::Rng rng;
  TS_TRACE_SEED(rng);
  for (DType compute : {DType::f32, DType::bf16, DType::f16}) {
    SCOPED_TRACE(dtype_name(compute));
    AutocastGuard guard(compute);
    const double tol = compute == DType::f32 ? 1e-5 : kTolMixed;
    const std::string sfx = std::string(" ") + dtype_name(compute);
    // 3x3, padding 1, with bias (the CNN's layer); 3x2 stride 2, no padding, no bias (partial
    // coverage: the last row/column of x is read by no window).
    compare_op(
        "conv2d op 3x3 s1 p1 +bias" + sfx,
        {randn(rng, Shape{3, 4, 10, 9}), randn(rng, Shape{6, 4, 3, 3}, DType::f32, 0.3f),
         randn(rng, Shape{6})},
        [](const V& x) { return ops::conv2d(x[0], x[1], x[2], 1, 1); }, tol, rng);
    compare_op(
        "conv2d op 3x2 s2 p0" + sfx,
        {randn(rng, Shape{2, 3, 11, 8}), randn(rng, Shape{5, 3, 3, 2}, DType::f32, 0.3f)},
        [](const V& x) { return ops::conv2d(x[0], x[1], Tensor(), 2, 0); }, tol, rng);
  }
}

TEST_F(CudaTest, MaxPool2dOpMatchesCpuBitForBit) {
  cudatest::Rng rng;
  TS_TRACE_SEED(rng);
  for (DType t : {DType::f32, DType::bf16, DType::f16}) {
    SCOPED_TRACE(dtype_name(t));
    const std::string sfx = std::string(" ") + dtype_name(t);
    // The same maxima and the same gradient sums in the same order: exact.
    compare_op(
        "max_pool2d op k2 s2" + sfx, {randn(rng, Shape{2, 3, 8, 6}, t)},
        [](const V& x) { return ops::max_pool2d(x[0], 2, 2); }, 0.0, rng);
    compare_op(
        "max_pool2d op k3 s2" + sfx, {randn(rng, Shape{2, 2, 9, 7}, t)},
        [](const V& x) { return ops::max_pool2d(x[0], 3, 2); }, 0.0, rng);  // windows overlap
  }
}

TEST_F(CudaTest, TransposeAndReshapeOfDeviceTensorsMatchCpu) {
  cudatest::Rng rng;
  TS_TRACE_SEED(rng);
  // transpose materialises through the strided device copy, forward and backward: exact.
  compare_op(
      "transpose op (0, 2)", {randn(rng, Shape{3, 4, 5})},
      [](const V& x) { return ops::transpose(x[0], 0, 2); }, 0.0, rng);
  compare_op(
      "transpose op bf16 (1, 2)", {randn(rng, Shape{2, 3, 7}, DType::bf16)},
      [](const V& x) { return ops::transpose(x[0], 1, 2); }, 0.0, rng);
  // reshape of a strided view (a view carries no autograd edge: forward only).
  Tensor h = randn(rng, Shape{6, 10}), d = h.to(kGpu);
  Tensor rh = ops::reshape(h.transpose_view(0, 1), Shape{5, 12});
  Tensor rd = ops::reshape(d.transpose_view(0, 1), Shape{5, 12});
  ASSERT_TRUE(rd.is_cuda());
  cudatest::expect_exact("reshape of transpose_view", "f32", rd.to_vector(), rh.to_vector());
}

TEST_F(CudaTest, ConvOnMixedDevicesNamesTheInput) {
  Tensor x = Tensor::ones(Shape{1, 2, 5, 5}, DType::f32, kGpu);
  Tensor w = Tensor::ones(Shape{3, 2, 3, 3});  // on the CPU
  try {
    ops::conv2d(x, w, Tensor());
    FAIL() << "conv2d of a cuda x and a cpu weight did not throw";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("conv2d"), std::string::npos) << msg;
    EXPECT_NE(msg.find("'weight'"), std::string::npos) << msg;
    EXPECT_NE(msg.find("cuda:0"), std::string::npos) << msg;
  }
  Tensor b = Tensor::ones(Shape{3});  // x and weight on the GPU, bias on the CPU
  EXPECT_THROW(ops::conv2d(x, w.to(kGpu), b), Error);
}

// ---- models ----

// Inputs [N, 1, 12, 16]: the MLP flattens them to 192 features.
nn::MLPClassifierConfig mlp_config() {
  nn::MLPClassifierConfig c;
  c.in_features = 12 * 16;
  c.hidden = 40;
  c.n_hidden_layers = 2;
  c.classes = 10;
  return c;
}

nn::CNNClassifierConfig cnn_config() {
  nn::CNNClassifierConfig c;
  c.in_channels = 1;
  c.height = 12, c.width = 16;
  c.channels = 4;
  c.classes = 10;
  return c;
}

// Inputs and starting weights on coarse grids (inputs: multiples of 1/4 in [-2, 2]; weights:
// multiples of 1/16 in [-1, 1]; biases start at 0). Every pre-activation that feeds a ReLU or a
// max-pool is then a sum of few-bit dyadic products whose exact value fits f32's 24 bits, also
// after the bf16 rounding of autocast (these operands are bf16-exact, and a rounded activation
// stays a multiple of 1/64), so both backends get bit-identical values there whatever their
// summation order. Otherwise a pre-activation within an ulp of 0, or two window values within an
// ulp of each other, would now and then send a gradient down a different path on each backend:
// a difference of a whole term, which no tolerance bounds. (Worst case, the MLP's second layer:
// 40 terms of up to 384 x 1 in units of 1/1024, below 2^24.)
std::vector<float> on_grid(std::vector<float> v, float step, float limit) {
  for (float& x : v) x = std::clamp(std::round(x / step) * step, -limit, limit);
  return v;
}

void quantize_weights(nn::Module& m) {
  for (Tensor& p : m.parameters())
    p.copy_from(Tensor::from_vector(on_grid(p.to_vector(), 1.f / 16, 1.f), p.shape()));
}

struct Batch {
  Tensor images, labels;
};

Batch random_batch(cudatest::Rng& rng, int64_t n) {
  const std::vector<float> x = on_grid(rng.normal(size_t(n * 12 * 16)), 0.25f, 2.f);
  return {Tensor::from_vector(x, Shape{n, 1, 12, 16}),
          Tensor::from_ints(rng.ints(size_t(n), 0, 9), Shape{n})};
}

// Two identical models from one seed (weights on the grid), the second moved to the GPU.
template <class Model, class Config>
struct ModelPair {
  ModelPair(const Config& c, uint64_t seed) {
    Generator g1(seed), g2(seed);
    cpu = std::make_unique<Model>(c, g1);
    gpu = std::make_unique<Model>(c, g2);
    quantize_weights(*cpu);
    quantize_weights(*gpu);
    gpu->to(kGpu);
  }
  std::unique_ptr<Model> cpu, gpu;
};

template <class Model>
Tensor classifier_loss(const Model& m, const Batch& b, Device dev) {
  Tensor x = dev.is_cpu() ? b.images : b.images.to(dev);
  Tensor y = dev.is_cpu() ? b.labels : b.labels.to(dev);
  return ops::cross_entropy(m.forward(x), y);
}

template <class Model, class Config>
void compare_model_gradients(const std::string& model, const Config& cfg, int64_t batch,
                             DType autocast, double loss_bound, double grad_bound) {
  cudatest::Rng rng;
  TS_TRACE_SEED(rng);
  ModelPair<Model, Config> m(cfg, rng.u64());
  const Batch b = random_batch(rng, batch);
  AutocastGuard guard(autocast);
  const char* dt = dtype_name(autocast);
  Tensor lc = classifier_loss(*m.cpu, b, Device::cpu());
  lc.backward();
  Tensor lg = classifier_loss(*m.gpu, b, kGpu);
  ASSERT_TRUE(lg.is_cuda()) << model << ": the loss is on " << lg.device().str();
  lg.backward();
  expect_close(model + " loss", dt, lg.to_vector(), lc.to_vector(), loss_bound);
  const auto pc = m.cpu->named_parameters(), pg = m.gpu->named_parameters();
  ASSERT_EQ(pc.size(), pg.size());
  for (size_t i = 0; i < pc.size(); ++i) {
    const std::string& name = pc[i].first;
    ASSERT_TRUE(pg[i].second.is_cuda()) << name << " was not moved to the GPU";
    ASSERT_TRUE(pc[i].second.grad().defined()) << name << " has no gradient on the CPU";
    ASSERT_TRUE(pg[i].second.grad().defined()) << name << " has no gradient on the GPU";
    EXPECT_TRUE(pg[i].second.grad().is_cuda()) << name << "'s gradient is on the host";
    expect_close(model + " grad " + name, dt, pg[i].second.grad().to_vector(),
                 pc[i].second.grad().to_vector(), grad_bound);
  }
}

TEST_F(CudaTest, MlpLossAndEveryGradientMatchCpu) {
  compare_model_gradients<nn::MLPClassifier>("mlp", mlp_config(), 7, DType::f32, kModelF32,
                                             kModelF32);
  compare_model_gradients<nn::MLPClassifier>("mlp", mlp_config(), 7, DType::bf16, kModelBf16Loss,
                                             kModelBf16Grad);
}

TEST_F(CudaTest, CnnLossAndEveryGradientMatchCpu) {
  compare_model_gradients<nn::CNNClassifier>("cnn", cnn_config(), 5, DType::f32, kModelF32,
                                             kModelF32);
  compare_model_gradients<nn::CNNClassifier>("cnn", cnn_config(), 5, DType::bf16, kModelBf16Loss,
                                             kModelBf16Grad);
}

// Four steps of SGD (momentum, Nesterov, weight decay on the kernels only) on each backend, the
// whole loop on the device (zero_grad, backward into the flat gradients, the update kernel):
// the losses of every step, and the weights and momentum after the first step, agree; the
// optimizer's state lives on the GPU. Only the first step starts from grid weights (see
// on_grid): later ones start from updated weights, where a ReLU or pooling decision may differ
// between the backends, which moves a later loss by far less than its bound but a single
// weight or momentum value by a whole term; so those are compared after the first step.
TEST_F(CudaTest, CnnFourSgdStepsMatchCpu) {
  cudatest::Rng rng;
  TS_TRACE_SEED(rng);
  ModelPair<nn::CNNClassifier, nn::CNNClassifierConfig> m(cnn_config(), rng.u64());
  FlatParameters flat_cpu(m.cpu->parameters()), flat_gpu(m.gpu->parameters());
  ASSERT_TRUE(flat_gpu.device() == kGpu);
  SGDOptions opt;
  opt.momentum = 0.9f, opt.nesterov = true, opt.weight_decay = 1e-2f;
  SGD sgd_cpu(flat_cpu, opt), sgd_gpu(flat_gpu, opt);
  ASSERT_EQ(sgd_gpu.state().buffers.size(), 1u);
  const Tensor momentum_gpu = sgd_gpu.state().buffers[0].second;
  const Tensor momentum_cpu = sgd_cpu.state().buffers[0].second;
  EXPECT_TRUE(momentum_gpu.is_cuda())
      << "the momentum buffer is on " << momentum_gpu.device().str();
  for (int step = 0; step < 4; ++step) {
    SCOPED_TRACE("step " + std::to_string(step));
    const Batch b = random_batch(rng, 4);
    flat_cpu.zero_grad();
    flat_gpu.zero_grad();
    Tensor lc = classifier_loss(*m.cpu, b, Device::cpu());
    Tensor lg = classifier_loss(*m.gpu, b, kGpu);
    lc.backward();
    lg.backward();
    sgd_cpu.step(0.05f);
    sgd_gpu.step(0.05f);
    expect_close("cnn sgd loss step " + std::to_string(step), "f32", lg.to_vector(), lc.to_vector(),
                 kModelF32);
    if (step == 0) {
      expect_close("cnn sgd weights after 1 step", "f32", flat_gpu.values().to_vector(),
                   flat_cpu.values().to_vector(), kModelF32);
      expect_close("cnn sgd momentum after 1 step", "f32", momentum_gpu.to_vector(),
                   momentum_cpu.to_vector(), kModelF32);
    }
  }
  EXPECT_TRUE(flat_gpu.values().is_cuda() && flat_gpu.grads().is_cuda());
}

// ---- host side: no device needed ----

// Under f16 autocast conv2d is an f32 convolution of operands rounded to f16 (an f16 GEMM's
// products exactly, on both backends); the bias gradient comes from the unrounded output
// gradient.
TEST(ConvAutocast, F16OnTheCpuIsF32OnF16RoundedOperands) {
  Generator gen(11);
  Tensor x = Tensor::randn(Shape{2, 3, 7, 6}, gen), w = Tensor::randn(Shape{4, 3, 3, 3}, gen);
  Tensor b = Tensor::randn(Shape{4}, gen);
  Tensor gy = Tensor::randn(Shape{2, 4, 7, 6}, gen);
  auto round16 = [](const Tensor& t) { return t.to(DType::f16).to(DType::f32); };

  Tensor x1 = x.clone().set_requires_grad(), w1 = w.clone().set_requires_grad();
  Tensor b1 = b.clone().set_requires_grad();
  Tensor y1;
  {
    AutocastGuard guard(DType::f16);
    y1 = ops::conv2d(x1, w1, b1, 1, 1);
  }
  ops::sum(ops::mul(y1, gy)).backward();

  Tensor x2 = round16(x).set_requires_grad(), w2 = round16(w).set_requires_grad();
  Tensor b2 = b.clone().set_requires_grad();
  Tensor y2 = ops::conv2d(x2, w2, b2, 1, 1);
  // dx and dw from the f16-rounded output gradient, db from the unrounded one.
  ops::sum(ops::mul(y2, round16(gy))).backward();
  Tensor b3 = b.clone().set_requires_grad();
  ops::sum(ops::mul(ops::conv2d(x2.detach(), w2.detach(), b3, 1, 1), gy)).backward();

  EXPECT_EQ(y1.to_vector(), y2.to_vector());
  EXPECT_EQ(x1.grad().to_vector(), x2.grad().to_vector());
  EXPECT_EQ(w1.grad().to_vector(), w2.grad().to_vector());
  EXPECT_EQ(b1.grad().to_vector(), b3.grad().to_vector());
  // ...and the rounding did happen (random values are not f16-representable).
  EXPECT_NE(y1.to_vector(), ops::conv2d(x, w, b, 1, 1).to_vector());
}

}  // namespace
}  // namespace tessera
