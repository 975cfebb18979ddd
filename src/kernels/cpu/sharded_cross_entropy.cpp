#include "kernels/cpu/sharded_cross_entropy.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "core/profiler.h"
#include "kernels/common/activation_math.h"
#include "kernels/cpu/elementwise.h"

namespace tessera::cpu {
namespace {

constexpr float kMinusInf = -std::numeric_limits<float>::infinity();

// log sum exp of n values (-inf when n is 0), shifted by their max for range.
float log_sum_exp(const float* x, int64_t n, int64_t stride) {
  float m = kMinusInf;
  for (int64_t i = 0; i < n; ++i) m = std::max(m, x[i * stride]);
  if (m == kMinusInf) return kMinusInf;
  float s = 0.f;
  for (int64_t i = 0; i < n; ++i) s += math::exp_f32(x[i * stride] - m);
  return m + std::log(s);
}

bool holds(int32_t target, int64_t first_id, int64_t V) {
  return target >= first_id && target < first_id + V;
}

}  // namespace

void sharded_cross_entropy_stats(const float* logits, const int32_t* targets, float* stats,
                                 int64_t rows, int64_t V, int64_t first_id, int32_t ignore_index) {
  prof::Scope prof_scope(prof::Family::embed_loss, "sharded_cross_entropy_stats");
#pragma omp parallel for schedule(static) if (rows * V > kParallelGrain)
  for (int64_t r = 0; r < rows; ++r) {
    const int32_t t = targets[r];
    const float* xr = logits + r * V;
    const bool counted = t != ignore_index;
    stats[r] = counted ? log_sum_exp(xr, V, 1) : 0.f;
    stats[rows + r] = counted && holds(t, first_id, V) ? xr[t - first_id] : 0.f;
  }
}

kernels::CrossEntropySum sharded_cross_entropy_combine(const float* all, int64_t ranks,
                                                       const int32_t* targets, float* lse,
                                                       int64_t rows, int32_t ignore_index) {
  kernels::CrossEntropySum out;
  const int64_t stride = 2 * rows;  // from one rank's stats to the next's
  for (int64_t r = 0; r < rows; ++r) {
    lse[r] = 0.f;
    if (targets[r] == ignore_index) continue;
    lse[r] = log_sum_exp(all + r, ranks, stride);
    float target_logit = 0.f;  // held by one rank; the others sent 0
    for (int64_t k = 0; k < ranks; ++k) target_logit += all[k * stride + rows + r];
    out.loss += double(lse[r] - target_logit);
    ++out.count;
  }
  return out;
}

template <class TG>
void sharded_cross_entropy_backward(const float* logits, const int32_t* targets, const float* lse,
                                    float scale, TG* gx, int64_t rows, int64_t V, int64_t first_id,
                                    int32_t ignore_index) {
  prof::Scope prof_scope(prof::Family::embed_loss, "sharded_cross_entropy_backward");
#pragma omp parallel for schedule(static) if (rows * V > kParallelGrain)
  for (int64_t r = 0; r < rows; ++r) {
    TG* gr = gx + r * V;
    const int32_t t = targets[r];
    if (t == ignore_index) {
      for (int64_t c = 0; c < V; ++c) gr[c] = from_f32<TG>(0.f);
      continue;
    }
    const float* xr = logits + r * V;
    const float l = lse[r];
#pragma omp simd
    for (int64_t c = 0; c < V; ++c) gr[c] = from_f32<TG>(scale * math::exp_f32(xr[c] - l));
    // The target's entry is p - 1, formed in f32 before the (possible) rounding to bf16.
    if (holds(t, first_id, V))
      gr[t - first_id] = from_f32<TG>(scale * math::exp_f32(xr[t - first_id] - l) - scale);
  }
}

template void sharded_cross_entropy_backward<float>(const float*, const int32_t*, const float*,
                                                    float, float*, int64_t, int64_t, int64_t,
                                                    int32_t);
template void sharded_cross_entropy_backward<bf16>(const float*, const int32_t*, const float*,
                                                   float, bf16*, int64_t, int64_t, int64_t,
                                                   int32_t);

}  // namespace tessera::cpu
