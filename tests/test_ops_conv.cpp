// conv2d and max_pool2d: gradients, naive references, bf16 autocast and error messages.
#include <gtest/gtest.h>

#include <cmath>
#include <numeric>
#include <string>
#include <vector>

#include "autograd/grad_mode.h"
#include "gradcheck.h"
#include "ops/autocast.h"
#include "ops/ops.h"

using namespace tessera;
using namespace tessera::testing;

namespace {
Generator gen(11);
Tensor rn(Shape s) {
  return Tensor::randn(s, gen);
}

struct ConvCase {
  int64_t n, cin, h, w, cout, kh, kw;
  int stride, pad;
};

std::string describe(const ConvCase& c) {
  return "N=" + std::to_string(c.n) + " Cin=" + std::to_string(c.cin) + " " + std::to_string(c.h) +
         "x" + std::to_string(c.w) + " Cout=" + std::to_string(c.cout) +
         " k=" + std::to_string(c.kh) + "x" + std::to_string(c.kw) +
         " stride=" + std::to_string(c.stride) + " pad=" + std::to_string(c.pad);
}

const std::vector<ConvCase> kConvCases = {
    {1, 1, 5, 5, 2, 3, 3, 1, 0},  // Cin = 1
    {2, 3, 7, 6, 4, 3, 3, 2, 1},  // stride 2, padding 1, odd H
    {1, 2, 5, 7, 3, 2, 3, 2, 0},  // non-square kernel, stride 2, no padding
    {2, 1, 4, 4, 1, 1, 1, 1, 1},  // 1x1 kernel with padding: border outputs are bias only
    {1, 3, 3, 3, 2, 3, 3, 1, 1},  // kernel as large as the input
    {2, 2, 9, 5, 3, 3, 2, 3, 2},  // stride 3 with a 2-pixel pad
};

// Direct convolution in double: the definition, one output element at a time.
std::vector<double> reference_conv(const ConvCase& c, const std::vector<float>& x,
                                   const std::vector<float>& w, const std::vector<float>& b) {
  const int64_t ho = (c.h + 2 * c.pad - c.kh) / c.stride + 1;
  const int64_t wo = (c.w + 2 * c.pad - c.kw) / c.stride + 1;
  std::vector<double> y(size_t(c.n * c.cout * ho * wo));
  for (int64_t n = 0; n < c.n; ++n)
    for (int64_t o = 0; o < c.cout; ++o)
      for (int64_t i = 0; i < ho; ++i)
        for (int64_t j = 0; j < wo; ++j) {
          double s = b.empty() ? 0.0 : double(b[size_t(o)]);
          for (int64_t ci = 0; ci < c.cin; ++ci)
            for (int64_t ki = 0; ki < c.kh; ++ki)
              for (int64_t kj = 0; kj < c.kw; ++kj) {
                const int64_t ih = i * c.stride - c.pad + ki, iw = j * c.stride - c.pad + kj;
                if (ih < 0 || ih >= c.h || iw < 0 || iw >= c.w) continue;
                s += double(x[size_t(((n * c.cin + ci) * c.h + ih) * c.w + iw)]) *
                     double(w[size_t(((o * c.cin + ci) * c.kh + ki) * c.kw + kj)]);
              }
          y[size_t(((n * c.cout + o) * ho + i) * wo + j)] = s;
        }
  return y;
}

// x [n, c, h, w] holding a random permutation of 0, 0.1, 0.2, ...: every value distinct and 0.1
// apart, so a finite-difference step of 0.01 never changes which element is a window's max.
Tensor separated(Shape s) {
  std::vector<float> v(size_t(s.numel()));
  std::iota(v.begin(), v.end(), 0.f);
  for (size_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[gen.next_u64() % i]);
  for (float& e : v) e *= 0.1f;
  return Tensor::from_vector(v, s);
}

std::vector<float> reference_pool(const std::vector<float>& x, int64_t n, int64_t c, int64_t h,
                                  int64_t w, int k, int s) {
  const int64_t ho = (h - k) / s + 1, wo = (w - k) / s + 1;
  std::vector<float> y;
  for (int64_t p = 0; p < n * c; ++p)
    for (int64_t i = 0; i < ho; ++i)
      for (int64_t j = 0; j < wo; ++j) {
        float m = -INFINITY;
        for (int a = 0; a < k; ++a)
          for (int b = 0; b < k; ++b)
            m = std::max(m, x[size_t((p * h + i * s + a) * w + j * s + b)]);
        y.push_back(m);
      }
  return y;
}
}  // namespace

TEST(OpsConv, GradientsMatchFiniteDifferences) {
  for (const ConvCase& c : kConvCases) {
    SCOPED_TRACE(describe(c));
    const int s = c.stride, p = c.pad;
    check_gradients([s, p](auto& v) { return ops::conv2d(v[0], v[1], v[2], s, p); },
                    {rn({c.n, c.cin, c.h, c.w}), rn({c.cout, c.cin, c.kh, c.kw}), rn({c.cout})});
  }
  // Without a bias.
  check_gradients([](auto& v) { return ops::conv2d(v[0], v[1], Tensor(), 2, 1); },
                  {rn({2, 2, 5, 5}), rn({3, 2, 3, 3})});
}

