// SwiGLU: y = silu(gate) * up, silu(g) = g * sigmoid(g).
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

}  // namespace moreh::kernels::cpu
