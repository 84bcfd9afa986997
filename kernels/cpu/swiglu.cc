// SwiGLU: y = silu(gate) * up, silu(g) = g * sigmoid(g); GeGLU (Gemma): gelu_tanh(gate) * up.
#include <cmath>

#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cpu/vec_math.h"
#include "runtime/core/parallel.h"

namespace moreh::kernels::cpu {

void SwiGluForward(float* y, const float* gate, const float* up, int64_t n) {
  ParallelFor(n, 1 << 14, [&](int64_t b, int64_t e) {
#pragma omp simd
    for (int64_t i = b; i < e; ++i) y[i] = gate[i] * VecSigmoid(gate[i]) * up[i];
  });
}

// dup = dy * silu(g); dgate = dy * up * s * (1 + g * (1 - s)), s = sigmoid(g)
void SwiGluBackward(float* dgate, float* dup, const float* dy, const float* gate, const float* up,
                    int64_t n) {
  ParallelFor(n, 1 << 14, [&](int64_t b, int64_t e) {
#pragma omp simd
    for (int64_t i = b; i < e; ++i) {
      const float g = gate[i], s = VecSigmoid(g);
      dup[i] = dy[i] * g * s;
      dgate[i] = dy[i] * up[i] * s * (1.0f + g * (1.0f - s));
    }
  });
}

namespace {
constexpr float kGeluK = 0.7978845608028654f;  // sqrt(2 / pi)
constexpr float kGeluA = 0.044715f;
}  // namespace

void GeGluForward(float* y, const float* gate, const float* up, int64_t n) {
  ParallelFor(n, 1 << 14, [&](int64_t b, int64_t e) {
#pragma omp simd
    for (int64_t i = b; i < e; ++i) {
      const float g = gate[i], t = VecTanh(kGeluK * (g + kGeluA * g * g * g));
      y[i] = 0.5f * g * (1.0f + t) * up[i];
    }
  });
}

// gelu_tanh'(g) = 0.5 (1 + t) + 0.5 g (1 - t^2) k (1 + 3 a g^2), t = tanh(k (g + a g^3))
void GeGluBackward(float* dgate, float* dup, const float* dy, const float* gate, const float* up,
                   int64_t n) {
  ParallelFor(n, 1 << 14, [&](int64_t b, int64_t e) {
#pragma omp simd
    for (int64_t i = b; i < e; ++i) {
      const float g = gate[i], t = VecTanh(kGeluK * (g + kGeluA * g * g * g));
      dup[i] = dy[i] * 0.5f * g * (1.0f + t);
      dgate[i] =
          dy[i] * up[i] *
          (0.5f * (1.0f + t) + 0.5f * g * (1.0f - t * t) * kGeluK * (1.0f + 3.0f * kGeluA * g * g));
    }
  });
}

}  // namespace moreh::kernels::cpu
