// The training step's fast paths give the same numbers as the plain ones: GEMMs that add into
// C (oneDNN's BLAS-style kernel, picked for them), weight gradients added straight into existing
// gradient buffers (FlatParameters), and the autograd engine's handling of shared gradients.
#include <gtest/gtest.h>

#include <cmath>

#include "autograd/engine.h"
#include "gradcheck.h"
#include "kernels/cpu/matmul.h"
#include "ops/autocast.h"
#include "ops/ops.h"
#include "optim/flat_params.h"

using namespace tessera;
using namespace tessera::testing;

namespace {

// C[m, n] = sum_k op(A)[i, k] op(B)[k, j] in f64, from f32 copies of the operands.
std::vector<double> reference_gemm(const std::vector<float>& a, const std::vector<float>& b,
                                   int64_t m, int64_t n, int64_t k, bool ta, bool tb) {
  std::vector<double> c(size_t(m * n), 0.0);
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) {
      double s = 0;
      for (int64_t p = 0; p < k; ++p)
        s += double(a[size_t(ta ? p * m + i : i * k + p)]) *
             double(b[size_t(tb ? j * k + p : p * n + j)]);
      c[size_t(i * n + j)] = s;
    }
  return c;
}

}  // namespace

TEST(FastPaths, GemmAccumulateAddsIntoC) {
  Generator g(11);
  struct Case {
    int64_t m, n, k;
    bool ta, tb;
  };
  for (DType t : {DType::f32, DType::bf16})
    for (Case cs : {Case{37, 24, 19, true, false}, Case{64, 48, 32, false, true},
                    Case{5, 70, 130, true, true}, Case{33, 17, 8, false, false}}) {
      // Operands rounded to t first, so the reference sees exactly what the GEMM sees.
      Tensor a = Tensor::randn(Shape{cs.m * cs.k}, g).to(t),
             b = Tensor::randn(Shape{cs.k * cs.n}, g).to(t);
      Tensor c0 = Tensor::randn(Shape{cs.m * cs.n}, g);
      Tensor c = c0.clone();
      cpu::GemmArgs args;
      args.m = cs.m, args.n = cs.n, args.k = cs.k, args.trans_a = cs.ta, args.trans_b = cs.tb;
      args.ab_type = t, args.a = a.raw_data(), args.b = b.raw_data(), args.c = c.data<float>();
      args.accumulate = true;
      cpu::gemm(args);
      std::vector<double> ref =
          reference_gemm(a.to_vector(), b.to_vector(), cs.m, cs.n, cs.k, cs.ta, cs.tb);
      std::vector<float> got = c.to_vector(), before = c0.to_vector();
      double worst = 0;
      for (size_t i = 0; i < got.size(); ++i)
        worst = std::max(worst, std::fabs(double(got[i]) - (ref[i] + double(before[i]))));
      // f32 accumulation over k terms of size ~1: a few ulps times sqrt(k).
      EXPECT_LT(worst, 1e-4 * std::sqrt(double(cs.k)) + 1e-5)
          << dtype_name(t) << " " << cs.m << "x" << cs.n << "x" << cs.k;
    }
}

// Gradients of a linear layer and an embedding, computed once into fresh .grad tensors and once
// into FlatParameters' buffers that already hold a gradient: the second must be the first plus
// what the buffer held.
TEST(FastPaths, WeightGradientsAddIntoExistingBuffers) {
  for (DType compute : {DType::f32, DType::bf16}) {
    Generator g(5);
    Tensor w = randn_param(Shape{24, 16}, g, 0.3f), b = randn_param(Shape{24}, g, 0.3f);
    Tensor w2 = randn_param(Shape{16, 24}, g, 0.3f), table = randn_param(Shape{30, 16}, g, 0.3f);
    Tensor ids = Tensor::from_ints({3, 7, 3, 29, 0, 7}, Shape{2, 3});
    Tensor mix = Tensor::randn(Shape{2, 3, 24}, g);
    auto loss = [&] {
      AutocastGuard ac(compute);
      Tensor x = ops::embedding(table, ids);
      // The table is used twice, as GPT-2's tied head does: lookup and output projection.
      Tensor y = ops::linear(ops::linear(ops::gelu(ops::linear(x, w, b)), w2), table);
      return ops::add(ops::sum(ops::mul(ops::linear(x, w, b), mix)), ops::sum(ops::mul(y, y)));
    };
    loss().backward();
    std::vector<std::vector<float>> fresh;
    for (const Tensor& p : {w, b, w2, table}) fresh.push_back(p.grad().to_vector());

    FlatParameters flat({w, b, w2, table});
    Tensor held = Tensor::randn(Shape{flat.numel()}, g);
    // Padding must stay zero; give every parameter's segment a random starting gradient.
    for (const ParamSegment& s : flat.segments())
      std::copy_n(held.data<float>() + s.offset, s.numel, flat.grad_data() + s.offset);
    loss().backward();
    for (size_t i = 0; i < 4; ++i) {
      const ParamSegment& s = flat.segments()[i];
      // Still the flat buffer's view: the ops wrote through it rather than replacing it.
      EXPECT_EQ(flat.param(i).grad().raw_data(), static_cast<void*>(flat.grad_data() + s.offset));
      std::vector<float> got = flat.param(i).grad().to_vector();
      for (int64_t j = 0; j < s.numel; ++j) {
        const float want = fresh[i][size_t(j)] + held.data<float>()[s.offset + j];
        ASSERT_NEAR(got[size_t(j)], want, 1e-5f * (1.f + std::fabs(want)))
            << dtype_name(compute) << " parameter " << i << " element " << j;
      }
    }
  }
}

