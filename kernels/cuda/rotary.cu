// Rotary position embedding, Hugging Face rotate_half convention (see kernels/cpu/rotary.cc): one
// thread per rotated pair; inv_freq and the angle in f32 as transformers computes them.
#include <cmath>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/cuda_kernels.h"

namespace moreh::kernels::cuda {
namespace {

constexpr int kThreads = 256;

// inv_freq, computed on the host by the CPU's RopeInvFreq (the device's powf may differ by an ulp,
// which at positions in the thousands moves the angle by 1e-4 rad).
constexpr int kMaxHalf = 256;
struct InvFreq {
  float v[kMaxHalf];
};

template <typename T>
__global__ void RotaryKernel(T* y, const T* x, int64_t rows, int64_t t, int64_t h, int64_t d,
                             InvFreq inv, int64_t position_offset, bool inverse) {
  const int64_t half = d / 2, n = rows * half;  // rows = B * T * H
  for (int64_t idx = GlobalThread(); idx < n; idx += GridStride()) {
    const int64_t i = idx % half, row = idx / half;
    const int64_t p = (row / h) % t;
    const float ang = static_cast<float>(p + position_offset) * inv.v[i];
    float sn, cs;
    sincosf(ang, &sn, &cs);
    if (inverse) sn = -sn;
    const T* xr = x + row * d;
    const float x1 = ToF32(xr[i]), x2 = ToF32(xr[i + half]);
    T* yr = y + row * d;
    yr[i] = FromF32<T>(x1 * cs - x2 * sn);
    yr[i + half] = FromF32<T>(x2 * cs + x1 * sn);
  }
}

}  // namespace

void RotaryForward(void* y, const void* x, int64_t b, int64_t t, int64_t h, int64_t d,
                   const float* inv_freq, int64_t position_offset, bool inverse, DType dtype,
                   cudaStream_t stream) {
  MOREH_CHECK(d % 2 == 0 && d / 2 <= kMaxHalf, "cuda::RotaryForward: head dim {} (even, <= {})", d,
              2 * kMaxHalf);
  InvFreq inv{};
  for (int64_t i = 0; i < d / 2; ++i) inv.v[i] = inv_freq[i];
  const int64_t n = b * t * h * (d / 2);
  if (n <= 0) return;
  DispatchFloat(dtype, "RotaryForward", [&](auto tag) {
    using T = decltype(tag);
    MOREH_CUDA_LAUNCH(GridFor(n, kThreads), kThreads, 0, stream, RotaryKernel<T>)
    (static_cast<T*>(y), static_cast<const T*>(x), b * t * h, t, h, d, inv, position_offset,
     inverse);
  });
  MOREH_CUDA_CHECK_LAUNCH();
}

}  // namespace moreh::kernels::cuda