TEST(OpsConv, PartialGradientsMatchFullOnes) {
  // Images usually do not require grad: the backward then skips dx but must give the same dw, db.
  Tensor x = rn({2, 3, 6, 5}), w = rn({4, 3, 3, 3}), b = rn({4}), r = rn({2, 4, 3, 3});
  Tensor xa = x.clone().set_requires_grad(), wa = w.clone().set_requires_grad();
  Tensor ba = b.clone().set_requires_grad();
  ops::sum(ops::mul(ops::conv2d(xa, wa, ba, 2, 1), r)).backward();
  Tensor wb = w.clone().set_requires_grad(), bb = b.clone().set_requires_grad();
  ops::sum(ops::mul(ops::conv2d(x, wb, bb, 2, 1), r)).backward();
  EXPECT_EQ(wb.grad().to_vector(), wa.grad().to_vector());
  EXPECT_EQ(bb.grad().to_vector(), ba.grad().to_vector());
  Tensor xc = x.clone().set_requires_grad();
  ops::sum(ops::mul(ops::conv2d(xc, w, b, 2, 1), r)).backward();
  EXPECT_EQ(xc.grad().to_vector(), xa.grad().to_vector());
}

TEST(OpsConv, ForwardMatchesDirectConvolution) {
  for (const ConvCase& c : kConvCases) {
    SCOPED_TRACE(describe(c));
    Tensor x = rn({c.n, c.cin, c.h, c.w}), w = rn({c.cout, c.cin, c.kh, c.kw}), b = rn({c.cout});
    for (bool with_bias : {true, false}) {
      Tensor y = ops::conv2d(x, w, with_bias ? b : Tensor(), c.stride, c.pad);
      std::vector<double> want = reference_conv(c, x.to_vector(), w.to_vector(),
                                                with_bias ? b.to_vector() : std::vector<float>{});
      std::vector<float> got = y.to_vector();
      ASSERT_EQ(got.size(), want.size());
      EXPECT_EQ(y.dim(2), (c.h + 2 * c.pad - c.kh) / c.stride + 1);
      EXPECT_EQ(y.dim(3), (c.w + 2 * c.pad - c.kw) / c.stride + 1);
      for (size_t i = 0; i < want.size(); ++i)
        ASSERT_NEAR(got[i], want[i], 1e-5 * (1 + std::fabs(want[i]))) << "output " << i;
    }
  }
}

TEST(OpsConv, BF16AutocastTracksF32) {
  auto f = [](const std::vector<Tensor>& v) {
    AutocastGuard bf(DType::bf16);
    return ops::conv2d(v[0], v[1], v[2], 1, 1);
  };
  std::vector<Tensor> in{rn({2, 8, 12, 12}), rn({16, 8, 3, 3}), rn({16})};
  std::vector<Tensor> a, b;
  for (auto& t : in) a.push_back(t.clone().set_requires_grad());
  for (auto& t : in) b.push_back(t.clone().set_requires_grad());
  Tensor r = rn({2, 16, 12, 12});
  Tensor y32 = ops::conv2d(a[0], a[1], a[2], 1, 1);
  ops::sum(ops::mul(y32, r)).backward();
  Tensor ybf = f(b);
  ops::sum(ops::mul(ybf, r)).backward();
  EXPECT_LT(relative_error(ybf, y32), 1e-2);
  EXPECT_GT(relative_error(ybf, y32), 0.0);  // the bf16 path really ran in bf16
  for (int i = 0; i < 3; ++i) EXPECT_LT(relative_error(b[i].grad(), a[i].grad()), 1e-2) << i;
}

TEST(OpsConv, MaxPoolGradientsMatchFiniteDifferences) {
  struct Case {
    Shape s;
    int k, stride;
  };
  for (const Case& c :
       {Case{{1, 1, 4, 4}, 2, 2}, Case{{2, 3, 5, 7}, 3, 2}, Case{{1, 2, 5, 5}, 2, 1},
        Case{{2, 1, 3, 3}, 1, 1}, Case{{1, 1, 1, 6}, 1, 2}}) {
    SCOPED_TRACE(c.s.str() + " kernel " + std::to_string(c.k) + " stride " +
                 std::to_string(c.stride));
    const int k = c.k, st = c.stride;
    check_gradients([k, st](auto& v) { return ops::max_pool2d(v[0], k, st); }, {separated(c.s)});
  }
}

