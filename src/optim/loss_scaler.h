// Dynamic loss scaling for f16 training. Parameters stay f32 master copies (the forward casts,
// see ops/autocast.h); the loss is multiplied by `scale` before backward so small f16
// gradients do not flush to zero, and the f32 gradients are divided by it before the step.
// An inf/NaN gradient means the scale was too large: the step is skipped and the scale halved.
// After growth_interval clean steps in a row the scale doubles again.
//
// Per iteration:
//   scaler.scale_loss(loss).backward();
//   bool ok = scaler.unscale(flat);           // gradients now true-scale, and all finite?
//   if (ok) { clip_grad_norm(flat, 1.0); opt.step(lr); }
//   scaler.update(ok);
//   flat.zero_grad();
#pragma once
#include <cstdint>

#include "optim/flat_params.h"

namespace tessera {

struct LossScalerOptions {
  bool enabled = true;         // false: scale stays 1, unscale only checks finiteness (bf16)
  float init_scale = 65536.f;  // 2^16
  float growth_factor = 2.f;
  float backoff_factor = 0.5f;
  int64_t growth_interval = 2000;
  float min_scale = 1.f / 16777216.f;  // 2^-24: a floor so repeated NaN losses cannot reach 0
};

// What a checkpoint needs to resume the scaler exactly.
struct LossScalerState {
  float scale = 1.f;
  int64_t clean_steps = 0;  // clean steps since the last growth or backoff
  int64_t skipped_steps = 0;
};

class DynamicLossScaler {
 public:
  explicit DynamicLossScaler(LossScalerOptions opt = {});

  float scale() const { return scale_; }
  // loss * scale, recorded on the tape.
  Tensor scale_loss(const Tensor& loss) const;
  // Divides the flat gradients by the scale in one pass and returns whether they are all
  // finite. Once per iteration, before update().
  bool unscale(FlatParameters& params);
  // Records the iteration's outcome: non-finite gradients back the scale off and count a
  // skipped step; growth_interval finite ones in a row grow it. Returns grads_finite.
  bool update(bool grads_finite);

  int64_t skipped_steps() const { return skipped_; }
  int64_t clean_steps() const { return clean_; }
  const LossScalerOptions& options() const { return opt_; }

  LossScalerState state() const { return {scale_, clean_, skipped_}; }
  void load_state(const LossScalerState& s);

 private:
  LossScalerOptions opt_;
  float scale_;
  int64_t clean_ = 0;
  int64_t skipped_ = 0;
  bool unscaled_ = false;  // unscale() ran since the last update()
};

}  // namespace tessera
