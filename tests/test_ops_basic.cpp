// Gradients and error messages of the shape, element-wise, reduction and GEMM ops.
#include <gtest/gtest.h>

#include "gradcheck.h"
#include "ops/autocast.h"
#include "ops/ops.h"

using namespace tessera;
using namespace tessera::testing;

namespace {
Generator gen(42);
Tensor rn(Shape s) { return Tensor::randn(s, gen); }

}  // namespace

TEST(OpsBasic, AddMulGradients) {
  for (Shape s : {Shape{1}, Shape{7}, Shape{3, 5}, Shape{2, 1, 3}}) {
    check_gradients([](auto& in) { return ops::add(in[0], in[1]); }, {rn(s), rn(s)});
    check_gradients([](auto& in) { return ops::mul(in[0], in[1]); }, {rn(s), rn(s)});
  }
}

TEST(OpsBasic, BroadcastAddMulGradients) {
  check_gradients([](auto& in) { return ops::add(in[0], in[1]); }, {rn({4, 3, 5}), rn({3, 5})});
  check_gradients([](auto& in) { return ops::mul(in[0], in[1]); }, {rn({4, 3, 5}), rn({5})});
  check_gradients([](auto& in) { return ops::add(in[0], in[1]); }, {rn({1, 5}), rn({5})});
}

TEST(OpsBasic, ScaleSumMeanReshapeTransposeCast) {
  check_gradients([](auto& in) { return ops::scale(in[0], -1.7f); }, {rn({3, 4})});
  check_gradients([](auto& in) { return ops::sum(in[0]); }, {rn({3, 4})});
  check_gradients([](auto& in) { return ops::mean(in[0]); }, {rn({1, 9})});
  check_gradients([](auto& in) { return ops::reshape(in[0], Shape{6, 2}); }, {rn({3, 4})});
  check_gradients([](auto& in) { return ops::transpose(in[0], 0, 2); }, {rn({2, 3, 4})});
}

TEST(OpsBasic, CastPassesGradientsBackInTheSourceType) {
  // Finite differences are meaningless through a rounding step, so check the rule directly:
  // d cast(x)/dx = identity, returned in x's dtype.
  Tensor x = rn({5}).set_requires_grad();
  Tensor w = rn({5});
  ops::sum(ops::mul(ops::cast(x, DType::bf16), w.to(DType::bf16))).backward();
  EXPECT_EQ(x.grad().dtype(), DType::f32);
  EXPECT_LT(relative_error(x.grad(), w), 1e-2);
  EXPECT_THROW(ops::cast(x, DType::i32), Error);
}

TEST(OpsBasic, MatmulGradients) {
  check_gradients([](auto& in) { return ops::matmul(in[0], in[1]); }, {rn({3, 4}), rn({4, 5})});
  check_gradients([](auto& in) { return ops::matmul(in[0], in[1]); },
                  {rn({2, 3, 4}), rn({4, 1})});  // [.., m, k] by [k, n]
  check_gradients([](auto& in) { return ops::matmul(in[0], in[1]); },
                  {rn({2, 1, 7}), rn({2, 7, 3})});  // batched
}

TEST(OpsBasic, LinearGradients) {
  for (auto [m, in, out] : {std::tuple{1, 1, 1}, {4, 3, 5}, {13, 17, 11}}) {
    check_gradients([](auto& v) { return ops::linear(v[0], v[1], v[2]); },
                    {rn({m, in}), rn({out, in}), rn({out})});
  }
  check_gradients([](auto& v) { return ops::linear(v[0], v[1]); }, {rn({2, 3, 4}), rn({6, 4})});
}

TEST(OpsBasic, LinearBF16TracksF32) {
  auto f = [](const std::vector<Tensor>& v) {
    AutocastGuard bf(DType::bf16);
    return ops::linear(v[0], v[1], v[2]);
  };
  std::vector<Tensor> in{rn({64, 96}), rn({80, 96}), rn({80})};
  std::vector<Tensor> in32;
  for (auto& t : in) in32.push_back(t.clone().set_requires_grad());
  std::vector<Tensor> inbf;
  for (auto& t : in) inbf.push_back(t.clone().set_requires_grad());
  Tensor r = rn({64, 80});
  Tensor y32 = ops::linear(in32[0], in32[1], in32[2]);
  ops::sum(ops::mul(y32, r)).backward();
  Tensor ybf = f(inbf);
  ops::sum(ops::mul(ybf, r)).backward();
  EXPECT_LT(relative_error(ybf, y32), 1e-2);
  for (int i = 0; i < 3; ++i) EXPECT_LT(relative_error(inbf[i].grad(), in32[i].grad()), 1e-2) << i;
  EXPECT_GT(relative_error(ybf, y32), 0.0);  // the bf16 path really ran in bf16
}

TEST(OpsBasic, MatmulBF16TracksF32) {
  double e = low_precision_error([](auto& v) { return ops::matmul(v[0], v[1]); },
                                 {rn({33, 65}), rn({65, 17})}, DType::bf16);
  EXPECT_LT(e, 1e-2);
  EXPECT_GT(e, 0.0);
}

TEST(OpsBasic, ElementwiseLowPrecisionTracksF32) {
  for (DType t : {DType::bf16, DType::f16}) {
    EXPECT_LT(low_precision_error([](auto& v) { return ops::mul(v[0], v[1]); },
                                  {rn({8, 9}), rn({9})}, t),
              1e-2);
    EXPECT_LT(low_precision_error([](auto& v) { return ops::add(v[0], v[1]); },
                                  {rn({8, 9}), rn({8, 9})}, t),
              1e-2);
  }
}

TEST(OpsBasic, BadCallsNameOpShapesAndExpectation) {
  expect_error([] { ops::add(rn({2, 3}), rn({4})); }, {"add", "f32[4]", "f32[2, 3]", "expected"});
  expect_error([] { ops::matmul(rn({2, 3}), rn({4, 5})); },
               {"matmul", "f32[2, 3]", "f32[4, 5]"});
  expect_error([] { ops::linear(rn({2, 3}), rn({5, 4}), rn({5})); },
               {"linear", "f32[2, 3]", "f32[5, 4]", "expected input [..., 4]"});
  expect_error([] { ops::add(rn({2}), Tensor::zeros(Shape{2}, DType::i32)); },
               {"add", "i32[2]", "expected a float dtype"});
  expect_error([] { ops::add(rn({2}), rn({2}).to(DType::bf16)); }, {"add", "dtypes differ"});
  expect_error([] { ops::linear(rn({2, 4}), rn({5, 4}), rn({4})); },
               {"linear", "bias", "f32[4]", "expected [5]"});
  expect_error([] { ops::reshape(rn({2, 3}), Shape{5}); }, {"reshape", "f32[2, 3]", "[5]"});
}
