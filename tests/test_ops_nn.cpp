// Activations, norms, softmax, cross-entropy, embedding and dropout: forward values against
// double-precision references computed here, gradients against finite differences
// (check_gradients with its f32 defaults: eps 1e-2, |a - n| <= 2e-3 + 1e-2 max(|a|, |n|)),
// bf16 / f16 against f32 (relative error < 1e-2), and the error messages of bad calls.
#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <limits>

#include "gradcheck.h"
#include "kernels/common/activation_math.h"
#include "ops/ops.h"

using namespace tessera;
using namespace tessera::testing;

namespace {
Generator gen(7);
Tensor rn(Shape s, float std = 1.f) {
  return Tensor::randn(s, gen, 0.f, std);
}

// Normal values pushed at least `margin` away from 0 (for finite differences near a kink).
Tensor rn_away(Shape s, float margin) {
  std::vector<float> v = rn(s).to_vector();
  for (float& x : v) x = x < 0 ? x - margin : x + margin;
  return Tensor::from_vector(v, s);
}

// |a - b| <= tol * max(1, |b|) elementwise.
void expect_close(const std::vector<float>& a, const std::vector<double>& b, double tol) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i)
    EXPECT_NEAR(a[i], b[i], tol * std::max(1.0, std::fabs(b[i]))) << "element " << i;
}

// Like low_precision_error, but casts only input 0 to `low`: the norms' weight and bias are
// f32 whatever the activations' dtype. Returns the worst relative error of the output and
// every gradient against the all-f32 run.
double low_precision_x_error(const OpFn& f, const std::vector<Tensor>& inputs, DType low) {
  auto run = [&](DType t, std::vector<Tensor>* grads) {
    std::vector<Tensor> in;
    for (size_t i = 0; i < inputs.size(); ++i) {
      Tensor c = inputs[i].detach().clone();
      if (i == 0) c = c.to(t);
      c.set_requires_grad(true);
      in.push_back(c);
    }
    Tensor out = f(in);
    EXPECT_EQ(out.dtype(), t);
    Generator g(99);
    Tensor r = Tensor::randn(out.shape(), g).to(out.dtype());
    ops::sum(ops::mul(out, r)).backward();
    for (const Tensor& x : in) grads->push_back(x.grad());
    return out;
  };
  std::vector<Tensor> g32, glow;
  Tensor o32 = run(DType::f32, &g32), olow = run(low, &glow);
  double worst = relative_error(olow, o32);
  for (size_t i = 0; i < g32.size(); ++i) worst = std::max(worst, relative_error(glow[i], g32[i]));
  return worst;
}

const std::vector<Shape> kShapes = {Shape{1}, Shape{3, 1}, Shape{2, 5, 7}, Shape{4, 33}};

double gelu_ref(double x) {
  return 0.5 * x * (1.0 + std::tanh(std::sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x)));
}
}  // namespace

// ---- per-element math ----

TEST(OpsNN, ExpF32TracksStdExp) {
  double worst = 0;
  for (double x = -87.0; x <= 88.0; x += 0.001) {
    const double ref = std::exp(double(float(x)));
    worst = std::max(worst, std::fabs(double(math::exp_f32(float(x))) - ref) / ref);
  }
  EXPECT_LT(worst, 3e-7);  // ~2.5 ulp of f32
  const float inf = std::numeric_limits<float>::infinity();
  EXPECT_EQ(math::exp_f32(0.f), 1.f);
  EXPECT_EQ(math::exp_f32(-inf), 0.f);
  EXPECT_EQ(math::exp_f32(-200.f), 0.f);
  EXPECT_EQ(math::exp_f32(inf), inf);
  EXPECT_EQ(math::exp_f32(200.f), inf);
  EXPECT_TRUE(std::isnan(math::exp_f32(std::numeric_limits<float>::quiet_NaN())));
}

// ---- activations ----