// A gradient the add op hands to both of its inputs is adopted by both without a copy; adding a
// later contribution into one of them must not change the other.
TEST(FastPaths, SharedNodeGradientsAreNotModifiedInPlace) {
  Generator g(3);
  check_gradients(
      [](auto& in) {
        Tensor h = ops::scale(in[0], 2.f);
        Tensor r = ops::add(h, ops::gelu(h));  // dL/dr reaches h twice
        Tensor s = ops::add(r, ops::mul(r, in[1]));
        return ops::add(s, ops::gelu(r));
      },
      {randn_param(Shape{3, 5}, g), randn_param(Shape{5}, g)});
}

// linear_gelu is gelu(linear(...)): gradients by finite differences; and inside a model (its
// output feeding the next linear, as GPT-2's MLP) the same output and gradients as the two ops it
// fuses, in f32 and under bf16 autocast (where its output is already the next GEMM's bf16 input).
TEST(FastPaths, LinearGeluMatchesTheUnfusedOps) {
  Generator g(21);
  check_gradients([](auto& in) { return ops::linear_gelu(in[0], in[1], in[2]); },
                  {randn_param(Shape{2, 5, 7}, g), randn_param(Shape{6, 7}, g, 0.5f),
                   randn_param(Shape{6}, g)});
  for (DType compute : {DType::f32, DType::bf16}) {
    Tensor x = randn_param(Shape{3, 70, 24}, g), w = randn_param(Shape{40, 24}, g, 0.3f);
    Tensor b = randn_param(Shape{40}, g), w2 = randn_param(Shape{16, 40}, g, 0.3f);
    Tensor mix = Tensor::randn(Shape{3, 70, 16}, g);
    std::vector<std::vector<float>> grads[2];
    Tensor outs[2];
    for (int fused = 0; fused < 2; ++fused) {
      for (Tensor* p : {&x, &w, &b, &w2}) p->zero_grad();
      AutocastGuard ac(compute);
      Tensor h = fused ? ops::linear_gelu(x, w, b) : ops::gelu(ops::linear(x, w, b));
      EXPECT_EQ(h.dtype(), fused ? compute : DType::f32);
      outs[fused] = ops::linear(h, w2);
      ops::sum(ops::mul(outs[fused], mix)).backward();
      for (Tensor* p : {&x, &w, &b, &w2}) grads[fused].push_back(p->grad().to_vector());
    }
    EXPECT_EQ(outs[1].to_vector(), outs[0].to_vector()) << dtype_name(compute);
    for (size_t i = 0; i < 4; ++i) {
      const std::vector<float>&a = grads[0][i], &f = grads[1][i];
      double worst = 0, norm = 0;
      for (size_t j = 0; j < a.size(); ++j) {
        worst = std::max(worst, double(std::fabs(a[j] - f[j])));
        norm = std::max(norm, double(std::fabs(a[j])));
      }
      // The same arithmetic; only the bias gradient's summation order differs.
      EXPECT_LE(worst, 1e-6 * norm) << dtype_name(compute) << " input " << i;
    }
  }
}

