// The loss scaler's schedule (PyTorch GradScaler semantics) and MOREH_LOSS_SCALE.
#include "runtime/loss_scaler.h"

#include <gtest/gtest.h>

#include <cstdlib>

#include "runtime/core/error.h"

namespace moreh::runtime {
namespace {

TEST(LossScaler, HalvesOnOverflowAndGrowsAfterTheInterval) {
  LossScaler s({.initial_scale = 1024, .growth_interval = 3, .min_scale = 256});
  EXPECT_EQ(s.scale(), 1024);
  EXPECT_FALSE(s.Update(true));  // overflow: skip, halve
  EXPECT_EQ(s.scale(), 512);
  EXPECT_TRUE(s.Update(false));
  EXPECT_TRUE(s.Update(false));
  EXPECT_EQ(s.scale(), 512);
  EXPECT_FALSE(s.Update(true));  // the clean run restarts
  EXPECT_EQ(s.scale(), 256);
  EXPECT_FALSE(s.Update(true));  // never below the minimum
  EXPECT_EQ(s.scale(), 256);
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(s.Update(false));
  EXPECT_EQ(s.scale(), 512);  // 3 clean steps in a row
  EXPECT_EQ(s.skipped_steps(), 3);
  EXPECT_NE(s.OverflowMessage(1024).find("1024"), std::string::npos);
}

TEST(LossScaler, ConstantScaleStillSkipsOverflows) {
  LossScaler s({.initial_scale = 128, .growth_interval = 0});
  EXPECT_FALSE(s.Update(true));
  EXPECT_EQ(s.scale(), 128);
  for (int i = 0; i < 5000; ++i) s.Update(false);
  EXPECT_EQ(s.scale(), 128);
}

TEST(LossScaler, RejectsBadOptions) {
  EXPECT_THROW(LossScaler({.initial_scale = 0}), Error);
  EXPECT_THROW(LossScaler({.backoff_factor = 2}), Error);
  EXPECT_THROW(LossScaler({.growth_interval = -1}), Error);
}

TEST(LossScaler, EnvironmentChoosesPerComputeDtype) {
  unsetenv("MOREH_LOSS_SCALE");
  ASSERT_TRUE(LossScalingFor(DType::kF16).has_value());  // f16: dynamic by default
  EXPECT_EQ(LossScalingFor(DType::kF16)->initial_scale, 65536);
  EXPECT_FALSE(LossScalingFor(DType::kBF16).has_value());
  EXPECT_FALSE(LossScalingFor(DType::kF32).has_value());
  setenv("MOREH_LOSS_SCALE", "off", 1);
  EXPECT_FALSE(LossScalingFor(DType::kF16).has_value());
  setenv("MOREH_LOSS_SCALE", "dynamic", 1);
  EXPECT_TRUE(LossScalingFor(DType::kBF16).has_value());
  setenv("MOREH_LOSS_SCALE", "4096", 1);
  const auto c = LossScalingFor(DType::kBF16);
  ASSERT_TRUE(c.has_value());
  EXPECT_EQ(c->initial_scale, 4096);
  EXPECT_EQ(c->growth_interval, 0);
  setenv("MOREH_LOSS_SCALE", "dynamic:1024", 1);
  const auto d = LossScalingFor(DType::kF16);
  ASSERT_TRUE(d.has_value());
  EXPECT_EQ(d->initial_scale, 1024);
  EXPECT_EQ(d->growth_interval, 2000);
  for (const char* bad : {"-1", "0", "big", "1e400", "12abc", "dynamic:", "dynamic:x", ""}) {
    if (*bad == '\0') continue;  // unset-like: the default
    setenv("MOREH_LOSS_SCALE", bad, 1);
    try {
      LossScalingFor(DType::kF16);
      ADD_FAILURE() << bad << " accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("MOREH_LOSS_SCALE"), std::string::npos) << e.what();
    }
  }
  unsetenv("MOREH_LOSS_SCALE");
}

}  // namespace
}  // namespace moreh::runtime
