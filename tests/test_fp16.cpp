// f16 mixed precision on the CPU: the F16C conversions against core/half.h bit for bit, every
// autocast-aware op under f16 autocast against f32 (forward and every gradient), and a small
// GPT trained with AdamW under f16 autocast and dynamic loss scaling against the same run in f32.
//
// Error bounds. f16 keeps 11 significant bits: rounding to nearest moves a value by at most
// u = 2^-11 = 4.9e-4 relative, about u/sqrt(3) = 2.8e-4 rms for values that are not
// representable. A GEMM on rounded operands sums products each perturbed by two independent such
// roundings; with random signs they add in quadrature, so the normwise relative error of the
// result is about sqrt(2/3) u = 4e-4, and a few roundings in a row (the f16 output of
// linear_gelu, its f16 gradient, the backward GEMM) reach ~1e-3. kF16Bound = 2e-3 (4u) leaves a
// factor 2..5 of margin and still fails a bf16 computation (u = 2^-8 = 3.9e-3: normwise ~3e-3),
// which the tests show. kRoundedLowerBound = 1e-4 is far above f32's own error (~1e-7): an
// f16 result that close to f32 would mean the operands were not rounded at all.
#include <gtest/gtest.h>

#include <cfloat>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <limits>
#include <random>
#include <vector>

#if defined(__SSE__)
#include <xmmintrin.h>
#endif

#include "autograd/grad_mode.h"
#include "core/half.h"
#include "gradcheck.h"
#include "kernels/cpu/cast.h"
#include "kernels/cpu/matmul.h"
#include "nn/gpt.h"
#include "ops/autocast.h"
#include "ops/ops.h"
#include "optim/adamw.h"
#include "optim/flat_params.h"
#include "optim/loss_scaler.h"

using namespace tessera;
using namespace tessera::testing;

