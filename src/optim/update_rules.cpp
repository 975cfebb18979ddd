#include "optim/update_rules.h"

#include <cmath>

#include "core/meta_device.h"

namespace tessera {

AdamWScalars AdamWScalars::at(float lr, int64_t step, float beta1, float beta2, float eps,
                              float weight_decay) {
  const double bc1 = 1.0 - std::pow(double(beta1), double(step));
  const double bc2 = 1.0 - std::pow(double(beta2), double(step));
  return {beta1,
          beta2,
          eps,
          float(double(lr) / bc1),
          float(1.0 / std::sqrt(bc2)),
          1.f - lr * weight_decay};
}

namespace {
// The elements the runs cover (what a timed trace of a CPU run counts the update by).
int64_t elements(const std::vector<UpdateRun>& runs) {
  int64_t n = 0;
  for (const UpdateRun& r : runs) n += r.end - r.begin;
  return n;
}
}  // namespace

void adamw_update(const AdamWScalars& s, const std::vector<UpdateRun>& runs, float* p,
                  const float* g, float* m, float* v, bool parallel) {
  meta::kernel_runs(Device::cpu(), meta::table_cost::adamw(elements(runs)));
  const float b1 = s.beta1, b2 = s.beta2, eps = s.eps, step_size = s.step_size;
  const float inv_sqrt_bc2 = s.inv_sqrt_bc2;
  // One parallel region; each thread takes its static share of every run and moves on without
  // waiting (runs are disjoint, so no barrier is needed between them). The loop vectorises
  // only with -fno-math-errno (CMakeLists.txt), which lets sqrt skip errno.
#pragma omp parallel if (parallel)
  for (const UpdateRun& r : runs) {
    const float keep = r.decay ? s.decayed : 1.f;
#pragma omp for simd schedule(static) nowait
    for (int64_t i = r.begin; i < r.end; ++i) {
      const float gi = g[i];
      const float mi = b1 * m[i] + (1.f - b1) * gi;
      const float vi = b2 * v[i] + (1.f - b2) * gi * gi;
      m[i] = mi;
      v[i] = vi;
      p[i] = p[i] * keep - step_size * mi / (std::sqrt(vi) * inv_sqrt_bc2 + eps);
    }
  }
}

void sgd_update(float lr, float momentum, bool nesterov, float weight_decay,
                const std::vector<UpdateRun>& runs, float* p, const float* g, float* b,
                bool parallel) {
  meta::kernel_runs(Device::cpu(), meta::table_cost::sgd(elements(runs)));
  const float mu = momentum;
#pragma omp parallel if (parallel)
  for (const UpdateRun& r : runs) {
    const float wd = r.decay ? weight_decay : 0.f;
    if (b) {
#pragma omp for simd schedule(static) nowait
      for (int64_t i = r.begin; i < r.end; ++i) {
        const float gi = g[i] + wd * p[i];
        const float bi = mu * b[i] + gi;
        b[i] = bi;
        p[i] -= lr * (nesterov ? gi + mu * bi : bi);
      }
    } else {
#pragma omp for simd schedule(static) nowait
      for (int64_t i = r.begin; i < r.end; ++i) p[i] -= lr * (g[i] + wd * p[i]);
    }
  }
}

}  // namespace tessera
