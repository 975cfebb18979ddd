// Optimizer and mixed-precision kernels over the flat f32 parameter / gradient buffers
// (optim/flat_params.h): fused AdamW and SGD, each one launch over the whole buffer, and the
// fp16 loss scaler's unscale-and-check in one pass; the step decided on the device (StepGate,
// core/backend.h): its sums and its verdict.
#pragma once
#include <cstdint>

#include "core/backend.h"
#include "core/half.h"
#include "cuda/device.h"

namespace tessera::cuda {

// A maximal range of the flat buffers whose parameters share one weight-decay setting
// (Optimizer::DecayRun). The runs cover [0, n) in order.
struct DecayRange {
  int64_t begin, end;
  int32_t decay;  // 0 or 1
};

struct AdamWStep {
  float* p = nullptr;        // f32 master weights [n]
  const float* g = nullptr;  // gradients [n]
  float* m = nullptr;        // exp_avg [n]
  float* v = nullptr;        // exp_avg_sq [n]
  int64_t n = 0;
  const DecayRange* runs = nullptr;  // device array, sorted, covering [0, n)
  int32_t nruns = 0;
  float beta1 = 0.9f, beta2 = 0.999f, eps = 1e-8f;
  float step_size = 0;     // lr / (1 - beta1^t), computed in f64 on the host
  float inv_sqrt_bc2 = 0;  // 1 / sqrt(1 - beta2^t)
  float decayed = 1;       // 1 - lr * weight_decay
  bf16* p_bf16 = nullptr;  // optional: the updated weights rounded to bf16 in the same pass
  // Optional (AdamWArgs): the device's verdict; with it step_size and inv_sqrt_bc2 come from
  // lr and bias[2t], bias[2t + 1] for t = gate->applied.
  const StepGate* gate = nullptr;
  const double* bias = nullptr;
  float lr = 0;
};

// AdamW exactly as optim/adamw.cpp computes it, per element:
//   m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2;
//   p = p * (decay ? decayed : 1) - step_size * m / (sqrt(v) * inv_sqrt_bc2 + eps)
void adamw_step(const AdamWStep& a, cudaStream_t s = current_stream());

// Host helper filling step_size, inv_sqrt_bc2 and decayed for step t (1-based) like AdamW.
void adamw_coefficients(AdamWStep& a, float lr, float weight_decay, int64_t t);

struct SGDStep {
  float* p = nullptr;        // f32 weights [n]
  const float* g = nullptr;  // gradients [n]
  float* b = nullptr;        // momentum buffer [n]; null: plain SGD (momentum, nesterov unused)
  int64_t n = 0;
  const DecayRange* runs = nullptr;  // device array, sorted, covering [0, n); unread when
  int32_t nruns = 0;                 // weight_decay == 0
  float lr = 0, momentum = 0, weight_decay = 0;
  bool nesterov = false;
  const StepGate* gate = nullptr;  // optional: skip, gradient factor (SGDArgs)
};

// SGD exactly as optim/update_rules.cpp's sgd_update computes it, per element:
//   g' = g + (decay ? weight_decay : 0) * p
//   with b: b = momentum * b + g';  p -= lr * (nesterov ? g' + momentum * b : b)
//   without: p -= lr * g'
// An Error before any launch when p or g is null (n > 0), or weight_decay > 0 without runs.
void sgd_step(const SGDStep& a, cudaStream_t s = current_stream());

// g *= inv_scale over [0, n) and *nonfinite_flag |= (any unscaled value is inf or NaN), in one
// pass. The flag is a device int the caller zeroes; no synchronisation here.
void unscale_and_check(float* g, int64_t n, float inv_scale, int* nonfinite_flag,
                       cudaStream_t s = current_stream());
// The same, returning on the host whether all values were finite (synchronises the stream).
bool unscale_grads(float* g, int64_t n, float inv_scale, cudaStream_t s = current_stream());

// *out += double(*loss) / divisor.
void add_loss(const float* loss, double* out, double divisor, cudaStream_t s = current_stream());
// The step's verdict from the ranks' sums (StepDecisionArgs): one thread.
void decide_step(const StepDecisionArgs& a, cudaStream_t s = current_stream());

}  // namespace tessera::cuda