namespace {

constexpr double kF16Bound = 2e-3;
constexpr double kRoundedLowerBound = 1e-4;
// f16 result vs f32 on inputs pre-rounded to f16: the same products, summed in f32 by the same
// oneDNN primitive; only a differently placed rounding (linear_gelu's f16 output and gradient,
// compared after rounding the reference too) can differ, by at most u on a few elements.
constexpr double kPreRoundedBound = 1e-6;

// ------------------------------------------------------------------ conversions

// cpu::f32_to_f16 / cpu::cast vs float_to_f16 on every value of xs; returns the mismatches.
int64_t f32_to_f16_mismatches(const std::vector<float>& xs) {
  std::vector<f16> vec(xs.size()), via_cast(xs.size());
  cpu::f32_to_f16(xs.data(), vec.data(), int64_t(xs.size()));
  cpu::cast(xs.data(), DType::f32, via_cast.data(), DType::f16, int64_t(xs.size()));
  int64_t bad = 0;
  for (size_t i = 0; i < xs.size(); ++i) {
    const uint16_t want = float_to_f16(xs[i]).bits;
    if (vec[i].bits != want || via_cast[i].bits != want) {
      if (bad < 5)
        ADD_FAILURE() << "f32 bits 0x" << std::hex << float_to_bits(xs[i]) << ": scalar 0x" << want
                      << ", vectorised 0x" << vec[i].bits << ", cast 0x" << via_cast[i].bits;
      ++bad;
    }
  }
  return bad;
}

int64_t all_f16_to_f32_mismatches() {
  std::vector<f16> all(65536);
  for (uint32_t i = 0; i < 65536; ++i) all[i].bits = uint16_t(i);
  std::vector<float> vec(all.size()), via_cast(all.size());
  cpu::f16_to_f32(all.data(), vec.data(), int64_t(all.size()));
  cpu::cast(all.data(), DType::f16, via_cast.data(), DType::f32, int64_t(all.size()));
  int64_t bad = 0;
  for (size_t i = 0; i < all.size(); ++i) {
    const uint32_t want = float_to_bits(f16_to_float(all[i]));
    if (float_to_bits(vec[i]) != want || float_to_bits(via_cast[i]) != want) {
      if (bad < 5)
        ADD_FAILURE() << "f16 bits 0x" << std::hex << i << ": scalar 0x" << want
                      << ", vectorised 0x" << float_to_bits(vec[i]) << ", cast 0x"
                      << float_to_bits(via_cast[i]);
      ++bad;
    }
  }
  return bad;
}

// Every f32 whose high 16 bits (sign, exponent, top 7 mantissa bits) take all 2^16 values,
// each with low 16 bits at the rounding boundaries of normal f16 results (bit 12 is the
// rounding bit, bit 13 the last kept one: ties to even both ways, just below and above) and at
// random; plus uniformly random bit patterns and named edge cases.
std::vector<float> f32_sweep(int64_t random_count) {
  const uint32_t lows[] = {0x0000, 0x0001, 0x0fff, 0x1000, 0x1001, 0x1fff, 0x2000, 0x2fff,
                           0x3000, 0x3001, 0x7fff, 0x8000, 0xefff, 0xf000, 0xf001, 0xffff};
  std::mt19937 rng(12345);
  std::vector<float> xs;
  xs.reserve(size_t(65536 * 20 + random_count + 64));
  for (uint32_t hi = 0; hi < 65536; ++hi) {
    for (uint32_t lo : lows) xs.push_back(bits_to_float(hi << 16 | lo));
    for (int r = 0; r < 4; ++r) xs.push_back(bits_to_float(hi << 16 | (rng() & 0xffffu)));
  }
  for (int64_t i = 0; i < random_count; ++i) xs.push_back(bits_to_float(rng()));
  const float edge[] = {0.f,
                        -0.f,
                        INFINITY,
                        -INFINITY,
                        NAN,
                        -NAN,
                        FLT_MIN,
                        -FLT_MIN,
                        FLT_MAX,
                        -FLT_MAX,
                        std::numeric_limits<float>::denorm_min(),
                        65504.f,
                        65519.99f,
                        65520.f,
                        -65520.f,
                        65536.f,
                        1e6f,
                        5.9604644775390625e-08f,   // smallest f16 subnormal 2^-24
                        2.98023223876953125e-08f,  // 2^-25: a tie, rounds to 0 (even)
                        8.94069671630859375e-08f,  // 3 * 2^-25: a tie, rounds to 2^-23
                        6.103515625e-05f,
                        6.1035152e-05f};  // 2^-14 (f16 min normal), just below
  for (float e : edge) xs.push_back(e);
  // NaNs with payloads the hardware would keep: signalling, quiet, both signs.
  for (uint32_t nan :
       {0x7f800001u, 0x7fa00000u, 0x7fc00001u, 0x7fffffffu, 0xff800001u, 0xffffe000u, 0x7f802000u})
    xs.push_back(bits_to_float(nan));
  return xs;
}

TEST(F16Cast, EveryF16ToF32MatchesHalfH) {
  EXPECT_EQ(all_f16_to_f32_mismatches(), 0);
}

TEST(F16Cast, F32ToF16MatchesHalfHOnBoundariesRandomAndEdgeCases) {
  const std::vector<float> xs = f32_sweep(int64_t(1) << 22);
  EXPECT_EQ(f32_to_f16_mismatches(xs), 0) << "of " << xs.size() << " values";
  // Odd lengths: the scalar tail after the 16-lane blocks.
  std::vector<float> tail(xs.begin(), xs.begin() + 37);
  EXPECT_EQ(f32_to_f16_mismatches(tail), 0);
}

#if defined(__SSE__)
// The same with the CPU flushing denormals (FTZ) and reading them as zero (DAZ), as some
// libraries leave it: the conversions must not depend on it. On one thread (<= 65536 values).
TEST(F16Cast, SweepsIgnoreFlushToZeroAndDenormalsAreZero) {
  const unsigned saved = _mm_getcsr();
  _mm_setcsr(saved | 0x8040u);  // FTZ (bit 15) | DAZ (bit 6)
  const int64_t bad_f16 = all_f16_to_f32_mismatches();
  std::vector<float> sub;  // f32 values around and inside f16's subnormal range, and denormals
  for (uint32_t hi = 0; hi < 0x3900; ++hi) sub.push_back(bits_to_float(hi << 16 | 0x1000u));
  for (uint32_t hi = 0x8000; hi < 0x8100; ++hi) sub.push_back(bits_to_float(hi << 16 | 0x1234u));
  const int64_t bad_f32 = f32_to_f16_mismatches(sub);
  _mm_setcsr(saved);
  EXPECT_EQ(bad_f16, 0);
  EXPECT_EQ(bad_f32, 0);
}
#endif

// Every one of the 2^32 f32 bit patterns (6 s on 2 threads; run by hand with
// --gtest_also_run_disabled_tests --gtest_filter='*AllF32*').
TEST(F16Cast, DISABLED_AllF32ToF16MatchHalfH) {
  constexpr int64_t kChunk = 1 << 24;
  std::vector<float> xs(kChunk);
  std::vector<f16> got(kChunk);
  int64_t bad = 0;
  for (uint64_t base = 0; base < (uint64_t(1) << 32); base += kChunk) {
    for (int64_t i = 0; i < kChunk; ++i) xs[size_t(i)] = bits_to_float(uint32_t(base + i));
    cpu::f32_to_f16(xs.data(), got.data(), kChunk);
    for (int64_t i = 0; i < kChunk; ++i)
      bad += got[size_t(i)].bits != float_to_f16(xs[size_t(i)]).bits;
  }
  EXPECT_EQ(bad, 0);
}

// ------------------------------------------------------------------ ops

using Op = std::function<Tensor(const std::vector<Tensor>&)>;

struct OpRun {
  Tensor out;                 // as f32
  std::vector<Tensor> grads;  // of each input, f32
};

// Runs op on fresh leaf copies of inputs under autocast dtype ac (the first `pre_round` of them,
// the GEMM operands, rounded through f16 first); backward of sum(out * r).
OpRun run_op(const Op& op, const std::vector<Tensor>& inputs, const Tensor& r, DType ac,
             size_t pre_round = 0) {
  AutocastGuard guard(ac);
  std::vector<Tensor> in;
  for (const Tensor& x : inputs) {
    Tensor c = in.size() < pre_round ? x.to(DType::f16).to(DType::f32) : x.clone();
    c.set_requires_grad(true);
    in.push_back(c);
  }
  Tensor out = op(in);
  ops::sum(ops::mul(ops::cast(out, DType::f32), r)).backward();
  OpRun res{out.to(DType::f32), {}};
  for (const Tensor& x : in) res.grads.push_back(x.grad());
  return res;
}

struct OpCase {
  const char* name;
  std::vector<Shape> shapes;
  Op op;
  bool rounds_output;  // the op stores its output in the compute dtype (linear_gelu)
};

std::vector<OpCase> gemm_cases() {
  using V = std::vector<Tensor>;
  return {
      {"matmul",
       {Shape{24, 40}, Shape{40, 18}},
       [](const V& x) { return ops::matmul(x[0], x[1]); },
       false},
      {"matmul batched",
       {Shape{3, 9, 32}, Shape{3, 32, 20}},
       [](const V& x) { return ops::matmul(x[0], x[1]); },
       false},
      {"linear+bias",
       {Shape{2, 13, 48}, Shape{36, 48}, Shape{36}},
       [](const V& x) { return ops::linear(x[0], x[1], x[2]); },
       false},
      {"linear_gelu+bias",
       {Shape{21, 40}, Shape{64, 40}, Shape{64}},
       [](const V& x) { return ops::linear_gelu(x[0], x[1], x[2]); },
       true},
  };
}

std::vector<Tensor> random_inputs(const OpCase& c, Generator& g) {
  std::vector<Tensor> in;
  for (const Shape& s : c.shapes) in.push_back(Tensor::randn(s, g));
  return in;
}

// Random weights r for the scalar sum(out * r), one per output element.
Tensor output_weights(const OpCase& c, const std::vector<Tensor>& in, Generator& g) {
  NoGradGuard no_grad;
  return Tensor::randn(c.op(in).shape(), g);
}

// Under f16 autocast each GEMM op is within kF16Bound of f32 (output and every gradient), and
// measurably not f32 itself.
TEST(F16Ops, GemmOpsAreCloseToF32ButRoundedOutputAndEveryGradient) {
  Generator g(7);
  for (const OpCase& c : gemm_cases()) {
    SCOPED_TRACE(c.name);
    const std::vector<Tensor> in = random_inputs(c, g);
    const Tensor r = output_weights(c, in, g);
    const OpRun ref = run_op(c.op, in, r, DType::f32);
    const OpRun half = run_op(c.op, in, r, DType::f16);
    const OpRun brain = run_op(c.op, in, r, DType::bf16);
    ASSERT_EQ(half.grads.size(), ref.grads.size());
    const double e_out = relative_error(half.out, ref.out);
    EXPECT_LE(e_out, kF16Bound) << "forward";
    EXPECT_GE(e_out, kRoundedLowerBound) << "forward: f16 result as exact as f32";
    // The bound separates f16 from bf16: a bf16 computation would not pass it.
    EXPECT_GT(relative_error(brain.out, ref.out), kF16Bound) << "bound does not reject bf16";
    for (size_t i = 0; i < ref.grads.size(); ++i) {
      SCOPED_TRACE("gradient of input " + std::to_string(i));
      ASSERT_TRUE(half.grads[i].defined());
      EXPECT_EQ(half.grads[i].dtype(), DType::f32);
      const double e = relative_error(half.grads[i], ref.grads[i]);
      EXPECT_LE(e, kF16Bound);
      const bool is_bias = c.shapes.size() == 3 && i == 2;  // column sums of f32 dY: not rounded
      if (!is_bias) {
        EXPECT_GE(e, kRoundedLowerBound);
      }
    }
  }
}

// Under f16 autocast the result is the f32 computation on operands rounded to f16 (the
// inputs, and the incoming gradient the backward GEMMs take): the CPU's f16 is exactly that.
TEST(F16Ops, GemmOpsEqualF32OnOperandsPreRoundedToF16) {
  Generator g(8);
  for (const OpCase& c : gemm_cases()) {
    SCOPED_TRACE(c.name);
    const std::vector<Tensor> in = random_inputs(c, g);
    // r pre-rounded too: the backward rounds the output gradient to f16 before its GEMMs.
    const Tensor r = output_weights(c, in, g).to(DType::f16).to(DType::f32);
    const OpRun half = run_op(c.op, in, r, DType::f16);
    // The GEMM operands (x and w, or a and b) rounded; a bias stays f32 (autocast keeps it so).
    const OpRun ref = run_op(c.op, in, r, DType::f32, /*pre_round=*/2);
    // linear_gelu stores gelu(h) in f16 where the f32 reference keeps it: round it the same way.
    Tensor ref_out = c.rounds_output ? ref.out.to(DType::f16).to(DType::f32) : ref.out;
    EXPECT_LE(relative_error(half.out, ref_out), kPreRoundedBound) << "forward";
    if (c.rounds_output) {
      // Its backward rounds dH = r * gelu'(h) to f16 where the reference does not: one rounding
      // of one GEMM operand, ~u/sqrt(3) = 2.8e-4 normwise; bounded by 2u, not the tight bound.
      for (size_t i = 0; i < ref.grads.size(); ++i)
        EXPECT_LE(relative_error(half.grads[i], ref.grads[i]), 9.8e-4) << "gradient " << i;
      continue;
    }
    for (size_t i = 0; i < ref.grads.size(); ++i)
      EXPECT_LE(relative_error(half.grads[i], ref.grads[i]), kPreRoundedBound) << "gradient " << i;
  }
}

// Under f16 autocast attention rounds q, k, v to f16, and in the backward the incoming gradient
// too, then computes in f32 (ops/attention.cpp): on the CPU exactly the f32 attention of the
// rounded values (the reference of the GPU's tensor-core kernels), and measurably not the f32
// attention of the unrounded ones.
TEST(F16Ops, AttentionIsF32AttentionOfF16RoundedInputs) {
  Generator g(9);
  const std::vector<Tensor> in{Tensor::randn(Shape{2, 11, 3 * 32}, g, 0.f, 0.5f)};
  Op op = [](const std::vector<Tensor>& x) { return ops::attention(x[0], 4); };
  const Tensor r = Tensor::randn(Shape{2, 11, 32}, g);
  const OpRun half = run_op(op, in, r, DType::f16);
  // q, k, v pre-rounded, and r: the gradient attention receives is r itself.
  const OpRun ref = run_op(op, in, r.to(DType::f16).to(DType::f32), DType::f32, /*pre_round=*/1);
  EXPECT_EQ(half.out.dtype(), DType::f32);
  EXPECT_EQ(half.grads[0].dtype(), DType::f32);
  EXPECT_EQ(relative_error(half.out, ref.out), 0.0);
  EXPECT_EQ(relative_error(half.grads[0], ref.grads[0]), 0.0);
  const OpRun full = run_op(op, in, r, DType::f32);
  const double e_out = relative_error(half.out, full.out);
  const double e_grad = relative_error(half.grads[0], full.grads[0]);
  EXPECT_GE(e_out, kRoundedLowerBound) << "forward: inputs not rounded to f16";
  EXPECT_LE(e_out, kF16Bound);
  EXPECT_GE(e_grad, kRoundedLowerBound) << "gradient: inputs not rounded to f16";
  EXPECT_LE(e_grad, kF16Bound);
}

// The cpu GEMM kernel itself: f16 operands (every transpose, a batch, accumulate, bias) give
// exactly the f32 GEMM of the widened values.
TEST(F16Ops, GemmKernelWidensF16Exactly) {
  Generator g(10);
  const int64_t B = 2, m = 7, n = 9, k = 13;
  for (int variant = 0; variant < 4; ++variant) {
    SCOPED_TRACE("variant " + std::to_string(variant));
    const bool ta = variant & 1, tb = variant & 2;
    Tensor a = Tensor::randn(Shape{B, m * k}, g).to(DType::f16);
    Tensor b = Tensor::randn(Shape{B, k * n}, g).to(DType::f16);
    Tensor a32 = a.to(DType::f32), b32 = b.to(DType::f32);
    Tensor c0 = Tensor::randn(Shape{B, m * n}, g);
    Tensor c16 = c0.clone(), c32 = c0.clone();
    cpu::GemmArgs args;
    args.batch = B, args.m = m, args.n = n, args.k = k, args.trans_a = ta, args.trans_b = tb;
    args.accumulate = variant == 3;
    args.ab_type = DType::f16, args.a = a.raw_data(), args.b = b.raw_data();
    args.c = c16.data<float>();
    cpu::gemm(args);
    args.ab_type = DType::f32, args.a = a32.raw_data(), args.b = b32.raw_data();
    args.c = c32.data<float>();
    cpu::gemm(args);
    EXPECT_EQ(c16.to_vector(), c32.to_vector());
  }
}

// f16 overflows at 65504: an operand beyond it becomes inf in the cast (no clamping), which is
// what loss scaling detects.
TEST(F16Ops, OperandBeyondF16RangeBecomesInfNotClamped) {
  AutocastGuard guard(DType::f16);
  Tensor x = Tensor::ones(Shape{3, 4});
  x.data<float>()[5] = 70000.f;  // row 1
  Tensor w = Tensor::ones(Shape{2, 4});
  std::vector<float> y = ops::linear(x, w).to_vector();
  EXPECT_EQ(y[0], 4.f);
  EXPECT_TRUE(std::isinf(y[2]) && std::isinf(y[3])) << y[2];
  EXPECT_EQ(y[4], 4.f);
}

TEST(F16Ops, AutocastRefusesNonFloatDtypes) {
  expect_error([] { AutocastGuard g(DType::i32); }, {"autocast", "i32", "f32, bf16 or f16"});
  EXPECT_EQ(autocast_dtype(), DType::f32);
}

// ------------------------------------------------------------------ training

nn::GPTConfig small_gpt() {
  nn::GPTConfig c;
  c.n_layer = 2, c.n_head = 4, c.n_embd = 64, c.context = 16, c.vocab_size = 96;
  return c;
}

Tensor random_ids(int64_t n, int64_t vocab, Generator& g) {
  std::vector<int32_t> v(static_cast<size_t>(n));
  for (auto& x : v) x = int32_t(g.next_u64() % uint64_t(vocab));
  return Tensor::from_ints(v, Shape{4, n / 4});
}

struct TrainResult {
  std::vector<float> losses;    // unscaled loss of every step
  std::vector<bool> skipped;    // step skipped by the scaler
  std::vector<bool> unchanged;  // parameters bit-identical after the step
  float final_scale = 1.f;
};

// steps of AdamW on one fixed batch (a memorisable task: the loss falls steadily) from the same
// initial weights; f16 runs use the scaler as loss_scaler.h's comment does.
TrainResult train(DType ac, int steps, float init_scale) {
  const nn::GPTConfig c = small_gpt();
  Generator g(2024);
  nn::GPT model(c, g);
  Generator data(77);
  const Tensor ids = random_ids(64, c.vocab_size, data),
               targets = random_ids(64, c.vocab_size, data);
  FlatParameters flat(model.parameters());
  AdamW opt(flat);
  LossScalerOptions so;
  so.enabled = ac == DType::f16;
  so.init_scale = init_scale;
  DynamicLossScaler scaler(so);
  AutocastGuard guard(ac);
  TrainResult res;
  for (int step = 0; step < steps; ++step) {
    const std::vector<float> before = flat.values().to_vector();
    flat.zero_grad();
    Tensor loss = model.loss(ids, targets);
    scaler.scale_loss(loss).backward();
    const bool ok = scaler.unscale(flat);
    if (ok) opt.step(3e-3f);
    scaler.update(ok);
    res.losses.push_back(loss.item());
    res.skipped.push_back(!ok);
    res.unchanged.push_back(flat.values().to_vector() == before);
  }
  res.final_scale = scaler.scale();
  return res;
}

// Bound on |loss_f16 - loss_f32| after 40 steps. Each step's gradients differ by ~1e-3
// relative (kF16Bound's reasoning); Adam normalises them, so each update differs by about as
// much (more only for components whose gradient is ~0, whose sign may flip), and the loss at
// the end, ~0.1, moves by ~1e-4. 5e-3 allows 50x that for the drift of 40 steps and is still
// 1/1000 of the descent (ln 96 = 4.56 to ~0.1): a broken f16 gradient would not stay inside it.
constexpr float kTrainLossBound = 5e-3f;
constexpr int kSteps = 40;

TEST(F16Training, SmallGptWithLossScalingTracksF32) {
  const TrainResult ref = train(DType::f32, kSteps, 1.f);
  const TrainResult half = train(DType::f16, kSteps, 65536.f);
  EXPECT_NEAR(ref.losses[0], std::log(96.0), 0.1);
  EXPECT_LT(ref.losses.back(), 0.5f * ref.losses[0]) << "the f32 run did not train";
  for (int s = 0; s < kSteps; ++s) EXPECT_FALSE(half.skipped[size_t(s)]) << "step " << s;
  EXPECT_EQ(half.final_scale, 65536.f);
  EXPECT_NEAR(half.losses[0], ref.losses[0], 2e-3 * ref.losses[0]) << "initial loss";
  std::printf("[fp16] %d steps: loss %.4f -> f32 %.5f, f16 %.5f (bound %.3f)\n", kSteps,
              ref.losses[0], ref.losses.back(), half.losses.back(), kTrainLossBound);
  EXPECT_NEAR(half.losses.back(), ref.losses.back(), kTrainLossBound);
  EXPECT_NE(half.losses.back(), ref.losses.back()) << "the f16 run computed in f32";
}

// A scale of 2^40 overflows the f16 gradients: the scaler backs off, the skipped steps leave the
// parameters untouched, and once the scale fits the run trains like a normal one.
TEST(F16Training, HugeInitialScaleBacksOffSkipsThenTrains) {
  const int steps = kSteps + 30;
  const TrainResult half = train(DType::f16, steps, 1099511627776.f);  // 2^40
  int skipped = 0;
  for (int s = 0; s < steps; ++s) {
    if (!half.skipped[size_t(s)]) continue;
    ++skipped;
    EXPECT_TRUE(half.unchanged[size_t(s)]) << "parameters changed on skipped step " << s;
  }
  ASSERT_TRUE(half.skipped[0]) << "2^40 did not overflow";
  // Backed off once per skipped step (growth_interval 2000 is never reached), to at most 2^23:
  // the head's output gradient alone, ~1/N = 1/64 on each target logit at initialisation,
  // overflows f16 (65504) for scales above ~2^22.
  EXPECT_EQ(half.final_scale, std::ldexp(1.f, 40 - skipped));
  EXPECT_LE(half.final_scale, std::ldexp(1.f, 23));
  for (int s = steps - 20; s < steps; ++s) EXPECT_FALSE(half.skipped[size_t(s)]) << "step " << s;
  // The skipped steps did not touch the weights or Adam's state, so the clean steps are a run
  // of steps - skipped on the same batch from the initial weights: compare with f32's.
  ASSERT_GE(steps - skipped, kSteps) << "too few clean steps left to compare";
  const TrainResult ref = train(DType::f32, steps - skipped, 1.f);
  for (int s = 0; s < steps; ++s) {
    if (!half.skipped[size_t(s)]) {
      EXPECT_FALSE(half.unchanged[size_t(s)]) << "clean step " << s;
    }
  }
  std::printf("[fp16] init scale 2^40: %d skipped, final scale %g, loss f32 %.5f, f16 %.5f\n",
              skipped, double(half.final_scale), ref.losses.back(), half.losses.back());
  EXPECT_NEAR(half.losses.back(), ref.losses.back(), kTrainLossBound);
  EXPECT_LT(half.losses.back(), 0.5f * half.losses[0]);
}

}  // namespace
