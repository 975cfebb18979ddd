#include "plan/kernel_fit.h"

#include <algorithm>
#include <array>

namespace tessera::plan {
namespace {

const char* class_name(meta::KernelClass c) {
  switch (c) {
    case meta::KernelClass::gemm:
      return "class gemm";
    case meta::KernelClass::attention:
      return "class attention";
    case meta::KernelClass::other:
      return "class other";
  }
  return "class other";
}

// A kernel's keys, most specific first: what find() tries in order, and what fit() fits.
std::array<std::string, 3> keys_of(const std::string& name, DType t, meta::KernelClass c) {
  return {name + "/" + dtype_name(t), name, class_name(c)};
}

}  // namespace

KernelFit fit_affine(const std::vector<double>& x, const std::vector<double>& t) {
  // Weighted sums, w = 1 / t: the normal equations and the residual of any (a, b).
  double W = 0, X = 0, T = 0, XX = 0, XT = 0, TT = 0;
  for (size_t i = 0; i < x.size() && i < t.size(); ++i) {
    if (!(t[i] > 0)) continue;
    const double w = 1.0 / t[i];
    W += w, X += w * x[i], T += w * t[i], XX += w * x[i] * x[i], XT += w * x[i] * t[i];
    TT += w * t[i] * t[i];
  }
  auto residual = [&](double a, double b) {
    return TT - 2 * a * T - 2 * b * XT + a * a * W + 2 * a * b * X + b * b * XX;
  };
  KernelFit f;
  f.samples = int(x.size());
  if (W == 0) return f;
  const double det = W * XX - X * X;
  if (det > 1e-12 * W * XX) {
    f.scale = (W * XT - X * T) / det;
    f.overhead = (T - f.scale * X) / W;
    if (f.overhead >= 0 && f.scale >= 0) return f;
  }
  // On the boundary: all overhead (b = 0), or all scale (a = 0), whichever fits better.
  const double only_overhead = T / W, only_scale = XX > 0 ? XT / XX : 0;
  const bool scale_fits_better = XX > 0 && residual(0, only_scale) < residual(only_overhead, 0);
  f.overhead = scale_fits_better ? 0 : only_overhead;
  f.scale = scale_fits_better ? only_scale : 0;
  return f;
}

KernelFit fit_overhead(const std::vector<double>& x, const std::vector<double>& t, double scale) {
  double W = 0, R = 0;
  for (size_t i = 0; i < x.size() && i < t.size(); ++i) {
    if (!(t[i] > 0)) continue;
    W += 1.0 / t[i];
    R += (t[i] - scale * x[i]) / t[i];
  }
  KernelFit f;
  f.samples = int(x.size());
  f.scale = scale;
  f.overhead = W > 0 ? std::max(0.0, R / W) : 0.0;
  return f;
}

KernelTimes KernelTimes::fit(const std::vector<KernelSample>& samples) {
  struct Points {
    std::vector<double> x, t;
    meta::KernelClass cls = meta::KernelClass::other;
    double largest = 0;  // the longest roofline among them
  };
  std::map<std::string, Points> by_key;
  for (const KernelSample& s : samples) {
    for (const std::string& key : keys_of(s.name, s.dtype, s.cls)) {
      Points& p = by_key[key];
      p.x.push_back(s.roofline);
      p.t.push_back(s.seconds);
      p.cls = s.cls;
      p.largest = std::max(p.largest, s.roofline);
    }
  }
  KernelTimes out;
  // Classes first: a kernel only ever run small (a loss's scalar fill) has a scale that is
  // noise, and it would multiply a large one's roofline in a plan; such kernels keep their own
  // overhead under their class's scale.
  for (const auto& [key, p] : by_key)
    if (key.starts_with("class ")) out.fits_[key] = fit_affine(p.x, p.t);
  for (const auto& [key, p] : by_key) {
    if (key.starts_with("class ")) continue;
    out.fits_[key] = p.largest >= kSmallestRooflineForScale
                         ? fit_affine(p.x, p.t)
                         : fit_overhead(p.x, p.t, out.fits_.at(class_name(p.cls)).scale);
  }
  return out;
}

const KernelFit* KernelTimes::find(const meta::KernelCost& k) const {
  for (const std::string& key : keys_of(k.name, k.dtype, k.cls)) {
    auto it = fits_.find(key);
    if (it != fits_.end()) return &it->second;
  }
  return nullptr;
}

}  // namespace tessera::plan
