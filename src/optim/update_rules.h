// The per-element update rules of AdamW and SGD over ranges of flat f32 buffers, in one place:
// the flat optimizers (optim/adamw.cpp, sgd.cpp) run them over the whole buffer, the sharded
// optimizer of ZeRO (dist/sharded_optimizer.cpp) over its shard. Same code, so a ZeRO run and
// a plain one stay bit-identical.
#pragma once
#include <cstdint>
#include <vector>

namespace tessera {

// A range [begin, end) of the flat buffers whose parameters share one weight-decay setting.
struct UpdateRun {
  int64_t begin, end;
  bool decay;
};

// AdamW's per-step scalars: bias corrections (in f64: b2^t for b2 = 0.999 loses digits in f32
// as t grows) folded into a step size and a denominator scale, and the decoupled decay factor.
struct AdamWScalars {
  float beta1, beta2, eps;
  float step_size;     // lr / (1 - beta1^t)
  float inv_sqrt_bc2;  // 1 / sqrt(1 - beta2^t)
  float decayed;       // 1 - lr * weight_decay (applied to decaying runs only)
  static AdamWScalars at(float lr, int64_t step, float beta1, float beta2, float eps,
                         float weight_decay);
};

// m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2;
// p = p * decay - step_size * m / (sqrt(v) * inv_sqrt_bc2 + eps).   OpenMP when `parallel`.
void adamw_update(const AdamWScalars& s, const std::vector<UpdateRun>& runs, float* p,
                  const float* g, float* m, float* v, bool parallel);

// g' = g + wd p (wd on decaying runs); with momentum buffer b: b = mu b + g',
// p -= lr (nesterov ? g' + mu b : b); without (b null): p -= lr g'.
void sgd_update(float lr, float momentum, bool nesterov, float weight_decay,
                const std::vector<UpdateRun>& runs, float* p, const float* g, float* b,
                bool parallel);

}  // namespace tessera