TEST(OpsNN, ActivationForwardMatchesReference) {
  std::vector<float> xs = {-30.f, -8.f, -3.f, -1.f, -0.2f, 0.f, 1e-4f, 0.5f, 2.f, 6.f, 30.f};
  Tensor x = Tensor::from_vector(xs, Shape{int64_t(xs.size())});
  std::vector<double> g, s, r;
  for (float v : xs) {
    g.push_back(gelu_ref(v));
    s.push_back(double(v) / (1.0 + std::exp(-double(v))));
    r.push_back(v > 0 ? v : 0.0);
  }
  expect_close(ops::gelu(x).to_vector(), g, 1e-6);
  expect_close(ops::silu(x).to_vector(), s, 1e-6);
  expect_close(ops::relu(x).to_vector(), r, 0.0);
  EXPECT_TRUE(std::isnan(ops::relu(Tensor::full(Shape{1}, NAN)).item()));  // NaN not hidden
}

TEST(OpsNN, ActivationGradients) {
  for (const Shape& s : kShapes) {
    SCOPED_TRACE(s.str());
    check_gradients([](auto& in) { return ops::gelu(in[0]); }, {rn(s, 2.f)});
    check_gradients([](auto& in) { return ops::silu(in[0]); }, {rn(s, 2.f)});
    // FD of relu straddles the kink within eps = 1e-2 of 0: keep |x| > 0.05.
    check_gradients([](auto& in) { return ops::relu(in[0]); }, {rn_away(s, 0.05f)});
  }
}

TEST(OpsNN, ActivationLowPrecisionTracksF32) {
  for (DType t : {DType::bf16, DType::f16}) {
    for (auto f : {ops::gelu, ops::silu, ops::relu}) {
      double e = low_precision_error([f](auto& v) { return f(v[0]); }, {rn({16, 45}, 2.f)}, t);
      EXPECT_LT(e, 1e-2) << dtype_name(t);
      EXPECT_GT(e, 0.0) << dtype_name(t);  // really rounded to the low type
    }
    EXPECT_EQ(ops::gelu(rn({3}).to(t)).dtype(), t);
  }
}

// ---- layer_norm, rms_norm ----

namespace {
// layer_norm and rms_norm of x [rows, C] in double loops.
std::vector<double> layer_norm_ref(const std::vector<float>& x, const std::vector<float>& w,
                                   const std::vector<float>& b, int64_t C, double eps) {
  std::vector<double> y;
  for (size_t r = 0; r < x.size() / size_t(C); ++r) {
    const float* xr = x.data() + r * size_t(C);
    double m = 0, v = 0;
    for (int64_t c = 0; c < C; ++c) m += xr[c];
    m /= double(C);
    for (int64_t c = 0; c < C; ++c) v += (xr[c] - m) * (xr[c] - m);
    const double rs = 1.0 / std::sqrt(v / double(C) + eps);
    for (int64_t c = 0; c < C; ++c) y.push_back((xr[c] - m) * rs * w[size_t(c)] + b[size_t(c)]);
  }
  return y;
}

std::vector<double> rms_norm_ref(const std::vector<float>& x, const std::vector<float>& w,
                                 int64_t C, double eps) {
  std::vector<double> y;
  for (size_t r = 0; r < x.size() / size_t(C); ++r) {
    const float* xr = x.data() + r * size_t(C);
    double ss = 0;
    for (int64_t c = 0; c < C; ++c) ss += double(xr[c]) * xr[c];
    const double rs = 1.0 / std::sqrt(ss / double(C) + eps);
    for (int64_t c = 0; c < C; ++c) y.push_back(xr[c] * rs * w[size_t(c)]);
  }
  return y;
}

void norm_forward_vs_reference(float eps) {
  SCOPED_TRACE(eps);
  const int64_t C = 37;
  Tensor x = rn({2, 3, C}), w = rn({C}), b = rn({C});
  std::vector<float> xv = x.to_vector(), wv = w.to_vector(), bv = b.to_vector();
  expect_close(ops::layer_norm(x, w, b, eps).to_vector(), layer_norm_ref(xv, wv, bv, C, eps), 1e-6);
  expect_close(ops::rms_norm(x, w, eps).to_vector(), rms_norm_ref(xv, wv, C, eps), 1e-6);
  // Rows offset by 100: a one-pass E[x^2] - E[x]^2 would lose most digits of the variance; the
  // f32 mean itself is only good to ~1e-5 here.
  for (float& v : xv) v += 100.f;
  Tensor xo = Tensor::from_vector(xv, x.shape());
  expect_close(ops::layer_norm(xo, w, b, eps).to_vector(), layer_norm_ref(xv, wv, bv, C, eps),
               1e-4);
}
}  // namespace