// layer_norm with a bf16 output: the f32 result rounded once; feeding a linear under bf16
// autocast (as GPT-2's blocks do) it gives exactly the outputs and gradients of the f32 output.
TEST(FastPaths, LayerNormWritesTheGemmDtype) {
  Generator g(8);
  Tensor x = randn_param(Shape{4, 33, 48}, g), w = randn_param(Shape{48}, g);
  Tensor b = randn_param(Shape{48}, g), w2 = randn_param(Shape{20, 48}, g, 0.3f);
  Tensor mix = Tensor::randn(Shape{4, 33, 20}, g);
  Tensor y32 = ops::layer_norm(x, w, b, 1e-5f);
  Tensor y16 = ops::layer_norm(x, w, b, 1e-5f, DType::bf16);
  EXPECT_EQ(y16.dtype(), DType::bf16);
  EXPECT_EQ(y16.to(DType::f32).to_vector(), y32.to(DType::bf16).to(DType::f32).to_vector());
  std::vector<std::vector<float>> grads[2];
  std::vector<float> outs[2];
  for (int k = 0; k < 2; ++k) {
    for (Tensor* p : {&x, &w, &b, &w2}) p->zero_grad();
    AutocastGuard ac(DType::bf16);
    Tensor y = ops::linear(ops::layer_norm(x, w, b, 1e-5f, k ? DType::bf16 : DType::f32), w2);
    outs[k] = y.to_vector();
    ops::sum(ops::mul(y, mix)).backward();
    for (Tensor* p : {&x, &w, &b, &w2}) grads[k].push_back(p->grad().to_vector());
  }
  EXPECT_EQ(outs[0], outs[1]);
  for (size_t i = 0; i < 4; ++i) EXPECT_EQ(grads[0][i], grads[1][i]) << "input " << i;
  expect_error([&] { ops::layer_norm(y16, w, b, 1e-5f, DType::f32); },
               {"layer_norm", "bf16", "f32", "expected"});
}

// Bias gradients over many rows take the blocked reduction: compare with an f64 column sum.
TEST(FastPaths, BiasGradientOverManyRows) {
  Generator g(9);
  Tensor x = Tensor::randn(Shape{300, 16}, g), w = randn_param(Shape{200, 16}, g);
  Tensor b = randn_param(Shape{200}, g), mix = Tensor::randn(Shape{300, 200}, g);
  ops::sum(ops::mul(ops::linear(x, w, b), mix)).backward();
  std::vector<float> db = b.grad().to_vector(), m = mix.to_vector();
  for (int64_t c = 0; c < 200; ++c) {
    double s = 0;
    for (int64_t r = 0; r < 300; ++r) s += m[size_t(r * 200 + c)];
    EXPECT_NEAR(db[size_t(c)], s, 1e-4 * (1 + std::fabs(s))) << "column " << c;
  }
}

// cross_entropy with a bf16 logits gradient: the same loss, the f32 gradient rounded once to
// bf16 (passed through an op in between), and under bf16 autocast the GPT-2 head gets exactly the
// weight gradient it computes from the f32 one (its GEMM rounds that to bf16 itself).
TEST(FastPaths, CrossEntropyBf16GradientFeedsTheHeadGemm) {
  Generator g(13);
  Tensor x = randn_param(Shape{2, 9, 16}, g), w = randn_param(Shape{37, 16}, g, 0.5f);
  Tensor targets = Tensor::from_ints({0, 5, 36, 2, -1, 7, 7, 1, 30, 3, 3, 12, 0, 0, 9, 36, 4, 8},
                                     Shape{2, 9});
  Tensor logits = ops::linear(x, w).detach().set_requires_grad(true);
  Tensor l32 = ops::cross_entropy(logits, targets, -1, DType::f32);
  l32.backward();
  Tensor g32 = logits.grad();
  logits.zero_grad();
  Tensor probe = ops::scale(logits, 1.f);
  Tensor l16 = ops::cross_entropy(probe, targets, -1, DType::bf16);
  EXPECT_EQ(l16.item(), l32.item());
  l16.backward();
  EXPECT_EQ(logits.grad().to_vector(), g32.to(DType::bf16).to(DType::f32).to_vector());

  std::vector<float> wgrad[2];
  for (int k = 0; k < 2; ++k) {
    w.zero_grad();
    AutocastGuard ac(DType::bf16);
    ops::cross_entropy(ops::linear(x, w), targets, -1, k ? DType::bf16 : DType::f32).backward();
    wgrad[k] = w.grad().to_vector();
  }
  EXPECT_EQ(wgrad[0], wgrad[1]);
  expect_error([&] { ops::cross_entropy(logits, targets, -1, DType::f16); },
               {"cross_entropy", "f16", "expected f32 or bf16"});
}
