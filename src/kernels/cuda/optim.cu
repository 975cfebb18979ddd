#include "kernels/cuda/optim.h"

#include <cmath>

#include "core/error.h"
#include "cuda/allocator.h"
#include "kernels/cuda/common.cuh"

namespace tessera::cuda {
namespace {

// The run holding element i: binary search over the few hundred runs (L1-resident after the
// first warps touch them), so the whole buffer is one launch whatever its decay layout.
__device__ inline bool decays(const DecayRange* runs, int32_t nruns, int64_t i) {
  int32_t lo = 0, hi = nruns - 1;
  while (lo < hi) {
    const int32_t mid = (lo + hi + 1) / 2;
    if (runs[mid].begin <= i)
      lo = mid;
    else
      hi = mid - 1;
  }
  return runs[lo].decay != 0;
}

__global__ void adamw_kernel(AdamWStep a) {
  const float b1 = a.beta1, b2 = a.beta2;
  float factor = 1.f;
  if (a.gate) {  // the device's verdict; the scalars as AdamWScalars::at computes them
    if (a.gate->skip) return;
    factor = a.gate->factor;
    const int64_t t = a.gate->applied;
    a.step_size = float(double(a.lr) / a.bias[2 * t]);
    a.inv_sqrt_bc2 = float(1.0 / sqrt(a.bias[2 * t + 1]));
  }
  TS_GRID_STRIDE(i, a.n) {
    const float keep = a.nruns > 0 && decays(a.runs, a.nruns, i) ? a.decayed : 1.f;
    const float gi = factor != 1.f ? a.g[i] * factor : a.g[i];
    const float mi = b1 * a.m[i] + (1.f - b1) * gi;
    const float vi = b2 * a.v[i] + (1.f - b2) * gi * gi;
    a.m[i] = mi;
    a.v[i] = vi;
    const float p = a.p[i] * keep - a.step_size * mi / (sqrtf(vi) * a.inv_sqrt_bc2 + a.eps);
    a.p[i] = p;
    if (a.p_bf16) a.p_bf16[i] = float_to_bf16(p);
  }
}

// The same arithmetic, in the same order, as sgd_update (optim/update_rules.cpp). Whether the
// two backends contract a * b + c into an FMA is up to each compiler, so results agree to an
// ulp or so per step, not bit for bit.
__global__ void sgd_kernel(SGDStep a) {
  const float lr = a.lr, mu = a.momentum;
  const bool lookup = a.weight_decay != 0.f && a.nruns > 0;
  if (a.gate && a.gate->skip) return;
  const float factor = a.gate ? a.gate->factor : 1.f;
  TS_GRID_STRIDE(i, a.n) {
    const float wd = lookup && decays(a.runs, a.nruns, i) ? a.weight_decay : 0.f;
    const float pi = a.p[i];
    const float gi = (factor != 1.f ? a.g[i] * factor : a.g[i]) + wd * pi;
    if (a.b) {
      const float bi = mu * a.b[i] + gi;
      a.b[i] = bi;
      a.p[i] = pi - lr * (a.nesterov ? gi + mu * bi : bi);
    } else {
      a.p[i] = pi - lr * gi;
    }
  }
}

__global__ void unscale_kernel(float* g, int64_t n, float inv, int* flag) {
  int bad = 0;
  TS_GRID_STRIDE(i, n) {
    const float x = g[i] * inv;
    g[i] = x;
    bad |= !(fabsf(x) <= 3.402823466e38f);  // NaN fails every comparison
  }
  // One atomic per warp that saw a non-finite value, none in the common all-finite case.
  if (__any_sync(0xffffffffu, bad) && threadIdx.x % kWarp == 0) atomicOr(flag, 1);
}

__global__ void add_loss_kernel(const float* loss, double* out, double divisor) {
  *out += double(*loss) / divisor;
}

// std::isfinite, spelled so that both compilers take it in a kernel (NaN fails the comparison).
__device__ inline bool finite(double x) {
  return fabs(x) <= 1.7976931348623157e308;
}

// Trainer::apply_or_skip_update, DDP's / ZeRO's unscale-and-clip and DynamicLossScaler::update
// in one thread, in the same f64 operations and order (sqrt and division are correctly rounded
// on both sides), so the device decides exactly as the host would.
__global__ void decide_step_kernel(StepDecisionArgs a) {
  StepGate& g = *a.gate;
  // In rank order, as Communicator::sum_f64 and average_f64 add; a replica's squares once; the
  // mean loss over the ranks that have one (a pipeline's last stages).
  double squares = 0, loss = 0, losses = 0;
  for (int r = 0; r < a.ranks; ++r) {
    if (a.sums[r].counted != 0) squares += a.sums[r].squares;
    if (a.sums[r].loss_counted != 0) loss += a.sums[r].loss, losses += 1;
  }
  loss /= losses;
  const float scale = g.loss_scale;
  const double norm = sqrt(squares) / double(scale);
  const bool finite_loss = finite(loss), finite_norm = finite(norm);
  double factor = 1.0;
  if (finite_norm) {
    factor = 1.0 / double(scale);
    if (a.max_norm > 0 && norm > a.max_norm) factor *= a.max_norm / norm;
  }
  g.factor = float(factor);
  StepRecord rec;
  rec.loss = loss, rec.grad_norm = norm, rec.scale_used = scale;
  if (finite_loss && finite_norm) {
    g.skip = 0;
    ++g.applied;
    if (a.scaler_enabled && ++g.clean_steps >= a.growth_interval) {
      const float grown = g.loss_scale * a.growth_factor;
      if (finite(grown)) g.loss_scale = grown;
      g.clean_steps = 0;
    }
    rec.outcome = kStepApplied;
  } else {
    g.skip = 1;
    const bool overflow = a.scaler_enabled && finite_loss && scale > a.min_scale;
    ++g.skipped_steps;
    g.clean_steps = 0;
    if (a.scaler_enabled) g.loss_scale = fmaxf(a.min_scale, g.loss_scale * a.backoff_factor);
    rec.outcome = overflow ? kStepOverflow : kStepBad;
  }
  g.seed = g.loss_scale / float(a.micro_batches);
  rec.scale_after = g.loss_scale;
  *a.record = rec;
}

}  // namespace

void add_loss(const float* loss, double* out, double divisor, cudaStream_t s) {
  launch<add_loss_kernel>(1, 1, 0, s, loss, out, divisor);
  CUDA_CHECK_LAUNCH();
}

void decide_step(const StepDecisionArgs& a, cudaStream_t s) {
  TS_CHECK(
      a.gate && a.record && a.sums && a.ranks >= 1 && a.micro_batches >= 1,
      "cuda decide_step: incomplete arguments (gate, record, sums, {} ranks, {} micro-batches)",
      a.ranks, a.micro_batches);
  launch<decide_step_kernel>(1, 1, 0, s, a);
  CUDA_CHECK_LAUNCH();
}

void adamw_step(const AdamWStep& a, cudaStream_t s) {
  if (a.n <= 0) return;
  launch<adamw_kernel>(grid_for(a.n), kThreads, 0, s, a);
  CUDA_CHECK_LAUNCH();
}

void sgd_step(const SGDStep& a, cudaStream_t s) {
  TS_CHECK(a.n >= 0, "cuda sgd_step: n = {} is negative", a.n);
  if (a.n == 0) return;
  TS_CHECK(a.p && a.g, "cuda sgd_step: parameters ({}) and gradients ({}) must both be set",
           a.p ? "set" : "null", a.g ? "set" : "null");
  TS_CHECK(a.weight_decay == 0.f || (a.runs && a.nruns > 0),
           "cuda sgd_step: weight_decay {} needs the decay runs (got {} runs)", a.weight_decay,
           a.nruns);
  launch<sgd_kernel>(grid_for(a.n), kThreads, 0, s, a);
  CUDA_CHECK_LAUNCH();
}

void adamw_coefficients(AdamWStep& a, float lr, float weight_decay, int64_t t) {
  // Bias corrections in f64, as optim/adamw.cpp: b2^t for b2 = 0.999 loses digits in f32.
  const double bc1 = 1.0 - std::pow(double(a.beta1), double(t));
  const double bc2 = 1.0 - std::pow(double(a.beta2), double(t));
  a.step_size = float(double(lr) / bc1);
  a.inv_sqrt_bc2 = float(1.0 / std::sqrt(bc2));
  a.decayed = 1.f - lr * weight_decay;
}

void unscale_and_check(float* g, int64_t n, float inv_scale, int* nonfinite_flag, cudaStream_t s) {
  if (n <= 0) return;
  launch<unscale_kernel>(grid_for(n), kThreads, 0, s, g, n, inv_scale, nonfinite_flag);
  CUDA_CHECK_LAUNCH();
}

bool unscale_grads(float* g, int64_t n, float inv_scale, cudaStream_t s) {
  DeviceCachingAllocator& alloc = device_allocator();
  auto* flag = static_cast<int*>(alloc.allocate_on(sizeof(int), s));
  CUDA_CHECK(cudaMemsetAsync(flag, 0, sizeof(int), s));
  unscale_and_check(g, n, inv_scale, flag, s);
  int host = 0;
  CUDA_CHECK(cudaMemcpyAsync(&host, flag, sizeof host, cudaMemcpyDeviceToHost, s));
  CUDA_CHECK(cudaStreamSynchronize(s));
  alloc.release(flag, sizeof(int));
  return host == 0;
}

}  // namespace tessera::cuda