TEST(OpsNN, NormForwardMatchesReference) {
  // eps 0.5 is large next to the rows' variance, so its handling is checked too.
  for (float eps : {1e-5f, 0.5f}) norm_forward_vs_reference(eps);
}

TEST(OpsNN, NormGradientsForInputWeightAndBias) {
  // [70, 3] has more rows than one reduction block (32), exercising the block partial sums.
  std::vector<Shape> shapes = kShapes;
  shapes.push_back(Shape{70, 3});
  for (const Shape& s : shapes) {
    SCOPED_TRACE(s.str());
    const int64_t C = s.dim(-1);
    check_gradients([](auto& v) { return ops::layer_norm(v[0], v[1], v[2]); },
                    {rn(s), rn({C}), rn({C})});
    // For C == 1, rms_norm(x) = x / sqrt(x^2 + eps) is a smoothed sign: keep x off 0.
    check_gradients([](auto& v) { return ops::rms_norm(v[0], v[1]); }, {rn_away(s, 0.3f), rn({C})});
  }
  // Optional parameters: no bias; no weight.
  check_gradients([](auto& v) { return ops::layer_norm(v[0], v[1], Tensor()); },
                  {rn({4, 9}), rn({9})});
  check_gradients([](auto& v) { return ops::layer_norm(v[0], Tensor(), Tensor(), 1e-3f); },
                  {rn({4, 9})});
  check_gradients([](auto& v) { return ops::rms_norm(v[0], Tensor()); }, {rn({4, 9})});
}

TEST(OpsNN, NormParameterGradientsDoNotDependOnThreadCount) {
  Tensor x = rn({300, 200}), w = rn({200}), b = rn({200}), r = rn({300, 200});
  auto grads = [&](int threads) {
    omp_set_num_threads(threads);
    Tensor xi = x.clone().set_requires_grad(), wi = w.clone().set_requires_grad(),
           bi = b.clone().set_requires_grad();
    ops::sum(ops::mul(ops::layer_norm(xi, wi, bi), r)).backward();
    Tensor w2 = w.clone().set_requires_grad();
    ops::sum(ops::mul(ops::rms_norm(xi, w2), r)).backward();
    return std::vector<std::vector<float>>{wi.grad().to_vector(), bi.grad().to_vector(),
                                           w2.grad().to_vector(), xi.grad().to_vector()};
  };
  const int before = omp_get_max_threads();
  auto one = grads(1), two = grads(2);
  omp_set_num_threads(before);
  for (size_t i = 0; i < one.size(); ++i) EXPECT_EQ(one[i], two[i]) << "gradient " << i;
}

TEST(OpsNN, NormLowPrecisionTracksF32) {
  for (DType t : {DType::bf16, DType::f16}) {
    double e = low_precision_x_error([](auto& v) { return ops::layer_norm(v[0], v[1], v[2]); },
                                     {rn({24, 768}), rn({768}), rn({768})}, t);
    EXPECT_LT(e, 1e-2) << dtype_name(t);
    EXPECT_GT(e, 0.0) << dtype_name(t);
    e = low_precision_x_error([](auto& v) { return ops::rms_norm(v[0], v[1]); },
                              {rn({24, 65}), rn({65})}, t);
    EXPECT_LT(e, 1e-2) << dtype_name(t);
    EXPECT_GT(e, 0.0) << dtype_name(t);
  }
}

// ---- softmax, cross_entropy ----

