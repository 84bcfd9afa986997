// Learning-rate schedules with transformers' semantics (transformers.get_scheduler over
// torch.optim.lr_scheduler.LambdaLR): constant, constant_with_warmup, linear, cosine. The k-th
// optimizer step (k = 0, 1, ...) uses At(k), as a loop of optimizer.step(); scheduler.step() does
// from the scheduler's creation. Value type; pure functions.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "runtime/core/status.h"

namespace moreh::optim {

enum class ScheduleType { kConstant, kConstantWithWarmup, kLinear, kCosine };

struct LrSchedule {
  ScheduleType type = ScheduleType::kConstant;
  double base_lr = 0;
  int64_t warmup_steps = 0;
  int64_t total_steps = 0;  // the training steps (linear and cosine decay over them)
  double num_cycles = 0.5;  // cosine: half a cosine, from base_lr to 0

  // name: "constant", "constant_with_warmup", "linear", "cosine" (transformers' names; the
  // constant schedule takes no warmup, which it ignores as transformers does); another name, a
  // negative rate or step count is an error that names it.
  static StatusOr<LrSchedule> Make(std::string_view name, double base_lr, int64_t warmup_steps,
                                   int64_t total_steps);
  double At(int64_t step) const;
  std::string_view name() const;
};

// transformers' TrainingArguments.get_warmup_steps: warmup_steps when > 0, else
// ceil(warmup_ratio x total_steps).
int64_t WarmupSteps(int64_t warmup_steps, double warmup_ratio, int64_t total_steps);

}  // namespace moreh::optim
