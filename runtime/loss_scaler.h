// Dynamic loss scaling for f16 compute, as PyTorch's GradScaler and Megatron's DynamicGradScaler
// do it. f16 has 5 exponent bits: gradients below 2^-24 flush to zero and the small ones lose
// their precision, so the loss is multiplied by a large power of two before the backward (every
// gradient with it), the gradients are divided by it again in f32 before the optimizer, and a
// step whose gradients overflowed (inf or NaN anywhere, on any rank) is skipped and the scale
// halved; after `growth_interval` clean steps in a row the scale doubles. Powers of two keep the
// scaling exact: unscaled gradients are bit for bit what an unscaled f32 backward of the same f16
// values would give. bf16 has f32's exponent range and needs none of this.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "runtime/core/dtype.h"

namespace moreh::runtime {

struct LossScalerOptions {
  double initial_scale = 65536.0;  // 2^16, as torch.amp.GradScaler
  double growth_factor = 2.0;
  double backoff_factor = 0.5;
  int64_t growth_interval = 2000;  // clean steps before the scale grows; 0 = a constant scale
  double min_scale = 1.0;          // the scale never falls below this
};

// Whether (and how) programs computing in `compute` scale their loss: MOREH_LOSS_SCALE=dynamic
// (the default for f16; dynamic:<initial scale> starts elsewhere than 2^16), off (the default for
// f32 and bf16), or a number > 0 (a constant scale; overflowing steps are still skipped). Throws
// moreh::Error naming any other value.
std::optional<LossScalerOptions> LossScalingFor(DType compute);

class LossScaler {
 public:
  explicit LossScaler(LossScalerOptions options = {});

  // What the loss is multiplied by for the current step.
  double scale() const { return scale_; }
  // After the step's gradients are known: whether the optimizer may apply them (no overflow).
  // Moves the scale: halved on overflow, grown after growth_interval clean steps.
  bool Update(bool found_overflow);
  int64_t skipped_steps() const { return skipped_; }
  // One line for the log when a step is skipped.
  std::string OverflowMessage(double attempted_scale) const;

 private:
  LossScalerOptions options_;
  double scale_;
  int64_t clean_steps_ = 0, skipped_ = 0;
};

}  // namespace moreh::runtime