TEST(OpsNN, SoftmaxForwardMatchesReferenceAndIsStable) {
  for (const Shape& s : {Shape{1}, Shape{3, 1}, Shape{4, 33}, Shape{70, 600}}) {
    SCOPED_TRACE(s.str());
    Tensor x = rn(s, 4.f);
    std::vector<float> xv = x.to_vector();
    const int64_t C = s.dim(-1);
    std::vector<double> ref;
    for (size_t r = 0; r < xv.size() / size_t(C); ++r) {
      double z = 0;
      for (int64_t c = 0; c < C; ++c) z += std::exp(double(xv[r * size_t(C) + size_t(c)]));
      for (int64_t c = 0; c < C; ++c)
        ref.push_back(std::exp(double(xv[r * size_t(C) + size_t(c)])) / z);
    }
    // The f32 row sum of C exps carries ~sqrt(C) ulp of error when summed in sequence (as in
    // unvectorised builds): ~2e-6 for C = 600, hence 1e-5 rather than a few ulp.
    expect_close(ops::softmax(x).to_vector(), ref, 1e-5);
  }
  // Huge logits: the max is subtracted first, so no overflow.
  std::vector<float> y =
      ops::softmax(Tensor::from_vector({1000.f, 1000.f, -1000.f}, {3})).to_vector();
  EXPECT_NEAR(y[0], 0.5f, 1e-7);
  EXPECT_NEAR(y[1], 0.5f, 1e-7);
  EXPECT_EQ(y[2], 0.f);
}

TEST(OpsNN, SoftmaxGradients) {
  for (const Shape& s : kShapes) {
    SCOPED_TRACE(s.str());
    check_gradients([](auto& v) { return ops::softmax(v[0]); }, {rn(s)});
  }
}

TEST(OpsNN, SoftmaxLowPrecisionTracksF32) {
  for (DType t : {DType::bf16, DType::f16}) {
    double e = low_precision_error([](auto& v) { return ops::softmax(v[0]); }, {rn({12, 100})}, t);
    EXPECT_LT(e, 1e-2) << dtype_name(t);
    EXPECT_GT(e, 0.0) << dtype_name(t);
  }
}

TEST(OpsNN, CrossEntropyAtUniformLogitsIsLogV) {
  for (int64_t V : {1, 2, 10, 50257}) {
    Tensor logits = Tensor::full(Shape{3, V}, 0.25);
    Tensor t = Tensor::from_ints({0, int32_t(V - 1), int32_t(V / 2)}, {3});
    EXPECT_NEAR(ops::cross_entropy(logits, t).item(), std::log(double(V)), 1e-5) << V;
  }
}

TEST(OpsNN, CrossEntropyMatchesReference) {
  // [64, 1000] is big enough for the threaded path; ignore_index -1 and a class id as ignore.
  for (int32_t ignore : {-1, 3}) {
    const int64_t rows = 64, V = 1000;
    Tensor logits = rn({4, 16, V}, 3.f);
    std::vector<int32_t> t(static_cast<size_t>(rows));
    for (int64_t r = 0; r < rows; ++r) t[size_t(r)] = r % 5 == 0 ? ignore : int32_t((r * 37) % V);
    std::vector<float> x = logits.to_vector();
    double sum = 0;
    int count = 0;
    for (int64_t r = 0; r < rows; ++r) {
      if (t[size_t(r)] == ignore) continue;
      double m = -1e300, z = 0;
      for (int64_t c = 0; c < V; ++c) m = std::max(m, double(x[size_t(r * V + c)]));
      for (int64_t c = 0; c < V; ++c) z += std::exp(double(x[size_t(r * V + c)]) - m);
      sum += m + std::log(z) - x[size_t(r * V + t[size_t(r)])];
      ++count;
    }
    float loss = ops::cross_entropy(logits, Tensor::from_ints(t, {4, 16}), ignore).item();
    EXPECT_NEAR(loss, sum / count, 1e-5 * sum / count) << ignore;
  }
}

