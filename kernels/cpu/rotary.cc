// Rotary position embedding, Hugging Face convention: for i < D/2, with angle = pos * inv_freq[i],
//   y[i]       = x[i] cos - x[i + D/2] sin
//   y[i + D/2] = x[i + D/2] cos + x[i] sin
// inv_freq[i] = 1 / theta^(2i/D) (scaled: RopeInvFreq) and pos * inv_freq computed in f32, as
// transformers does.
#include <cmath>
#include <vector>

#include "kernels/cpu/cpu_kernels.h"
#include "runtime/core/parallel.h"

namespace moreh::kernels::cpu {

std::vector<float> RopeInvFreq(int64_t d, const RopeParams& p) {
  const int64_t half = d / 2;
  std::vector<float> inv(static_cast<size_t>(half));
  for (int64_t i = 0; i < half; ++i) {
    const float expo = static_cast<float>(2 * i) / static_cast<float>(d);
    inv[i] = 1.0f / std::pow(static_cast<float>(p.theta), expo);
  }
  const float factor = static_cast<float>(p.factor);
  if (p.type == RopeParams::kLinear) {
    for (float& f : inv) f /= factor;
  } else if (p.type == RopeParams::kLlama3) {
    // _compute_llama3_parameters: f32 tensors, Python floats for the constants.
    const double old = static_cast<double>(p.original_max_position);
    const float low_wavelen = static_cast<float>(old / p.low_freq_factor);
    const float high_wavelen = static_cast<float>(old / p.high_freq_factor);
    const float two_pi = static_cast<float>(2 * M_PI), old_f = static_cast<float>(old);
    const float low = static_cast<float>(p.low_freq_factor);
    const float span = static_cast<float>(p.high_freq_factor - p.low_freq_factor);
    for (float& f : inv) {
      const float wavelen = two_pi / f;
      const float scaled = wavelen > low_wavelen ? f / factor : f;
      const float smooth = (old_f / wavelen - low) / span;
      const float smoothed = (1 - smooth) * scaled / factor + smooth * scaled;
      const bool medium = !(wavelen < high_wavelen) && !(wavelen > low_wavelen);
      f = medium ? smoothed : scaled;
    }
  }
  return inv;
}

void RotaryForward(float* y, const float* x, int64_t b, int64_t t, int64_t h, int64_t d,
                   const float* inv_freq, int64_t position_offset, bool inverse) {
  const int64_t half = d / 2;
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
