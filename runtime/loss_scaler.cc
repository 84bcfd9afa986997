#include "runtime/loss_scaler.h"

#include <cmath>
#include <cstdlib>

#include "runtime/core/error.h"

namespace moreh::runtime {

std::optional<LossScalerOptions> LossScalingFor(DType compute) {
  const char* env = std::getenv("MOREH_LOSS_SCALE");
  const std::string v = env == nullptr ? "" : env;
  if (v.empty()) {
    if (compute == DType::kF16) return LossScalerOptions{};
    return std::nullopt;
  }
  if (v == "off") return std::nullopt;
  if (v == "dynamic") return LossScalerOptions{};
  const bool dynamic = v.rfind("dynamic:", 0) == 0;
  const std::string number = dynamic ? v.substr(8) : v;
  char* end = nullptr;
  const double s = std::strtod(number.c_str(), &end);
  MOREH_CHECK(!number.empty() && *end == '\0' && std::isfinite(s) && s > 0,
              "MOREH_LOSS_SCALE='{}': expected dynamic, dynamic:<initial scale>, off, or a "
              "constant scale > 0",
              v);
  LossScalerOptions o;
  o.initial_scale = s;
  if (!dynamic) {
    o.growth_interval = 0;
    o.min_scale = s;
  }
  return o;
}

LossScaler::LossScaler(LossScalerOptions options)
    : options_(options), scale_(options.initial_scale) {
  MOREH_CHECK(options_.initial_scale > 0 && std::isfinite(options_.initial_scale) &&
                  options_.growth_factor >= 1 && options_.backoff_factor > 0 &&
                  options_.backoff_factor <= 1 && options_.growth_interval >= 0 &&
                  options_.min_scale > 0,
              "loss scaler: scale {} (> 0), growth {} (>= 1), backoff {} (in (0, 1]), interval "
              "{} (>= 0), minimum {} (> 0)",
              options_.initial_scale, options_.growth_factor, options_.backoff_factor,
              options_.growth_interval, options_.min_scale);
}

bool LossScaler::Update(bool found_overflow) {
  if (found_overflow) {
    ++skipped_;
    clean_steps_ = 0;
    if (options_.growth_interval > 0) {
      scale_ = std::max(scale_ * options_.backoff_factor, options_.min_scale);
    }
    return false;
  }
  if (options_.growth_interval > 0 && ++clean_steps_ >= options_.growth_interval) {
    const double grown = scale_ * options_.growth_factor;
    if (std::isfinite(grown) && grown <= 1e30) scale_ = grown;  // f32 must hold loss x scale
    clean_steps_ = 0;
  }
  return true;
}

std::string LossScaler::OverflowMessage(double attempted_scale) const {
  return fmt::format(
      "Loss scale: the gradients overflowed at scale {:g}; the optimizer step was skipped ({} so "
      "far) and the scale is now {:g}",
      attempted_scale, skipped_, scale_);
}

}  // namespace moreh::runtime
