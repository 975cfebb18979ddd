// The tape: accumulation, no_grad, hooks, order.
#include <gtest/gtest.h>

#include "autograd/grad_mode.h"
#include "ops/ops.h"

using namespace tessera;

TEST(Autograd, AccumulatesAcrossUsesAndCalls) {
  Tensor x = Tensor::from_vector({1, 2, 3}, Shape{3}).set_requires_grad();
  // y = sum(x*x + x) -> dy/dx = 2x + 1
  ops::sum(ops::add(ops::mul(x, x), x)).backward();
  EXPECT_EQ(x.grad().to_vector(), (std::vector<float>{3, 5, 7}));
  ops::sum(x).backward();  // accumulates into .grad
  EXPECT_EQ(x.grad().to_vector(), (std::vector<float>{4, 6, 8}));
  x.zero_grad();
  EXPECT_FALSE(x.grad().defined());
}

TEST(Autograd, NoGradRecordsNothing) {
  Tensor x = Tensor::from_vector({1, 2}, Shape{2}).set_requires_grad();
  NoGradGuard g;
  Tensor y = ops::scale(x, 2.f);
  EXPECT_FALSE(y.requires_grad());
  EXPECT_TRUE(y.is_leaf());
}

TEST(Autograd, GraphIsFreedAfterBackward) {
  Tensor x = Tensor::from_vector({1, 2}, Shape{2}).set_requires_grad();
  Tensor y = ops::sum(ops::scale(x, 3.f));
  y.backward();
  EXPECT_THROW(y.backward(), Error);  // second use of a released graph is refused
}

TEST(Autograd, GradReadyHookFiresOnceWhenFinal) {
  // w1 is used by the first layer, w2 by the second: backward finishes w2 first.
  Generator g(1);
  Tensor x = Tensor::randn(Shape{4, 3}, g);
  Tensor w1 = Tensor::randn(Shape{5, 3}, g).set_requires_grad();
  Tensor w2 = Tensor::randn(Shape{2, 5}, g).set_requires_grad();
  std::vector<std::string> order;
  std::vector<float> seen_w1;
  w1.on_grad_ready([&](Tensor& gr) { order.push_back("w1"), seen_w1 = gr.to_vector(); });
  w2.on_grad_ready([&](Tensor&) { order.push_back("w2"); });
  // w1 used twice: the hook must wait for both contributions.
  Tensor h = ops::add(ops::linear(x, w1), ops::linear(x, w1));
  ops::sum(ops::linear(h, w2)).backward();
  ASSERT_EQ(order, (std::vector<std::string>{"w2", "w1"}));
  EXPECT_EQ(seen_w1, w1.grad().to_vector());
}

TEST(Autograd, NonScalarRootNeedsGradient) {
  Tensor x = Tensor::from_vector({1, 2}, Shape{2}).set_requires_grad();
  Tensor y = ops::scale(x, 2.f);
  EXPECT_THROW(y.backward(), Error);
  y.backward(Tensor::from_vector({1, 10}, Shape{2}));
  EXPECT_EQ(x.grad().to_vector(), (std::vector<float>{2, 20}));
}
