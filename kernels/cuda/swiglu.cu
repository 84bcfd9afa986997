// SwiGLU: y = silu(gate) * up, silu(g) = g * sigmoid(g); the backward in one pass. Vectorised
// (vectorized.cuh): both directions are pure memory traffic at the FFN's width.
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/vectorized.cuh"

namespace moreh::kernels::cuda {
namespace {

__device__ __forceinline__ float Sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }

// The gate's activation and its derivative: silu (SwiGLU) or gelu_tanh (GeGLU, Gemma).
template <bool kGelu>
__device__ __forceinline__ float Act(float g) {
  if constexpr (kGelu) {
    return 0.5f * g * (1.0f + tanhf(0.7978845608028654f * (g + 0.044715f * g * g * g)));
  } else {
    return g * Sigmoid(g);
  }
}
template <bool kGelu>
__device__ __forceinline__ float ActGrad(float g) {
  if constexpr (kGelu) {
    const float t = tanhf(0.7978845608028654f * (g + 0.044715f * g * g * g));
    return 0.5f * (1.0f + t) +
           0.5f * g * (1.0f - t * t) * 0.7978845608028654f * (1.0f + 3.0f * 0.044715f * g * g);
  } else {
    const float s = Sigmoid(g);
    return s * (1.0f + g * (1.0f - s));
  }
}

template <typename T, bool kGelu>
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
      r.v[k] = FromF32<T>(Act<kGelu>(ToF32(g.v[k])) * ToF32(u.v[k]));
    }
    StoreVec<N>(y + i, r);
  }
};

// dup = dy * silu(g); dgate = dy * up * s * (1 + g * (1 - s)), s = sigmoid(g)
template <typename T, bool kGelu>
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
      const float gk = ToF32(g.v[k]), dk = ToF32(d.v[k]);
      ru.v[k] = FromF32<T>(dk * Act<kGelu>(gk));
      rg.v[k] = FromF32<T>(dk * ToF32(u.v[k]) * ActGrad<kGelu>(gk));
    }
    StoreVec<N>(dup + i, ru);
    StoreVec<N>(dgate + i, rg);
  }
};

}  // namespace

void SwiGluForward(void* y, const void* gate, const void* up, int64_t n, DType dtype,
                   cudaStream_t stream, bool gelu) {
  DispatchFloat(dtype, "SwiGluForward", [&](auto tag) {
    using T = decltype(tag);
    constexpr int N = VecWidth(sizeof(T));
    auto launch = [&](auto f) {
      LaunchVectorized<N>(f, n, VecAligned<N>(f.y, f.gate, f.up), stream);
    };
    if (gelu) {
      launch(SwiGluForwardF<T, true>{static_cast<T*>(y), static_cast<const T*>(gate),
                                     static_cast<const T*>(up)});
    } else {
      launch(SwiGluForwardF<T, false>{static_cast<T*>(y), static_cast<const T*>(gate),
                                      static_cast<const T*>(up)});
    }
  });
}

void SwiGluBackward(void* dgate, void* dup, const void* dy, const void* gate, const void* up,
                    int64_t n, DType dtype, cudaStream_t stream, bool gelu) {
  DispatchFloat(dtype, "SwiGluBackward", [&](auto tag) {
    using T = decltype(tag);
    constexpr int N = VecWidth(sizeof(T));
    auto launch = [&](auto f) {
      LaunchVectorized<N>(f, n, VecAligned<N>(f.dgate, f.dup, f.dy, f.gate, f.up), stream);
    };
    if (gelu) {
      launch(SwiGluBackwardF<T, true>{static_cast<T*>(dgate), static_cast<T*>(dup),
                                      static_cast<const T*>(dy), static_cast<const T*>(gate),
                                      static_cast<const T*>(up)});
    } else {
      launch(SwiGluBackwardF<T, false>{static_cast<T*>(dgate), static_cast<T*>(dup),
                                       static_cast<const T*>(dy), static_cast<const T*>(gate),
                                       static_cast<const T*>(up)});
    }
  });
}

}  // namespace moreh::kernels::cuda
