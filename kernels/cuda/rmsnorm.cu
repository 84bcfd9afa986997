// RMSNorm over the last dimension, statistics in f32: one block per row. The backward's weight
// gradient is summed per block in shared memory (each thread owns its columns, so no conflicts)
// and added into dw once per block.
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/cuda_kernels.h"

namespace moreh::kernels::cuda {
namespace {

constexpr int kThreads = 256;
// Columns whose dw partial sums fit the default 48 KiB of shared memory; wider rows add straight
// into dw with atomics.
constexpr int64_t kMaxSharedColumns = 48 * 1024 / sizeof(float) - 64;

template <typename T>
__global__ void RmsNormForwardKernel(T* y, const T* x, const T* w, int64_t n, int64_t c,
                                     float eps) {
  for (int64_t row = blockIdx.x; row < n; row += gridDim.x) {
    const T* xr = x + row * c;
    float ss = 0.0f;
    for (int64_t j = threadIdx.x; j < c; j += blockDim.x) {
      const float v = ToF32(xr[j]);
      ss += v * v;
    }
    ss = BlockSum(ss);
    const float r = 1.0f / sqrtf(ss / static_cast<float>(c) + eps);
    T* yr = y + row * c;
    for (int64_t j = threadIdx.x; j < c; j += blockDim.x) {
      yr[j] = FromF32<T>(ToF32(xr[j]) * r * ToF32(w[j]));
    }
  }
}

// dx_j = r * w_j * dy_j - x_j * r^3 / C * sum_k(dy_k w_k x_k);  dw_j = sum_rows dy_j x_j r
template <typename T>
__global__ void RmsNormBackwardKernel(T* dx, float* dw, const T* dy, const T* x, const T* w,
                                      int64_t n, int64_t c, float eps, bool shared_dw) {
  extern __shared__ float dw_part[];
  if (shared_dw) {
    for (int64_t j = threadIdx.x; j < c; j += blockDim.x) dw_part[j] = 0.0f;
  }
  for (int64_t row = blockIdx.x; row < n; row += gridDim.x) {
    const T* xr = x + row * c;
    const T* dyr = dy + row * c;
    float ss = 0.0f, dot = 0.0f;
    for (int64_t j = threadIdx.x; j < c; j += blockDim.x) {
      const float xv = ToF32(xr[j]);
      ss += xv * xv;
      dot += ToF32(dyr[j]) * ToF32(w[j]) * xv;
    }
    ss = BlockSum(ss);
    dot = BlockSum(dot);
    const float r = 1.0f / sqrtf(ss / static_cast<float>(c) + eps);
    const float k = dot * r * r * r / static_cast<float>(c);
    T* dxr = dx + row * c;
    for (int64_t j = threadIdx.x; j < c; j += blockDim.x) {
      const float xv = ToF32(xr[j]), dyv = ToF32(dyr[j]);
      dxr[j] = FromF32<T>(r * ToF32(w[j]) * dyv - xv * k);
      if (shared_dw) {
        dw_part[j] += dyv * xv * r;
      } else {
        atomicAdd(dw + j, dyv * xv * r);
      }
    }
  }
  if (shared_dw) {
    for (int64_t j = threadIdx.x; j < c; j += blockDim.x) atomicAdd(dw + j, dw_part[j]);
  }
}

int SmCount() {
  int dev = 0, sms = 0;
  MOREH_CUDA_CHECK(cudaGetDevice(&dev));
  MOREH_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
  return sms;
}

}  // namespace

void RmsNormForward(void* y, const void* x, const void* w, int64_t n, int64_t c, float eps,
                    DType dtype, cudaStream_t stream) {
  if (n <= 0 || c <= 0) return;
  DispatchFloat(dtype, "RmsNormForward", [&](auto tag) {
    using T = decltype(tag);
    RmsNormForwardKernel<T><<<GridFor(n, 1), kThreads, 0, stream>>>(
        static_cast<T*>(y), static_cast<const T*>(x), static_cast<const T*>(w), n, c, eps);
  });
  MOREH_CUDA_CHECK_LAUNCH();
}

void RmsNormBackward(void* dx, float* dw, const void* dy, const void* x, const void* w, int64_t n,
                     int64_t c, float eps, DType dtype, cudaStream_t stream) {
  MOREH_CHECK(IsFloating(dtype), "cuda::RmsNormBackward: dtype {}", DTypeName(dtype));
  if (c <= 0) return;
  MOREH_CUDA_CHECK(cudaMemsetAsync(dw, 0, static_cast<size_t>(c) * sizeof(float), stream));
  if (n <= 0) return;
  // A few blocks per multiprocessor, each summing many rows: dw is added into once per block.
  const int64_t blocks = std::min<int64_t>(n, 4 * static_cast<int64_t>(SmCount()));
  const bool shared_dw = c <= kMaxSharedColumns;
  const size_t smem = shared_dw ? static_cast<size_t>(c) * sizeof(float) : 0;
  DispatchFloat(dtype, "RmsNormBackward", [&](auto tag) {
    using T = decltype(tag);
    RmsNormBackwardKernel<T><<<static_cast<unsigned>(blocks), kThreads, smem, stream>>>(
        static_cast<T*>(dx), dw, static_cast<const T*>(dy), static_cast<const T*>(x),
        static_cast<const T*>(w), n, c, eps, shared_dw);
  });
  MOREH_CUDA_CHECK_LAUNCH();
}

}  // namespace moreh::kernels::cuda
