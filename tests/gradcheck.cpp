#include "gradcheck.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "autograd/grad_mode.h"
#include "ops/ops.h"

namespace tessera::testing {

namespace {

double weighted_sum(const Tensor& out, const std::vector<float>& r) {
  std::vector<float> v = out.to_vector();
  double s = 0;
  for (size_t i = 0; i < v.size(); ++i) s += double(v[i]) * double(r[i]);
  return s;
}

}  // namespace

Tensor randn_param(const Shape& s, Generator& g, float std) {
  Tensor t = Tensor::randn(s, g, 0.f, std);
  t.set_requires_grad(true);
  return t;
}

bool check_gradients(const OpFn& f, std::vector<Tensor> inputs, const GradCheckOptions& opt) {
  Generator g(opt.seed);
  for (Tensor& t : inputs)
    if (t.defined() && is_floating(t.dtype())) t.set_requires_grad(true), t.zero_grad();

  // Analytic: backward of sum(out * R).
  Tensor out = f(inputs);
  Tensor r = Tensor::randn(out.shape(), g);
  std::vector<float> rv = r.to_vector();
  Tensor loss = ops::sum(ops::mul(out, r.to(out.dtype())));
  loss.backward();

  bool ok = true;
  NoGradGuard no_grad;
  for (size_t idx = 0; idx < inputs.size(); ++idx) {
    Tensor x = inputs[idx];
    if (!x.defined() || !is_floating(x.dtype())) continue;
    Tensor grad = x.grad();
    const int64_t n = x.numel();
    std::vector<float> analytic =
        grad.defined() ? grad.to_vector() : std::vector<float>(size_t(n), 0.f);
    // Which elements to probe.
    std::vector<int64_t> probe;
    if (n <= opt.max_checks) {
      for (int64_t i = 0; i < n; ++i) probe.push_back(i);
    } else {
      for (int i = 0; i < opt.max_checks; ++i) probe.push_back(int64_t(g.next_u64() % uint64_t(n)));
    }
    float* p = x.data<float>();
    int failures = 0;
    for (int64_t i : probe) {
      const float orig = p[i];
      const float up = float(double(orig) + opt.eps), down = float(double(orig) - opt.eps);
      p[i] = up;
      double lp = weighted_sum(f(inputs), rv);
      p[i] = down;
      double lm = weighted_sum(f(inputs), rv);
      p[i] = orig;
      const double numeric = (lp - lm) / (double(up) - double(down));
      const double a = analytic[size_t(i)];
      const double tol = opt.atol + opt.rtol * std::max(std::fabs(a), std::fabs(numeric));
      if (!(std::fabs(a - numeric) <= tol)) {
        ok = false;
        if (++failures <= 5)
          ADD_FAILURE() << "gradient of input " << idx << " " << x.desc() << " at element " << i
                        << ": analytic " << a << " vs numeric " << numeric << " (tol " << tol
                        << ")";
      }
    }
  }
  return ok;
}

void expect_error(const std::function<void()>& f, std::initializer_list<std::string> fragments) {
  try {
    f();
    ADD_FAILURE() << "no error thrown";
  } catch (const Error& e) {
    for (const std::string& s : fragments)
      EXPECT_NE(std::string(e.what()).find(s), std::string::npos)
          << "'" << s << "' missing from: " << e.what();
  }
}

double relative_error(const Tensor& a, const Tensor& b) {
  std::vector<float> va = a.to_vector(), vb = b.to_vector();
  EXPECT_EQ(va.size(), vb.size());
  double num = 0, den = 0;
  for (size_t i = 0; i < va.size() && i < vb.size(); ++i) {
    double d = double(va[i]) - double(vb[i]);
    num += d * d;
    den += double(vb[i]) * double(vb[i]);
  }
  return std::sqrt(num) / std::max(std::sqrt(den), 1e-30);
}

double low_precision_error(const OpFn& f, const std::vector<Tensor>& inputs, DType low) {
  auto run = [&](DType t, std::vector<Tensor>* grads) {
    std::vector<Tensor> in;
    for (const Tensor& x : inputs) {
      if (x.defined() && is_floating(x.dtype())) {
        Tensor c = x.detach().to(t);
        if (c.same(x) || c.impl().storage == x.impl().storage) c = c.clone();
        c.set_requires_grad(true);
        in.push_back(c);
      } else {
        in.push_back(x);
      }
    }
    Tensor out = f(in);
    Generator g(99);
    Tensor r = Tensor::randn(out.shape(), g).to(out.dtype());
    ops::sum(ops::mul(out, r)).backward();
    for (const Tensor& x : in)
      if (x.defined() && is_floating(x.dtype())) grads->push_back(x.grad());
    return out;
  };
  std::vector<Tensor> g32, glow;
  Tensor o32 = run(DType::f32, &g32);
  Tensor olow = run(low, &glow);
  double worst = relative_error(olow, o32);
  for (size_t i = 0; i < g32.size(); ++i)
    if (g32[i].defined() && glow[i].defined())
      worst = std::max(worst, relative_error(glow[i], g32[i]));
  return worst;
}

}  // namespace tessera::testing