TEST(OpsNN, CrossEntropyGradients) {
  // Some targets ignored (-1 by default; 2 as an explicit ignore_index).
  check_gradients([](auto& v) { return ops::cross_entropy(v[0], v[1]); },
                  {rn({5, 7}, 2.f), Tensor::from_ints({3, -1, 0, 6, -1}, {5})});
  check_gradients([](auto& v) { return ops::cross_entropy(v[0], v[1], 2); },
                  {rn({2, 3, 4}, 2.f), Tensor::from_ints({2, 1, 0, 3, 2, 2}, {2, 3})});
  check_gradients([](auto& v) { return ops::cross_entropy(v[0], v[1]); },
                  {rn({1, 1}), Tensor::from_ints({0}, {1})});
  check_gradients([](auto& v) { return ops::cross_entropy(v[0], v[1]); },
                  {rn({9}), Tensor::from_ints({4}, Shape{})});
}

TEST(OpsNN, CrossEntropyGradientIsSoftmaxMinusOneHotOverCount) {
  Tensor logits = rn({3, 6}).set_requires_grad();
  Tensor t = Tensor::from_ints({5, -1, 1}, {3});
  ops::cross_entropy(logits, t).backward();
  std::vector<float> x = logits.to_vector(), g = logits.grad().to_vector();
  for (int r = 0; r < 3; ++r) {
    double z = 0;
    for (int c = 0; c < 6; ++c) z += std::exp(double(x[size_t(r * 6 + c)]));
    for (int c = 0; c < 6; ++c) {
      const int target = r == 0 ? 5 : 1;
      double want = r == 1 ? 0.0 : (std::exp(double(x[size_t(r * 6 + c)])) / z - (c == target)) / 2;
      EXPECT_NEAR(g[size_t(r * 6 + c)], want, 1e-6) << r << "," << c;
    }
  }
}

TEST(OpsNN, CrossEntropyAllIgnoredIsZeroWithZeroGrads) {
  Tensor logits = rn({4, 5}).set_requires_grad();
  Tensor loss = ops::cross_entropy(logits, Tensor::from_ints({-1, -1, -1, -1}, {4}));
  EXPECT_EQ(loss.item(), 0.f);
  loss.backward();
  for (float v : logits.grad().to_vector()) EXPECT_EQ(v, 0.f);
}

// ---- embedding ----

TEST(OpsNN, EmbeddingGathersRowsAndScatterAddsGradients) {
  Tensor w = rn({5, 3}).set_requires_grad();
  Tensor ids = Tensor::from_ints({4, 0, 4, 2, 4, 1}, {2, 3});
  Tensor y = ops::embedding(w, ids);
  ASSERT_EQ(y.shape(), (Shape{2, 3, 3}));
  std::vector<float> wv = w.to_vector(), yv = y.to_vector();
  const std::vector<int> idv = {4, 0, 4, 2, 4, 1};
  for (size_t i = 0; i < idv.size(); ++i)
    for (size_t c = 0; c < 3; ++c) EXPECT_EQ(yv[i * 3 + c], wv[size_t(idv[i]) * 3 + c]);
  Tensor g = rn({2, 3, 3});
  y.backward(g);
  std::vector<float> gv = g.to_vector(), dw = w.grad().to_vector();
  for (size_t v = 0; v < 5; ++v)
    for (size_t c = 0; c < 3; ++c) {
      double want = 0;
      for (size_t i = 0; i < idv.size(); ++i)
        if (size_t(idv[i]) == v) want += gv[i * 3 + c];
      EXPECT_NEAR(dw[v * 3 + c], want, 1e-6) << v << "," << c;  // id 3 unused: 0
    }
}

TEST(OpsNN, EmbeddingGradients) {
  check_gradients([](auto& v) { return ops::embedding(v[0], v[1]); },
                  {rn({6, 4}), Tensor::from_ints({1, 5, 1, 1, 0}, {5})});
  check_gradients([](auto& v) { return ops::embedding(v[0], v[1]); },
                  {rn({1, 1}), Tensor::from_ints({0, 0}, {2, 1})});
  check_gradients([](auto& v) { return ops::embedding(v[0], v[1]); },
                  {rn({7, 33}), Tensor::from_ints({6}, Shape{})});
}

