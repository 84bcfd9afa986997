// Elementwise add / mul (with suffix broadcast of b) and scale.
#include <algorithm>
#include <cmath>

#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cpu/vec_math.h"
#include "runtime/core/parallel.h"

namespace moreh::kernels::cpu {
namespace {
constexpr int64_t kGrain = 1 << 14;

template <typename Op>
void Binary(float* out, const float* a, const float* b, int64_t n, int64_t nb, Op op) {
  if (nb == n) {
    ParallelFor(n, kGrain, [&](int64_t s, int64_t e) {
#pragma omp simd
      for (int64_t i = s; i < e; ++i) out[i] = op(a[i], b[i]);
    });
    return;
  }
  const int64_t rows = nb == 0 ? 0 : n / nb;
  ParallelFor(rows, std::max<int64_t>(1, kGrain / std::max<int64_t>(nb, 1)),
              [&](int64_t s, int64_t e) {
                for (int64_t r = s; r < e; ++r) {
                  const float* ar = a + r * nb;
                  float* o = out + r * nb;
#pragma omp simd
                  for (int64_t i = 0; i < nb; ++i) o[i] = op(ar[i], b[i]);
                }
              });
}
}  // namespace

void Add(float* out, const float* a, const float* b, int64_t n, int64_t nb) {
  Binary(out, a, b, n, nb, [](float x, float y) { return x + y; });
}
void Mul(float* out, const float* a, const float* b, int64_t n, int64_t nb) {
  Binary(out, a, b, n, nb, [](float x, float y) { return x * y; });
}
void Scale(float* out, const float* x, float s, int64_t n) {
  ParallelFor(n, kGrain, [&](int64_t b, int64_t e) {
#pragma omp simd
    for (int64_t i = b; i < e; ++i) out[i] = x[i] * s;
  });
}

void Softcap(float* out, const float* x, float cap, int64_t n) {
  const float inv = 1.0f / cap;
  ParallelFor(n, kGrain, [&](int64_t b, int64_t e) {
#pragma omp simd
    for (int64_t i = b; i < e; ++i) out[i] = cap * VecTanh(x[i] * inv);
  });
}

void SoftcapBackward(float* dx, const float* dy, const float* y, float cap, int64_t n) {
  const float inv = 1.0f / cap;
  ParallelFor(n, kGrain, [&](int64_t b, int64_t e) {
#pragma omp simd
    for (int64_t i = b; i < e; ++i) {
      const float t = y[i] * inv;
      dx[i] = dy[i] * (1.0f - t * t);
    }
  });
}

}  // namespace moreh::kernels::cpu