TEST(OpsConv, MaxPoolForwardMatchesReference) {
  for (auto [n, ch, h, w, k, s] :
       {std::tuple{2, 3, 5, 7, 3, 2}, {1, 2, 8, 8, 2, 2}, {1, 1, 6, 5, 2, 1}, {3, 1, 4, 9, 4, 3}}) {
    Tensor x = rn({n, ch, h, w});
    Tensor y = ops::max_pool2d(x, k, s);
    EXPECT_EQ(y.shape(), (Shape{n, ch, (h - k) / s + 1, (w - k) / s + 1}));
    EXPECT_EQ(y.to_vector(), reference_pool(x.to_vector(), n, ch, h, w, k, s));
  }
}

TEST(OpsConv, MaxPoolBackwardRoutesToTheMaximum) {
  // Overlapping windows (stride 1) that share a maximum send it both gradients.
  Tensor x =
      Tensor::from_vector({0, 1, 0, 0, 9, 0, 0, 1, 0}, Shape{1, 1, 3, 3}).set_requires_grad();
  ops::max_pool2d(x, 2, 1).backward(Tensor::from_vector({1, 2, 3, 4}, Shape{1, 1, 2, 2}));
  EXPECT_EQ(x.grad().to_vector(), (std::vector<float>{0, 0, 0, 0, 10, 0, 0, 0, 0}));
}

TEST(OpsConv, MaxPoolLowPrecisionAndNaN) {
  Tensor x = rn({2, 3, 6, 6});
  Tensor xb = x.to(DType::bf16);
  Tensor yb = ops::max_pool2d(xb, 2, 2);
  EXPECT_EQ(yb.dtype(), DType::bf16);
  EXPECT_EQ(yb.to_vector(), ops::max_pool2d(xb.to(DType::f32), 2, 2).to_vector());
  EXPECT_LT(low_precision_error([](auto& v) { return ops::max_pool2d(v[0], 2, 2); },
                                {separated({1, 2, 4, 6})}, DType::bf16),
            1e-2);
  std::vector<float> v(16, 1.f);
  v[5] = NAN;
  std::vector<float> y =
      ops::max_pool2d(Tensor::from_vector(v, Shape{1, 1, 4, 4}), 2, 2).to_vector();
  EXPECT_TRUE(std::isnan(y[0]));
  EXPECT_EQ(y[1], 1.f);
}

TEST(OpsConv, NoGradModeSkipsTheTape) {
  Tensor x = rn({1, 1, 4, 4}).set_requires_grad();
  Tensor w = rn({1, 1, 3, 3}).set_requires_grad();
  NoGradGuard ng;
  EXPECT_FALSE(ops::conv2d(x, w, Tensor()).requires_grad());
  EXPECT_FALSE(ops::max_pool2d(x, 2, 2).requires_grad());
}

TEST(OpsConv, BadCallsNameOpShapesAndExpectation) {
  expect_error(
      [] {
        ops::conv2d(rn({2, 3, 8, 8}), rn({4, 2, 3, 3}), Tensor());
      },
      {"conv2d", "f32[2, 3, 8, 8]", "f32[4, 2, 3, 3]", "expected x [N, 2, H, W]"});
  expect_error(
      [] {
        ops::conv2d(rn({3, 8, 8}), rn({4, 3, 3, 3}), Tensor());
      },
      {"conv2d", "f32[3, 8, 8]", "expected 4 dims"});
  expect_error(
      [] {
        ops::conv2d(rn({1, 3, 8, 8}), rn({4, 3, 3}), Tensor());
      },
      {"conv2d", "weight", "f32[4, 3, 3]", "expected 4 dims"});
  expect_error(
      [] {
        ops::conv2d(rn({1, 3, 8, 8}), rn({4, 3, 3, 3}), rn({3}));
      },
      {"conv2d", "bias", "f32[3]", "expected [4]"});
  expect_error(
      [] {
        ops::conv2d(rn({1, 1, 2, 2}), rn({1, 1, 5, 5}), Tensor());
      },
      {"conv2d", "f32[1, 1, 5, 5]", "f32[1, 1, 2, 2]", "padded input 2x2"});
  expect_error(
      [] {
        ops::conv2d(rn({1, 1, 4, 4}), rn({1, 1, 3, 3}), Tensor(), 0);
      },
      {"conv2d", "stride 0", "expected stride >= 1"});
  expect_error(
      [] {
        ops::conv2d(rn({1, 1, 4, 4}).to(DType::bf16), rn({1, 1, 3, 3}), Tensor());
      },
      {"conv2d", "bf16[1, 1, 4, 4]", "expected dtype f32"});
  expect_error(
      [] {
        ops::max_pool2d(rn({1, 1, 3, 3}), 4, 1);
      },
      {"max_pool2d", "f32[1, 1, 3, 3]", "kernel 4", "expected H and W >= kernel"});
  expect_error(
      [] {
        ops::max_pool2d(rn({1, 3, 3}), 2, 2);
      },
      {"max_pool2d", "f32[1, 3, 3]", "expected 4 dims"});
  expect_error(
      [] {
        ops::max_pool2d(rn({1, 1, 3, 3}), 2, 0);
      },
      {"max_pool2d", "stride 0", "expected kernel >= 1 and stride >= 1"});
}
