// SwiGLU: against silu(gate) * up in double and the unfused ops, gradients, the dtypes under
// autocast, and error messages.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "gradcheck.h"
#include "ops/autocast.h"
#include "ops/ops.h"

using namespace tessera;
using namespace tessera::testing;

namespace {
Generator gen(13);

// x [rows, 2F] split into its gate and up halves [rows, F].
std::pair<Tensor, Tensor> split_gate_up(const Tensor& x) {
  const int64_t F = x.dim(-1) / 2, rows = x.numel() / (2 * F);
  const std::vector<float> v = x.to_vector();
  std::vector<float> gate, up;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < 2 * F; ++j) (j < F ? gate : up).push_back(v[size_t(r * 2 * F + j)]);
  std::vector<int64_t> dims = x.shape().vec();
  dims.back() = F;
  return {Tensor::from_vector(gate, Shape(dims)), Tensor::from_vector(up, Shape(dims))};
}

}  // namespace

TEST(OpsSwiglu, MatchesSiluOfGateTimesUp) {
  const Tensor x = Tensor::randn(Shape{3, 5, 2 * 37}, gen, 0.f, 3.f);
  const Tensor y = ops::swiglu(x);
  ASSERT_EQ(y.shape(), (Shape{3, 5, 37}));
  EXPECT_EQ(y.dtype(), DType::f32);
  const auto [gate, up] = split_gate_up(x);
  const std::vector<float> g = gate.to_vector(), u = up.to_vector(), got = y.to_vector();
  for (size_t i = 0; i < g.size(); ++i) {
    const double a = g[i], want = a / (1 + std::exp(-a)) * double(u[i]);
    EXPECT_NEAR(got[i], want, 1e-6 * (1 + std::fabs(want))) << i;
  }
  // The same f32 operations as the unfused ops: the same bits.
  EXPECT_EQ(got, ops::mul(ops::silu(gate), up).to_vector());
}

TEST(OpsSwiglu, GradientsMatchFiniteDifferences) {
  for (const Shape& s : {Shape{3, 5, 2 * 7}, Shape{4, 2}, Shape{2, 2 * 40}}) {
    SCOPED_TRACE(s.str());
    check_gradients([](auto& in) { return ops::swiglu(in[0]); }, {Tensor::randn(s, gen, 0.f, 2.f)});
  }
}

// Under bf16 autocast an f32 input (a linear layer's output) gives a bf16 output, the down
// projection's operand: the f32 result rounded once. The gradient stays f32.
TEST(OpsSwiglu, AutocastOutputIsTheGemmOperandDtype) {
  const Tensor x = Tensor::randn(Shape{6, 2 * 24}, gen);
  const Tensor y32 = ops::swiglu(x);
  for (DType t : {DType::bf16, DType::f16}) {
    SCOPED_TRACE(dtype_name(t));
    AutocastGuard guard(t);
    Tensor leaf = x.clone().set_requires_grad();
    const Tensor y = ops::swiglu(leaf);
    EXPECT_EQ(y.dtype(), t);
    EXPECT_EQ(y.to_vector(), y32.to(t).to_vector());
    ops::sum(ops::cast(y, DType::f32)).backward();
    ASSERT_TRUE(leaf.grad().defined());
    EXPECT_EQ(leaf.grad().dtype(), DType::f32);
  }
}

TEST(OpsSwiglu, SixteenBitInputsKeepTheirDtype) {
  const Tensor x = Tensor::randn(Shape{4, 9, 2 * 32}, gen);
  for (DType t : {DType::bf16, DType::f16}) {
    SCOPED_TRACE(dtype_name(t));
    EXPECT_EQ(ops::swiglu(x.to(t)).dtype(), t);
    EXPECT_LT(low_precision_error([](auto& in) { return ops::swiglu(in[0]); }, {x}, t), 1e-2);
  }
}

TEST(OpsSwiglu, BadCallsNameOpShapesAndExpectation) {
  expect_error(
      [] {
        ops::swiglu(Tensor::randn(Shape{2, 5}, gen));
      },
      {"swiglu", "f32[2, 5]", "(gate | up)", "even"});
  expect_error(
      [] {
        ops::swiglu(Tensor::from_ints({1, 2}, Shape{2}));
      },
      {"swiglu", "i32[2]", "float dtype"});
}
