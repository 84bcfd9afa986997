// Rotary position embedding, Hugging Face rotate_half convention (see kernels/cpu/rotary.cc): one
// thread per rotated pair; inv_freq and the angle in f32 as transformers computes them.
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/cuda_kernels.h"

namespace moreh::kernels::cuda {
namespace {

constexpr int kThreads = 256;

template <typename T>
__global__ void RotaryKernel(T* y, const T* x, int64_t rows, int64_t t, int64_t h, int64_t d,
                             float theta, int64_t position_offset, bool inverse) {
  const int64_t half = d / 2, n = rows * half;  // rows = B * T * H
  for (int64_t idx = GlobalThread(); idx < n; idx += GridStride()) {
    const int64_t i = idx % half, row = idx / half;
    const int64_t p = (row / h) % t;
    const float inv_freq = 1.0f / powf(theta, static_cast<float>(2 * i) / static_cast<float>(d));
    const float ang = static_cast<float>(p + position_offset) * inv_freq;
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

void RotaryForward(void* y, const void* x, int64_t b, int64_t t, int64_t h, int64_t d, double theta,
                   int64_t position_offset, bool inverse, DType dtype, cudaStream_t stream) {
  MOREH_CHECK(d % 2 == 0, "cuda::RotaryForward: head dim {} is odd", d);
  const int64_t n = b * t * h * (d / 2);
  if (n <= 0) return;
  DispatchFloat(dtype, "RotaryForward", [&](auto tag) {
    using T = decltype(tag);
    RotaryKernel<T><<<GridFor(n, kThreads), kThreads, 0, stream>>>(
        static_cast<T*>(y), static_cast<const T*>(x), b * t * h, t, h, d, static_cast<float>(theta),
        position_offset, inverse);
  });
  MOREH_CUDA_CHECK_LAUNCH();
}

}  // namespace moreh::kernels::cuda
