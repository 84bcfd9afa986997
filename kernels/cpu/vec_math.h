// Branch-free scalar math that GCC auto-vectorises inside `#pragma omp simd` loops: an expf with
// about 1 ulp of error (Cephes polynomial after range reduction), and helpers built on it.
// Internal to kernels/cpu.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

namespace moreh::kernels::cpu {

#pragma omp declare simd notinbranch
inline float VecExp(float x) {
  const float xc = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
  const float n = std::floor(xc * 1.44269504088896341f + 0.5f);
  float r = xc - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  float p = 1.9875691500E-4f;
  p = p * r + 1.3981999507E-3f;
  p = p * r + 8.3334519073E-3f;
  p = p * r + 4.1665795894E-2f;
  p = p * r + 1.6666665459E-1f;
  p = p * r + 5.0000001201E-1f;
  const float y = p * r * r + r + 1.0f;
  const int32_t e = (static_cast<int32_t>(n) + 127) << 23;
  float s;
  std::memcpy(&s, &e, 4);
  return x < -87.0f ? 0.0f : y * s;
}

#pragma omp declare simd notinbranch
inline float VecSigmoid(float x) { return 1.0f / (1.0f + VecExp(-x)); }

// tanh(x) = sign(x) (1 - e) / (1 + e), e = exp(-2 |x|): within a few ulp of 1 in absolute terms
// (Gemma 2's soft-capping and GELU-tanh; std::tanh does not vectorise).
#pragma omp declare simd notinbranch
inline float VecTanh(float x) {
  const float e = VecExp(-2.0f * std::fabs(x));
  const float t = (1.0f - e) / (1.0f + e);
  return x < 0.0f ? -t : t;
}

}  // namespace moreh::kernels::cpu
