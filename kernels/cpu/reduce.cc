// Sum over the middle axis of x viewed as [outer, r, inner].
#include <algorithm>

#include "kernels/cpu/cpu_kernels.h"
#include "runtime/core/parallel.h"

namespace moreh::kernels::cpu {

void SumMiddle(float* out, const float* x, int64_t outer, int64_t r, int64_t inner) {
  if (inner == 1) {
    ParallelFor(outer, 16, [&](int64_t b, int64_t e) {
      for (int64_t o = b; o < e; ++o) {
        double acc = 0.0;
        const float* row = x + o * r;
        for (int64_t i = 0; i < r; ++i) acc += row[i];
        out[o] = static_cast<float>(acc);
      }
    });
    return;
  }
  // Parallel over (outer, inner) columns; accumulate in f32 lanes over r.
  ParallelFor(outer * inner, 256, [&](int64_t b, int64_t e) {
    for (int64_t idx = b; idx < e;) {
      const int64_t o = idx / inner, i0 = idx % inner;
      const int64_t i1 = std::min(inner, i0 + (e - idx));
      float* dst = out + o * inner;
      for (int64_t i = i0; i < i1; ++i) dst[i] = 0.0f;
      for (int64_t k = 0; k < r; ++k) {
        const float* src = x + (o * r + k) * inner;
#pragma omp simd
        for (int64_t i = i0; i < i1; ++i) dst[i] += src[i];
      }
      idx += i1 - i0;
    }
  });
}

}  // namespace moreh::kernels::cpu
