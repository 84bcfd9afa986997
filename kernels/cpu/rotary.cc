// Rotary position embedding, Hugging Face convention: for i < D/2, with angle = pos * inv_freq[i],
//   y[i]       = x[i] cos - x[i + D/2] sin
//   y[i + D/2] = x[i + D/2] cos + x[i] sin
// inv_freq[i] = 1 / theta^(2i/D) and pos * inv_freq computed in f32, as transformers does.
#include <cmath>
#include <vector>

#include "kernels/cpu/cpu_kernels.h"
#include "runtime/core/parallel.h"

namespace moreh::kernels::cpu {

void RotaryForward(float* y, const float* x, int64_t b, int64_t t, int64_t h, int64_t d,
                   double theta, int64_t position_offset, bool inverse) {
  const int64_t half = d / 2;
  std::vector<float> inv_freq(half);
  for (int64_t i = 0; i < half; ++i) {
    const float expo = static_cast<float>(2 * i) / static_cast<float>(d);
    inv_freq[i] = 1.0f / std::pow(static_cast<float>(theta), expo);
  }
  // cos/sin table [T, D/2]: small (T * D floats) and shared by every batch row and head.
  std::vector<float> cos_t(t * half), sin_t(t * half);
  ParallelFor(t, 16, [&](int64_t s, int64_t e) {
    for (int64_t p = s; p < e; ++p) {
      const float pos = static_cast<float>(p + position_offset);
      for (int64_t i = 0; i < half; ++i) {
        const float ang = pos * inv_freq[i];
        cos_t[p * half + i] = std::cos(ang);
        sin_t[p * half + i] = inverse ? -std::sin(ang) : std::sin(ang);
      }
    }
  });
  ParallelFor(b * t, 4, [&](int64_t s, int64_t e) {
    for (int64_t bt = s; bt < e; ++bt) {
      const int64_t p = bt % t;
      const float* c = cos_t.data() + p * half;
      const float* sn = sin_t.data() + p * half;
      for (int64_t hh = 0; hh < h; ++hh) {
        const float* xr = x + (bt * h + hh) * d;
        float* yr = y + (bt * h + hh) * d;
#pragma omp simd
        for (int64_t i = 0; i < half; ++i) {
          const float x1 = xr[i], x2 = xr[i + half];
          yr[i] = x1 * c[i] - x2 * sn[i];
          yr[i + half] = x2 * c[i] + x1 * sn[i];
        }
      }
    }
  });
}

}  // namespace moreh::kernels::cpu