TEST(OpsNN, EmbeddingThreadedBackwardMatchesSerialSum) {
  // n * C above the parallel grain: threads split the columns.
  const int64_t V = 50, C = 70, n = 1000;
  std::vector<int32_t> idv(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) idv[size_t(i)] = int32_t((i * i) % V);
  Tensor w = rn({V, C}).set_requires_grad();
  Tensor g = rn({n, C});
  ops::embedding(w, Tensor::from_ints(idv, {n})).backward(g);
  std::vector<float> gv = g.to_vector(), dw = w.grad().to_vector();
  std::vector<double> want(size_t(V * C), 0.0);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t c = 0; c < C; ++c) want[size_t(idv[size_t(i)] * C + c)] += gv[size_t(i * C + c)];
  expect_close(dw, want, 1e-5);
}

TEST(OpsNN, EmbeddingLowPrecisionTracksF32) {
  for (DType t : {DType::bf16, DType::f16}) {
    double e = low_precision_error([](auto& v) { return ops::embedding(v[0], v[1]); },
                                   {rn({11, 20}), Tensor::from_ints({3, 3, 10, 0}, {2, 2})}, t);
    EXPECT_LT(e, 1e-2) << dtype_name(t);
    EXPECT_GT(e, 0.0) << dtype_name(t);
  }
}

// ---- dropout ----

TEST(OpsNN, DropoutMaskIsSeededScaledAndNearP) {
  const int64_t n = 100000;
  const float p = 0.3f;
  Tensor x = rn_away({n}, 0.01f);  // no zeros in x, so a zero in y means dropped
  Generator g1(5), g2(5), g3(6);
  std::vector<float> a = ops::dropout(x, p, g1).to_vector();
  std::vector<float> b = ops::dropout(x, p, g2).to_vector();
  std::vector<float> c = ops::dropout(x, p, g3).to_vector();
  EXPECT_EQ(a, b);                      // same seed, same mask
  EXPECT_NE(a, c);                      // another seed, another mask
  EXPECT_EQ(g1.offset(), uint64_t(n));  // the draws were reserved
  std::vector<float> xv = x.to_vector();
  int64_t dropped = 0;
  for (int64_t i = 0; i < n; ++i) {
    if (a[size_t(i)] == 0.f)
      ++dropped;
    else
      EXPECT_FLOAT_EQ(a[size_t(i)], xv[size_t(i)] / (1.f - p)) << i;
  }
  // Binomial(n, p): sd of the fraction is sqrt(p (1-p) / n) = 0.0014; 0.01 is ~7 sd.
  EXPECT_NEAR(double(dropped) / double(n), p, 0.01);
  // The next call continues the stream: a different mask.
  EXPECT_NE(ops::dropout(x, p, g1).to_vector(), a);
}

TEST(OpsNN, DropoutMaskDoesNotDependOnThreadCount) {
  Tensor x = rn({70000});
  const int before = omp_get_max_threads();
  omp_set_num_threads(1);
  Generator g1(11);
  std::vector<float> one = ops::dropout(x, 0.5f, g1).to_vector();
  omp_set_num_threads(2);
  Generator g2(11);
  std::vector<float> two = ops::dropout(x, 0.5f, g2).to_vector();
  omp_set_num_threads(before);
  EXPECT_EQ(one, two);
}

TEST(OpsNN, DropoutIdentityWhenNotTrainingOrPZero) {
  Tensor x = rn({4, 5});
  Generator g(1);
  EXPECT_TRUE(ops::dropout(x, 0.5f, g, false).same(x));
  EXPECT_TRUE(ops::dropout(x, 0.f, g).same(x));
  EXPECT_EQ(g.offset(), 0u);  // nothing drawn
}

TEST(OpsNN, DropoutBackwardUsesTheForwardMask) {
  for (const Shape& s : kShapes) {
    SCOPED_TRACE(s.str());
    // A fresh generator per call: every finite-difference evaluation sees the same mask.
    check_gradients(
        [](auto& v) {
          Generator g(3);
          return ops::dropout(v[0], 0.4f, g);
        },
        {rn(s)});
  }
  Tensor x = rn({1000}).set_requires_grad();
  Generator g(9);
  Tensor y = ops::dropout(x, 0.25f, g);
  ops::sum(y).backward();
  std::vector<float> yv = y.to_vector(), gx = x.grad().to_vector();
  for (size_t i = 0; i < yv.size(); ++i) EXPECT_EQ(gx[i], yv[i] == 0.f ? 0.f : 1.f / 0.75f) << i;
}

