// FlagNonFinite: a grid-stride scan for inf and NaN (the loss scaler's overflow check).
// SumOfSquares: a grid-stride f64 sum of squares, one atomic add per block (the clipping norm).
// SumMiddle: out[o, i] = sum over r of x[o, r, i]. Two shapes of work: with a wide inner dimension
// one thread per output walks r (reads coalesced across i); with a narrow one (a row sum) one block
// per output reduces r across its threads.
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/cuda_kernels.h"

namespace moreh::kernels::cuda {
namespace {

constexpr int kThreads = 256;

template <typename T>
__global__ void SumColumnsKernel(T* out, const T* x, int64_t outer, int64_t r, int64_t inner) {
  const int64_t n = outer * inner;
  for (int64_t idx = GlobalThread(); idx < n; idx += GridStride()) {
    const int64_t o = idx / inner, i = idx % inner;
    const T* p = x + o * r * inner + i;
    float s = 0.0f;
    for (int64_t k = 0; k < r; ++k) s += ToF32(p[k * inner]);
    out[idx] = FromF32<T>(s);
  }
}

template <typename T>
__global__ void SumRowsKernel(T* out, const T* x, int64_t outer, int64_t r, int64_t inner) {
  const int64_t n = outer * inner;
  for (int64_t idx = blockIdx.x; idx < n; idx += gridDim.x) {  // uniform across the block
    const int64_t o = idx / inner, i = idx % inner;
    const T* p = x + o * r * inner + i;
    float s = 0.0f;
    for (int64_t k = threadIdx.x; k < r; k += blockDim.x) s += ToF32(p[k * inner]);
    s = BlockSum(s);
    if (threadIdx.x == 0) out[idx] = FromF32<T>(s);
  }
}

__global__ void FlagNonFiniteKernel(int* flag, const float* x, int64_t n) {
  bool bad = false;
  for (int64_t i = GlobalThread(); i < n; i += GridStride()) bad |= !isfinite(x[i]);
  if (bad) *flag = 1;  // every writer writes the same value
}

__global__ void SumOfSquaresKernel(double* out, const float* x, int64_t n) {
  __shared__ double partial[kThreads];
  double s = 0.0;
  for (int64_t i = GlobalThread(); i < n; i += GridStride()) {
    const double v = x[i];
    s += v * v;
  }
  partial[threadIdx.x] = s;
  __syncthreads();
  for (int k = blockDim.x / 2; k > 0; k /= 2) {
    if (threadIdx.x < k) partial[threadIdx.x] += partial[threadIdx.x + k];
    __syncthreads();
  }
  if (threadIdx.x == 0) atomicAdd(out, partial[0]);
}

}  // namespace

void SumOfSquares(double* out, const float* x, int64_t n, cudaStream_t stream) {
  if (n <= 0) return;
  MOREH_CUDA_LAUNCH(GridFor(n, kThreads), kThreads, 0, stream, SumOfSquaresKernel)(out, x, n);
  MOREH_CUDA_CHECK_LAUNCH();
}

void FlagNonFinite(int* flag, const float* x, int64_t n, cudaStream_t stream) {
  if (n <= 0) return;
  MOREH_CUDA_LAUNCH(GridFor(n, kThreads), kThreads, 0, stream, FlagNonFiniteKernel)(flag, x, n);
  MOREH_CUDA_CHECK_LAUNCH();
}

void SumMiddle(void* out, const void* x, int64_t outer, int64_t r, int64_t inner, DType dtype,
               cudaStream_t stream) {
  const int64_t n = outer * inner;
  if (n <= 0) return;
  DispatchFloat(dtype, "SumMiddle", [&](auto tag) {
    using T = decltype(tag);
    if (r == 0) {
      MOREH_CUDA_CHECK(cudaMemsetAsync(out, 0, static_cast<size_t>(n) * sizeof(T), stream));
    } else if (inner >= 32 || r < 64) {
      MOREH_CUDA_LAUNCH(GridFor(n, kThreads), kThreads, 0, stream, SumColumnsKernel<T>)
      (static_cast<T*>(out), static_cast<const T*>(x), outer, r, inner);
    } else {
      MOREH_CUDA_LAUNCH(GridFor(n, 1), kThreads, 0, stream, SumRowsKernel<T>)
      (static_cast<T*>(out), static_cast<const T*>(x), outer, r, inner);
    }
  });
  MOREH_CUDA_CHECK_LAUNCH();
}

}  // namespace moreh::kernels::cuda
