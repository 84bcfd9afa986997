// Embedding lookup (one block per token row, channels across threads) and its backward: a scatter
// add of the rows into an f32 gradient with atomics (tokens that repeat add into the same row).
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/cuda_kernels.h"

namespace moreh::kernels::cuda {
namespace {

constexpr int kThreads = 256;

template <typename T>
__global__ void EmbeddingForwardKernel(T* out, const T* weight, const int64_t* ids, int64_t n,
                                       int64_t c, int64_t v) {
  for (int64_t i = blockIdx.x; i < n; i += gridDim.x) {
    const int64_t id = ids[i];
    T* dst = out + i * c;
    if (id < 0 || id >= v) {  // the caller checks; never read outside the table
      for (int64_t j = threadIdx.x; j < c; j += blockDim.x)
        dst[j] = FromF32<T>(__int_as_float(0x7fc00000));
      continue;
    }
    const T* src = weight + id * c;
    for (int64_t j = threadIdx.x; j < c; j += blockDim.x) dst[j] = src[j];
  }
}

template <typename T>
__global__ void EmbeddingBackwardKernel(float* dweight, const T* dout, const int64_t* ids,
                                        int64_t n, int64_t c, int64_t v) {
  for (int64_t i = blockIdx.x; i < n; i += gridDim.x) {
    const int64_t id = ids[i];
    if (id < 0 || id >= v) continue;
    float* dst = dweight + id * c;
    const T* src = dout + i * c;
    for (int64_t j = threadIdx.x; j < c; j += blockDim.x) atomicAdd(dst + j, ToF32(src[j]));
  }
}

}  // namespace

void EmbeddingForward(void* out, const void* weight, const int64_t* ids, int64_t n, int64_t c,
                      int64_t v, DType dtype, cudaStream_t stream) {
  if (n <= 0 || c <= 0) return;
  DispatchFloat(dtype, "EmbeddingForward", [&](auto tag) {
    using T = decltype(tag);
    MOREH_CUDA_LAUNCH(GridFor(n, 1), kThreads, 0, stream, EmbeddingForwardKernel<T>)
    (static_cast<T*>(out), static_cast<const T*>(weight), ids, n, c, v);
  });
  MOREH_CUDA_CHECK_LAUNCH();
}

void EmbeddingBackward(float* dweight, const void* dout, const int64_t* ids, int64_t n, int64_t c,
                       int64_t v, DType dtype, cudaStream_t stream) {
  MOREH_CHECK(IsFloating(dtype), "cuda::EmbeddingBackward: dtype {}", DTypeName(dtype));
  MOREH_CUDA_CHECK(cudaMemsetAsync(dweight, 0, static_cast<size_t>(v * c) * sizeof(float), stream));
  if (n <= 0 || c <= 0) return;
  DispatchFloat(dtype, "EmbeddingBackward", [&](auto tag) {
    using T = decltype(tag);
    MOREH_CUDA_LAUNCH(GridFor(n, 1), kThreads, 0, stream, EmbeddingBackwardKernel<T>)
    (dweight, static_cast<const T*>(dout), ids, n, c, v);
  });
  MOREH_CUDA_CHECK_LAUNCH();
}

}  // namespace moreh::kernels::cuda