TEST(OpsNN, DropoutLowPrecisionTracksF32) {
  for (DType t : {DType::bf16, DType::f16}) {
    double e = low_precision_error(
        [](auto& v) {
          Generator g(3);
          return ops::dropout(v[0], 0.2f, g);
        },
        {rn({8, 50})}, t);
    EXPECT_LT(e, 1e-2) << dtype_name(t);
    EXPECT_GT(e, 0.0) << dtype_name(t);
  }
}

// ---- bad calls ----

TEST(OpsNN, BadCallsNameOpShapesAndExpectation) {
  Generator g(1);
  expect_error(
      [] {
        ops::cross_entropy(rn({2, 5}), rn({2}));
      },
      {"cross_entropy", "targets", "f32[2]", "expected dtype i32"});
  expect_error(
      [] {
        ops::cross_entropy(rn({2, 5}).to(DType::bf16), Tensor::from_ints({0, 1}, {2}));
      },
      {"cross_entropy", "logits", "bf16[2, 5]", "expected dtype f32"});
  expect_error(
      [] {
        ops::cross_entropy(rn({2, 5}), Tensor::from_ints({0, 1, 2}, {3}));
      },
      {"cross_entropy", "i32[3]", "f32[2, 5]", "expected targets [2]"});
  expect_error(
      [] {
        ops::cross_entropy(rn({2, 5}), Tensor::from_ints({0, 7}, {2}));
      },
      {"cross_entropy", "target 7", "targets[1]", "f32[2, 5]", "< 5"});
  expect_error(
      [] {
        ops::layer_norm(rn({2, 3}), rn({5}), rn({3}));
      },
      {"layer_norm", "weight", "f32[5]", "f32[2, 3]", "expected [3]"});
  expect_error(
      [] {
        ops::layer_norm(rn({2, 3}), rn({3}), rn({3, 1}));
      },
      {"layer_norm", "bias", "f32[3, 1]", "f32[2, 3]", "expected [3]"});
  expect_error(
      [] {
        ops::layer_norm(rn({2, 3}), rn({3}).to(DType::bf16), rn({3}));
      },
      {"layer_norm", "weight", "bf16[3]", "expected dtype f32"});
  expect_error([] { ops::rms_norm(rn({4}), rn({2})); },
               {"rms_norm", "weight", "f32[2]", "f32[4]", "expected [4]"});
  expect_error(
      [] {
        ops::embedding(rn({4, 3}), Tensor::from_ints({0, 1, 9, 2}, {2, 2}));
      },
      {"embedding", "id 9", "ids[1, 0]", "f32[4, 3]", "< 4"});
  expect_error(
      [] {
        ops::embedding(rn({4, 3}), Tensor::from_ints({-2}, {1}));
      },
      {"embedding", "id -2", "ids[0]", "expected 0 <= id"});
  expect_error(
      [] {
        ops::embedding(rn({4, 3}), rn({2}));
      },
      {"embedding", "ids", "f32[2]", "expected dtype i32"});
  expect_error([] { ops::embedding(rn({12}), Tensor::from_ints({0}, {1})); },
               {"embedding", "weight", "f32[12]", "expected 2 dims"});
  for (float p : {1.f, -0.1f, 1.5f, std::numeric_limits<float>::quiet_NaN()})
    expect_error([&] { ops::dropout(rn({3}), p, g); },
                 {"dropout", "f32[3]", "expected 0 <= p < 1"});
  expect_error([] { ops::gelu(Tensor::zeros(Shape{2}, DType::i32)); },
               {"gelu", "i32[2]", "expected a float dtype"});
  expect_error([] { ops::softmax(Tensor::full(Shape{}, 1.0)); },
               {"softmax", "f32[]", "expected at least 1 dim"});
}
