// What kernels take on this machine, fitted from timed runs (calibrate.h): for each kind of
// kernel, its time as an affine function of its roofline time (cost_model.h),
//   t = overhead + scale * roofline.
// The overhead is what each call costs beyond its arithmetic and memory traffic (the op's
// dispatch, autograd bookkeeping, allocation, a oneDNN primitive look-up, an OpenMP region);
// the scale is how far the kernel runs from the roofline (a GELU's tanh is not a bandwidth
// roofline; a transposed GEMM is slower than the calibration's plain one). Both are measured
// per kernel name and operand dtype ("linear_dw/bf16"), with the name across dtypes, then the
// kernel class, as fallbacks for kernels the calibration did not run.
#pragma once
#include <map>
#include <string>
#include <vector>

#include "core/meta_device.h"

namespace tessera::plan {

struct KernelFit {
  double overhead = 0;  // seconds per call
  double scale = 1;     // of the roofline time
  int samples = 0;      // calls fitted
  double seconds(double roofline) const { return overhead + scale * roofline; }
};

// One timed kernel: its key, class, roofline time on the calibrated device, and what it took.
struct KernelSample {
  std::string name;
  DType dtype = DType::f32;
  meta::KernelClass cls = meta::KernelClass::other;
  double roofline = 0;
  double seconds = 0;
};

// A key whose longest sample has a shorter roofline than this fits its overhead only, under
// its class's scale: its scale would be fitted to noise (seconds).
constexpr double kSmallestRooflineForScale = 20e-6;

class KernelTimes {
 public:
  // Fits every key (name/dtype, name, class) with at least one sample: weighted least squares
  // with weights 1 / t (each call's relative error counts, a long one's more), overhead and
  // scale kept >= 0. Keys run only small (kSmallestRooflineForScale) take their class's scale.
  static KernelTimes fit(const std::vector<KernelSample>& samples);

  // The fit for kernel k: its name and dtype's, else its name's, else its class's; null when
  // the calibration ran no kernel of the class.
  const KernelFit* find(const meta::KernelCost& k) const;

  // Every fitted key and its fit, for reports ("linear_fwd/bf16", "linear_fwd", "class gemm").
  const std::map<std::string, KernelFit>& fits() const { return fits_; }

 private:
  std::map<std::string, KernelFit> fits_;
};

// Fits t = a + b x by least squares weighted by 1 / t, with a, b >= 0 (a one-parameter fit on
// the boundary when the unconstrained one leaves it). Exposed for tests.
KernelFit fit_affine(const std::vector<double>& x, const std::vector<double>& t);
// The overhead alone under a given scale (same weights), kept >= 0.
KernelFit fit_overhead(const std::vector<double>& x, const std::vector<double>& t, double scale);

}  // namespace tessera::plan
