// AdamW with torch.optim.AdamW semantics (decoupled weight decay, bias correction, eps outside the
// square root of the corrected second moment).
#include <cmath>

#include "kernels/cpu/cpu_kernels.h"
#include "runtime/core/parallel.h"

namespace moreh::kernels::cpu {

void AdamWStep(float* param, float* m, float* v, const float* grad, int64_t n,
               const AdamWParams& p) {
  const double bc1 = 1.0 - std::pow(static_cast<double>(p.beta1), static_cast<double>(p.step));
  const double bc2 = 1.0 - std::pow(static_cast<double>(p.beta2), static_cast<double>(p.step));
  const float step_size = static_cast<float>(p.lr / bc1);
  const float sqrt_bc2 = static_cast<float>(std::sqrt(bc2));
  const float decay = 1.0f - p.lr * p.weight_decay;
  const float b1 = p.beta1, b2 = p.beta2, eps = p.eps;
  ParallelFor(n, 1 << 14, [&](int64_t b, int64_t e) {
#pragma omp simd
    for (int64_t i = b; i < e; ++i) {
      const float g = grad[i];
      const float mi = b1 * m[i] + (1.0f - b1) * g;
      const float vi = b2 * v[i] + (1.0f - b2) * g * g;
      m[i] = mi;
      v[i] = vi;
      const float denom = std::sqrt(vi) / sqrt_bc2 + eps;
      param[i] = param[i] * decay - step_size * mi / denom;
    }
  });
}

}  // namespace moreh::kernels::cpu
