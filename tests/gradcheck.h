// Test harness shared by every op test: float64 central finite differences against the
// autograd gradients, and low-precision-vs-f32 comparisons.
#pragma once
#include <functional>
#include <initializer_list>
#include <string>
#include <vector>

#include "core/rng.h"
#include "core/tensor.h"

namespace tessera::testing {

using OpFn = std::function<Tensor(const std::vector<Tensor>&)>;

struct GradCheckOptions {
  // Perturbation. The op runs in f32; the differences and the loss are accumulated in f64.
  double eps = 1e-2;
  // |analytic - numeric| <= atol + rtol * max(|analytic|, |numeric|). f32 defaults; the f32 noise
  // of one forward is ~1e-7 relative, i.e. ~1e-5 after dividing by 2*eps.
  double atol = 2e-3;
  double rtol = 1e-2;
  // Elements checked per input (chosen at random when an input is larger).
  int max_checks = 48;
  uint64_t seed = 1234;
};

// Checks d/dx of L = sum(f(inputs) * R) (R fixed random weights) for every floating input that
// requires grad. Integer inputs (indices, targets) are passed through untouched.
// Reports failures through GoogleTest expectations (and returns false on any).
bool check_gradients(const OpFn& f, std::vector<Tensor> inputs,
                     const GradCheckOptions& opt = GradCheckOptions());

// ||a - b|| / max(||b||, tiny), in f64.
double relative_error(const Tensor& a, const Tensor& b);

// Runs f on inputs cast to `low` (float inputs only) and on the f32 inputs, returning the
// largest relative error among the output and every input gradient.
double low_precision_error(const OpFn& f, const std::vector<Tensor>& inputs, DType low);

// Expects f() to throw tessera::Error whose message contains every fragment (the tests' check
// that errors name the op or file, the shapes or field, and the expectation).
void expect_error(const std::function<void()>& f, std::initializer_list<std::string> fragments);

// Random f32 tensor, normal(0, std), requiring grad.
Tensor randn_param(const Shape& s, Generator& g, float std = 1.f);

}  // namespace tessera::testing
