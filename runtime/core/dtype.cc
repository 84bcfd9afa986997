#include "runtime/core/dtype.h"

#include <cmath>

#include "runtime/core/parallel.h"

namespace moreh {

int64_t DTypeSize(DType t) {
  switch (t) {
    case DType::kF32:
      return 4;
    case DType::kBF16:
      return 2;
    case DType::kF16:
      return 2;
    case DType::kI32:
      return 4;
    case DType::kI64:
      return 8;
  }
  return 0;
}

std::string_view DTypeName(DType t) {
  switch (t) {
    case DType::kF32:
      return "f32";
    case DType::kBF16:
      return "bf16";
    case DType::kF16:
      return "f16";
    case DType::kI32:
      return "i32";
    case DType::kI64:
      return "i64";
  }
  return "?";
}

bool ParseDType(std::string_view name, DType* out) {
  for (int i = 0; i < kNumDTypes; ++i) {
    if (DTypeName(static_cast<DType>(i)) == name) {
      *out = static_cast<DType>(i);
      return true;
    }
  }
  return false;
}

float F16ToF32(uint16_t h) {
  const uint32_t sign = (h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1f;
  uint32_t mant = h & 0x3ffu;
  uint32_t u;
  if (exp == 0) {
    if (mant == 0) {
      u = sign;
    } else {  // subnormal: normalise
      exp = 127 - 15 + 1;
      while ((mant & 0x400u) == 0) {
        mant <<= 1;
        --exp;
      }
      mant &= 0x3ffu;
      u = sign | (exp << 23) | (mant << 13);
    }
  } else if (exp == 31) {
    u = sign | 0x7f800000u | (mant << 13);
  } else {
    u = sign | ((exp + 127 - 15) << 23) | (mant << 13);
  }
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

uint16_t F32ToF16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  const uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000u);
  const uint32_t abs = u & 0x7fffffffu;
  if (abs > 0x7f800000u) return sign | 0x7e00u;   // NaN
  if (abs >= 0x477ff000u) return sign | 0x7c00u;  // overflow (incl. rounding up) -> inf
  if (abs < 0x38800000u) {                        // result is subnormal or zero
    if (abs < 0x33000000u) return sign;           // below half the smallest subnormal
    const uint32_t exp = abs >> 23;
    const uint32_t mant = (abs & 0x7fffffu) | 0x800000u;
    const uint32_t shift = 126 - exp;  // value / 2^-24 = mant * 2^(exp - 126)
    uint32_t v = mant >> shift;
    const uint32_t rem = mant & ((1u << shift) - 1);
    const uint32_t half = 1u << (shift - 1);
    if (rem > half || (rem == half && (v & 1u))) ++v;
    return sign | static_cast<uint16_t>(v);
  }
  uint32_t v = abs - 0x38000000u;  // rebias exponent 127 -> 15
  v += 0xfffu + ((v >> 13) & 1u);  // round to nearest even
  return sign | static_cast<uint16_t>(v >> 13);
}

namespace {
template <typename S, typename D>
void ConvertTyped(const S* src, D* dst, int64_t n) {
  ParallelFor(n, 1 << 16, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) dst[i] = static_cast<D>(src[i]);
  });
}

// Reads element i of any dtype as f32 or i64.
inline float ReadF(const void* p, DType t, int64_t i) {
  switch (t) {
    case DType::kF32:
      return static_cast<const float*>(p)[i];
    case DType::kBF16:
      return BF16ToF32(static_cast<const uint16_t*>(p)[i]);
    case DType::kF16:
      return F16ToF32(static_cast<const uint16_t*>(p)[i]);
    case DType::kI32:
      return static_cast<float>(static_cast<const int32_t*>(p)[i]);
    case DType::kI64:
      return static_cast<float>(static_cast<const int64_t*>(p)[i]);
  }
  return 0;
}
inline int64_t ReadI(const void* p, DType t, int64_t i) {
  switch (t) {
    case DType::kI32:
      return static_cast<const int32_t*>(p)[i];
    case DType::kI64:
      return static_cast<const int64_t*>(p)[i];
    default:
      return static_cast<int64_t>(ReadF(p, t, i));
  }
}
}  // namespace

void ConvertElements(const void* src, DType st, void* dst, DType dt, int64_t n) {
  if (n <= 0) return;
  if (st == dt) {
    std::memcpy(dst, src, static_cast<size_t>(n * DTypeSize(st)));
    return;
  }
  if (st == DType::kI32 && dt == DType::kI64) {
    return ConvertTyped(static_cast<const int32_t*>(src), static_cast<int64_t*>(dst), n);
  }
  if (st == DType::kI64 && dt == DType::kI32) {
    return ConvertTyped(static_cast<const int64_t*>(src), static_cast<int32_t*>(dst), n);
  }
  ParallelFor(n, 1 << 15, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      switch (dt) {
        case DType::kF32:
          static_cast<float*>(dst)[i] = ReadF(src, st, i);
          break;
        case DType::kBF16:
          static_cast<uint16_t*>(dst)[i] = F32ToBF16(ReadF(src, st, i));
          break;
        case DType::kF16:
          static_cast<uint16_t*>(dst)[i] = F32ToF16(ReadF(src, st, i));
          break;
        case DType::kI32:
          static_cast<int32_t*>(dst)[i] = static_cast<int32_t>(ReadI(src, st, i));
          break;
        case DType::kI64:
          static_cast<int64_t*>(dst)[i] = ReadI(src, st, i);
          break;
      }
    }
  });
}

}  // namespace moreh
