#include "runtime/core/dtype.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>

namespace moreh {
namespace {

float Bits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

TEST(DType, SizesAndNames) {
  EXPECT_EQ(DTypeSize(DType::kF32), 4);
  EXPECT_EQ(DTypeSize(DType::kBF16), 2);
  EXPECT_EQ(DTypeSize(DType::kF16), 2);
  EXPECT_EQ(DTypeSize(DType::kI32), 4);
  EXPECT_EQ(DTypeSize(DType::kI64), 8);
  for (int i = 0; i < kNumDTypes; ++i) {
    DType d;
    ASSERT_TRUE(ParseDType(DTypeName(static_cast<DType>(i)), &d));
    EXPECT_EQ(static_cast<int>(d), i);
  }
  DType d;
  EXPECT_FALSE(ParseDType("f64", &d));
}

TEST(DType, BF16RoundsToNearestEven) {
  EXPECT_EQ(F32ToBF16(1.0f), 0x3f80);
  // 1 + 2^-8 is exactly halfway between two bf16 values: ties go to the even mantissa (1.0).
  EXPECT_EQ(F32ToBF16(Bits(0x3f808000u)), 0x3f80);
  // 1 + 3 * 2^-8 is halfway with an odd lower neighbour: rounds up.
  EXPECT_EQ(F32ToBF16(Bits(0x3f818000u)), 0x3f82);
  EXPECT_EQ(F32ToBF16(Bits(0x3f808001u)), 0x3f81);
  EXPECT_TRUE(std::isnan(BF16ToF32(F32ToBF16(std::numeric_limits<float>::quiet_NaN()))));
  EXPECT_EQ(BF16ToF32(F32ToBF16(-std::numeric_limits<float>::infinity())),
            -std::numeric_limits<float>::infinity());
  for (uint32_t h = 0; h < 65536; ++h) {  // every bf16 value survives a round trip through f32
    const float f = BF16ToF32(static_cast<uint16_t>(h));
    if (std::isnan(f)) continue;
    ASSERT_EQ(F32ToBF16(f), h);
  }
}

TEST(DType, F16RoundTripsEveryValue) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const float f = F16ToF32(static_cast<uint16_t>(h));
    if (std::isnan(f)) {
      EXPECT_TRUE(std::isnan(F16ToF32(F32ToF16(f))));
      continue;
    }
    ASSERT_EQ(F32ToF16(f), h) << "f16 bits " << h << " value " << f;
  }
}

TEST(DType, F16RoundingAndRange) {
  EXPECT_EQ(F16ToF32(F32ToF16(65504.0f)), 65504.0f);
  EXPECT_TRUE(std::isinf(F16ToF32(F32ToF16(65520.0f))));  // rounds past the largest finite
  EXPECT_EQ(F16ToF32(F32ToF16(std::ldexp(1.0f, -24))),
            std::ldexp(1.0f, -24));  // smallest subnormal
  EXPECT_EQ(F16ToF32(F32ToF16(std::ldexp(1.0f, -26))), 0.0f);
  // 1 + 2^-11 is halfway between 1 and 1 + 2^-10: ties to even (1).
  EXPECT_EQ(F16ToF32(F32ToF16(1.0f + std::ldexp(1.0f, -11))), 1.0f);
  EXPECT_EQ(F16ToF32(F32ToF16(1.0f + 3 * std::ldexp(1.0f, -11))), 1.0f + std::ldexp(1.0f, -9));
}

TEST(DType, ConvertElementsBetweenAllTypes) {
  const float src[4] = {1.5f, -2.75f, 3.0f, -0.0f};
  int64_t ints[4];
  ConvertElements(src, DType::kF32, ints, DType::kI64, 4);
  EXPECT_EQ(ints[0], 1);
  EXPECT_EQ(ints[1], -2);
  int32_t i32[4];
  ConvertElements(ints, DType::kI64, i32, DType::kI32, 4);
  EXPECT_EQ(i32[2], 3);
  uint16_t h[4];
  float back[4];
  ConvertElements(src, DType::kF32, h, DType::kBF16, 4);
  ConvertElements(h, DType::kBF16, back, DType::kF32, 4);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(back[i], src[i]);  // all exactly representable
}

}  // namespace
}  // namespace moreh
