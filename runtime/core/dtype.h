// Element types of tensors, and the scalar conversions between them.
//
// bf16 and f16 are stored as uint16_t bit patterns; kernels compute in f32 and convert at the edges
// (round-to-nearest-even, NaN preserved). All functions here are pure and thread-safe.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

namespace moreh {

enum class DType : uint8_t { kF32 = 0, kBF16, kF16, kI32, kI64 };
inline constexpr int kNumDTypes = 5;

int64_t DTypeSize(DType t);
std::string_view DTypeName(DType t);  // "f32", "bf16", "f16", "i32", "i64"
bool ParseDType(std::string_view name, DType* out);
inline bool IsFloating(DType t) {
  return t == DType::kF32 || t == DType::kBF16 || t == DType::kF16;
}
inline bool IsInteger(DType t) { return t == DType::kI32 || t == DType::kI64; }

inline float BF16ToF32(uint16_t h) {
  uint32_t u = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline uint16_t F32ToBF16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40);  // NaN
  u += 0x7fffu + ((u >> 16) & 1u);  // round to nearest even
  return static_cast<uint16_t>(u >> 16);
}
float F16ToF32(uint16_t h);
uint16_t F32ToF16(float f);

// Converts n elements between any two dtypes (floats through f32; integers exactly, floats to
// integers truncating toward zero as static_cast does).
void ConvertElements(const void* src, DType src_type, void* dst, DType dst_type, int64_t n);

}  // namespace moreh
