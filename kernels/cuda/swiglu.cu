// SwiGLU: y = silu(gate) * up, silu(g) = g * sigmoid(g); the backward in one pass.
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/cuda_kernels.h"

namespace moreh::kernels::cuda {
namespace {

constexpr int kThreads = 256;

__device__ __forceinline__ float Sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }

template <typename T>
__global__ void SwiGluForwardKernel(T* y, const T* gate, const T* up, int64_t n) {
  for (int64_t i = GlobalThread(); i < n; i += GridStride()) {
    const float g = ToF32(gate[i]);
    y[i] = FromF32<T>(g * Sigmoid(g) * ToF32(up[i]));
  }
}

// dup = dy * silu(g); dgate = dy * up * s * (1 + g * (1 - s)), s = sigmoid(g)
template <typename T>
__global__ void SwiGluBackwardKernel(T* dgate, T* dup, const T* dy, const T* gate, const T* up,
                                     int64_t n) {
  for (int64_t i = GlobalThread(); i < n; i += GridStride()) {
    const float g = ToF32(gate[i]), s = Sigmoid(g), d = ToF32(dy[i]);
    dup[i] = FromF32<T>(d * g * s);
    dgate[i] = FromF32<T>(d * ToF32(up[i]) * s * (1.0f + g * (1.0f - s)));
  }
}

}  // namespace

void SwiGluForward(void* y, const void* gate, const void* up, int64_t n, DType dtype,
                   cudaStream_t stream) {
  if (n <= 0) return;
  DispatchFloat(dtype, "SwiGluForward", [&](auto tag) {
    using T = decltype(tag);
    SwiGluForwardKernel<T><<<GridFor(n, kThreads), kThreads, 0, stream>>>(
        static_cast<T*>(y), static_cast<const T*>(gate), static_cast<const T*>(up), n);
  });
  MOREH_CUDA_CHECK_LAUNCH();
}

void SwiGluBackward(void* dgate, void* dup, const void* dy, const void* gate, const void* up,
                    int64_t n, DType dtype, cudaStream_t stream) {
  if (n <= 0) return;
  DispatchFloat(dtype, "SwiGluBackward", [&](auto tag) {
    using T = decltype(tag);
    SwiGluBackwardKernel<T><<<GridFor(n, kThreads), kThreads, 0, stream>>>(
        static_cast<T*>(dgate), static_cast<T*>(dup), static_cast<const T*>(dy),
        static_cast<const T*>(gate), static_cast<const T*>(up), n);
  });
  MOREH_CUDA_CHECK_LAUNCH();
}

}  // namespace moreh::kernels::cuda
