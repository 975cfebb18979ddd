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
