// SwiGLU: y = silu(gate) * up, silu(g) = g * sigmoid(g); the backward in one pass. Vectorised
// (vectorized.cuh): both directions are pure memory traffic at the FFN's width.
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/vectorized.cuh"

namespace moreh::kernels::cuda {
namespace {

__device__ __forceinline__ float Sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }

template <typename T>
struct SwiGluForwardF {
  T* y;
  const T* gate;
  const T* up;
  template <int N>
  __device__ void Apply(int64_t i) const {
    const Vec<T, N> g = LoadVec<N>(gate + i), u = LoadVec<N>(up + i);
    Vec<T, N> r;
#pragma unroll
    for (int k = 0; k < N; ++k) {
      const float gk = ToF32(g.v[k]);
      r.v[k] = FromF32<T>(gk * Sigmoid(gk) * ToF32(u.v[k]));
    }
    StoreVec<N>(y + i, r);
  }
};

// dup = dy * silu(g); dgate = dy * up * s * (1 + g * (1 - s)), s = sigmoid(g)
template <typename T>
struct SwiGluBackwardF {
  T* dgate;
  T* dup;
  const T* dy;
  const T* gate;
  const T* up;
  template <int N>
  __device__ void Apply(int64_t i) const {
    const Vec<T, N> g = LoadVec<N>(gate + i), u = LoadVec<N>(up + i), d = LoadVec<N>(dy + i);
    Vec<T, N> rg, ru;
#pragma unroll
    for (int k = 0; k < N; ++k) {
      const float gk = ToF32(g.v[k]), s = Sigmoid(gk), dk = ToF32(d.v[k]);
      ru.v[k] = FromF32<T>(dk * gk * s);
      rg.v[k] = FromF32<T>(dk * ToF32(u.v[k]) * s * (1.0f + gk * (1.0f - s)));
    }
    StoreVec<N>(dup + i, ru);
    StoreVec<N>(dgate + i, rg);
  }
};

}  // namespace

void SwiGluForward(void* y, const void* gate, const void* up, int64_t n, DType dtype,
                   cudaStream_t stream) {
  DispatchFloat(dtype, "SwiGluForward", [&](auto tag) {
    using T = decltype(tag);
    constexpr int N = VecWidth(sizeof(T));
    const SwiGluForwardF<T> f{static_cast<T*>(y), static_cast<const T*>(gate),
                              static_cast<const T*>(up)};
    LaunchVectorized<N>(f, n, VecAligned<N>(f.y, f.gate, f.up), stream);
  });
}

void SwiGluBackward(void* dgate, void* dup, const void* dy, const void* gate, const void* up,
                    int64_t n, DType dtype, cudaStream_t stream) {
  DispatchFloat(dtype, "SwiGluBackward", [&](auto tag) {
    using T = decltype(tag);
    constexpr int N = VecWidth(sizeof(T));
    const SwiGluBackwardF<T> f{static_cast<T*>(dgate), static_cast<T*>(dup),
                               static_cast<const T*>(dy), static_cast<const T*>(gate),
                               static_cast<const T*>(up)};
    LaunchVectorized<N>(f, n, VecAligned<N>(f.dgate, f.dup, f.dy, f.gate, f.up), stream);
  });
}

}  // namespace moreh::kernels::cuda
