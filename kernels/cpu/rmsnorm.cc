// RMSNorm over the last dimension: x[N,C], w[C]. Statistics in f32 (Hugging Face LlamaRMSNorm).
#include <cmath>
#include <cstring>
#include <vector>

#include "kernels/cpu/cpu_kernels.h"
#include "runtime/core/parallel.h"

namespace moreh::kernels::cpu {

void RmsNormForward(float* y, const float* x, const float* w, int64_t n, int64_t c, float eps,
                    float offset) {
  ParallelFor(n, 16, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      const float* xr = x + i * c;
      float* yr = y + i * c;
      float ss = 0.0f;
#pragma omp simd reduction(+ : ss)
      for (int64_t j = 0; j < c; ++j) ss += xr[j] * xr[j];
      const float r = 1.0f / std::sqrt(ss / static_cast<float>(c) + eps);
#pragma omp simd
      for (int64_t j = 0; j < c; ++j) yr[j] = xr[j] * r * (offset + w[j]);
    }
  });
}

// y = x * r * w, r = (mean(x^2) + eps)^-1/2
// dx_j = r * w_j * dy_j - x_j * r^3 / C * sum_k(dy_k w_k x_k);  dw_j = sum_rows dy_j x_j r
void RmsNormBackward(float* dx, float* dw, const float* dy, const float* x, const float* w,
                     int64_t n, int64_t c, float eps, float offset) {
  const int threads = NumThreads();
  std::vector<float> partial(static_cast<size_t>(threads) * c, 0.0f);
  std::vector<char> used(threads, 0);
  ParallelFor(n, 16, [&](int64_t b, int64_t e) {
    const int tid = omp_get_thread_num();
    used[tid] = 1;
    float* dwp = partial.data() + static_cast<size_t>(tid) * c;
    for (int64_t i = b; i < e; ++i) {
      const float* xr = x + i * c;
      const float* dyr = dy + i * c;
      float* dxr = dx + i * c;
      float ss = 0.0f, dot = 0.0f;
#pragma omp simd reduction(+ : ss, dot)
      for (int64_t j = 0; j < c; ++j) {
        ss += xr[j] * xr[j];
        dot += dyr[j] * (offset + w[j]) * xr[j];
      }
      const float r = 1.0f / std::sqrt(ss / static_cast<float>(c) + eps);
      const float k = dot * r * r * r / static_cast<float>(c);
#pragma omp simd
      for (int64_t j = 0; j < c; ++j) {
        dxr[j] = r * (offset + w[j]) * dyr[j] - xr[j] * k;
        dwp[j] += dyr[j] * xr[j] * r;
      }
    }
  });
  std::memset(dw, 0, static_cast<size_t>(c) * sizeof(float));
  for (int t = 0; t < threads; ++t) {
    if (!used[t]) continue;
    const float* p = partial.data() + static_cast<size_t>(t) * c;
    for (int64_t j = 0; j < c; ++j) dw[j] += p[j];
  }
}

}  // namespace moreh::kernels::cpu
