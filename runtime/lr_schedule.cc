#include "runtime/lr_schedule.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

namespace moreh::optim {

StatusOr<LrSchedule> LrSchedule::Make(std::string_view name, double base_lr, int64_t warmup_steps,
                                      int64_t total_steps) {
  LrSchedule s;
  if (name == "constant") {
    s.type = ScheduleType::kConstant;
  } else if (name == "constant_with_warmup") {
    s.type = ScheduleType::kConstantWithWarmup;
  } else if (name == "linear") {
    s.type = ScheduleType::kLinear;
  } else if (name == "cosine") {
    s.type = ScheduleType::kCosine;
  } else {
    return Status::InvalidArgument(
        fmt::format("learning-rate schedule '{}': expected constant, constant_with_warmup, "
                    "linear or cosine",
                    name));
  }
  if (!(base_lr >= 0) || !std::isfinite(base_lr)) {
    return Status::InvalidArgument(fmt::format("learning rate {} must be >= 0", base_lr));
  }
  if (warmup_steps < 0 || total_steps < 0) {
    return Status::InvalidArgument(fmt::format(
        "warmup steps ({}) and training steps ({}) must be >= 0", warmup_steps, total_steps));
  }
  s.base_lr = base_lr;
  s.warmup_steps = s.type == ScheduleType::kConstant ? 0 : warmup_steps;  // as transformers
  s.total_steps = total_steps;
  return s;
}

double LrSchedule::At(int64_t step) const {
  const double k = static_cast<double>(step), w = static_cast<double>(warmup_steps);
  if (type == ScheduleType::kConstant) return base_lr;
  if (step < warmup_steps) return base_lr * k / std::max(1.0, w);
  if (type == ScheduleType::kConstantWithWarmup) return base_lr;
  const double span = std::max(1.0, static_cast<double>(total_steps - warmup_steps));
  if (type == ScheduleType::kLinear) {
    return base_lr * std::max(0.0, static_cast<double>(total_steps - step) / span);
  }
  const double progress = (k - w) / span;
  return base_lr * std::max(0.0, 0.5 * (1.0 + std::cos(M_PI * num_cycles * 2.0 * progress)));
}

std::string_view LrSchedule::name() const {
  switch (type) {
    case ScheduleType::kConstant:
      return "constant";
    case ScheduleType::kConstantWithWarmup:
      return "constant_with_warmup";
    case ScheduleType::kLinear:
      return "linear";
    case ScheduleType::kCosine:
      return "cosine";
  }
  return "constant";
}

int64_t WarmupSteps(int64_t warmup_steps, double warmup_ratio, int64_t total_steps) {
  if (warmup_steps > 0) return warmup_steps;
  return static_cast<int64_t>(std::ceil(static_cast<double>(total_steps) * warmup_ratio));
}

}  // namespace moreh::optim
