// Vectorised elementwise loops for the memory-bound kernels. A scalar grid-stride loop over bf16
// keeps 2 bytes per thread in flight, far from what it takes to fill HBM (bandwidth x latency is
// megabytes); here each thread moves 16 bytes of the kernel's widest operand per access (8 bf16 or
// 4 f32 elements), as PyTorch's and llm.c's elementwise kernels do.
//
// A kernel's work is a functor F with `template <int N> __device__ void Apply(int64_t i) const`
// doing elements [i, i + N) with N-element loads and stores (LoadVec / StoreVec). The launcher
// runs Apply<kVec> over the whole vectors and Apply<1> over the tail, or Apply<1> everywhere when a
// pointer is not aligned for the vectors (a view into the middle of a buffer).
#pragma once

#include <cstdint>

#include "kernels/cuda/common.cuh"

namespace moreh::kernels::cuda {

// N elements of T, aligned as one access of N * sizeof(T) bytes.
template <typename T, int N>
struct alignas(sizeof(T) * N) Vec {
  T v[N];
};

template <int N, typename T>
__device__ __forceinline__ Vec<T, N> LoadVec(const T* p) {
  return *reinterpret_cast<const Vec<T, N>*>(p);
}

template <int N, typename T>
__device__ __forceinline__ void StoreVec(T* p, const Vec<T, N>& x) {
  *reinterpret_cast<Vec<T, N>*>(p) = x;
}

// Elements per vector for a kernel whose widest element type has `widest` bytes: 16 bytes of it.
constexpr int VecWidth(size_t widest) { return static_cast<int>(16 / widest); }

// Whether every pointer can be read and written as N-element vectors of its type.
template <int N, typename... T>
bool VecAligned(const T*... p) {
  return ((reinterpret_cast<uintptr_t>(p) % (sizeof(T) * N) == 0) && ...);
}

template <int N, typename F>
__global__ void __launch_bounds__(256) VectorizedKernel(F f, int64_t n) {
  const int64_t vectors = n / N;
  for (int64_t c = GlobalThread(); c < vectors; c += GridStride()) f.template Apply<N>(c * N);
  if constexpr (N > 1) {  // the last n % N (< N <= the first block's threads) elements
    const int64_t i = vectors * N + GlobalThread();
    if (i < n) f.template Apply<1>(i);
  }
}

// Runs f over elements [0, n): N-element vectors when `aligned` (every pointer f touches passes
// VecAligned<N>, and any index arithmetic of f keeps vectors whole), single elements otherwise.
template <int N, typename F>
void LaunchVectorized(const F& f, int64_t n, bool aligned, cudaStream_t stream) {
  if (n <= 0) return;
  constexpr int kThreads = 256;
  if (aligned && N > 1) {
    MOREH_CUDA_LAUNCH(GridFor((n + N - 1) / N, kThreads), kThreads, 0, stream,
                      VectorizedKernel<N, F>)
    (f, n);
  } else {
    MOREH_CUDA_LAUNCH(GridFor(n, kThreads), kThreads, 0, stream, VectorizedKernel<1, F>)(f, n);
  }
  MOREH_CUDA_CHECK_LAUNCH();
}

}  // namespace moreh::kernels::cuda
