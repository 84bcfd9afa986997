// RMSNorm over the last dimension, statistics in f32: one block per row. The backward's weight
// gradient is summed per block in shared memory (each thread owns its columns, so no conflicts)
// and added into dw once per block.
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/vectorized.cuh"

namespace moreh::kernels::cuda {
namespace {

constexpr int kThreads = 256;
// Columns whose dw partial sums fit the default 48 KiB of shared memory; wider rows add straight
// into dw with atomics.
constexpr int64_t kMaxSharedColumns = 48 * 1024 / sizeof(float) - 64;

// Rows are read as N-element vectors (vectorized.cuh) when the launcher found every row aligned for
// them (c a multiple of N, base pointers aligned); N = 1 otherwise.
template <int N, typename T>
__global__ void RmsNormForwardKernel(T* y, const T* x, const T* w, int64_t n, int64_t c, float eps,
                                     float offset) {
  const int64_t vectors = c / N;
  for (int64_t row = blockIdx.x; row < n; row += gridDim.x) {
    const T* xr = x + row * c;
    float ss = 0.0f;
    for (int64_t j = threadIdx.x; j < vectors; j += blockDim.x) {
      const Vec<T, N> xv = LoadVec<N>(xr + j * N);
#pragma unroll
      for (int k = 0; k < N; ++k) {
        const float v = ToF32(xv.v[k]);
        ss += v * v;
      }
    }
    ss = BlockSum(ss);
    const float r = 1.0f / sqrtf(ss / static_cast<float>(c) + eps);
    T* yr = y + row * c;
    for (int64_t j = threadIdx.x; j < vectors; j += blockDim.x) {
      const Vec<T, N> xv = LoadVec<N>(xr + j * N), wv = LoadVec<N>(w + j * N);
      Vec<T, N> out;
#pragma unroll
      for (int k = 0; k < N; ++k) {
        out.v[k] = FromF32<T>(ToF32(xv.v[k]) * r * (offset + ToF32(wv.v[k])));
      }
      StoreVec<N>(yr + j * N, out);
    }
  }
}

// dx_j = r * w_j * dy_j - x_j * r^3 / C * sum_k(dy_k w_k x_k);  dw_j = sum_rows dy_j x_j r
template <int N, typename T>
__global__ void RmsNormBackwardKernel(T* dx, float* dw, const T* dy, const T* x, const T* w,
                                      int64_t n, int64_t c, float eps, float offset,
                                      bool shared_dw) {
  float* dw_part = DynamicShared<float>();
  const int64_t vectors = c / N;
  if (shared_dw) {
    for (int64_t j = threadIdx.x; j < c; j += blockDim.x) dw_part[j] = 0.0f;
  }
  // Each thread owns the columns of its vectors (here and in dw_part): no conflicts. The zeroing
  // above owns columns differently, so the first row waits for it (BlockSum synchronises).
  for (int64_t row = blockIdx.x; row < n; row += gridDim.x) {
    const T* xr = x + row * c;
    const T* dyr = dy + row * c;
    float ss = 0.0f, dot = 0.0f;
    for (int64_t j = threadIdx.x; j < vectors; j += blockDim.x) {
      const Vec<T, N> xv = LoadVec<N>(xr + j * N), dyv = LoadVec<N>(dyr + j * N),
                      wv = LoadVec<N>(w + j * N);
#pragma unroll
      for (int k = 0; k < N; ++k) {
        const float xk = ToF32(xv.v[k]);
        ss += xk * xk;
        dot += ToF32(dyv.v[k]) * (offset + ToF32(wv.v[k])) * xk;
      }
    }
    ss = BlockSum(ss);
    dot = BlockSum(dot);
    const float r = 1.0f / sqrtf(ss / static_cast<float>(c) + eps);
    const float kk = dot * r * r * r / static_cast<float>(c);
    T* dxr = dx + row * c;
    for (int64_t j = threadIdx.x; j < vectors; j += blockDim.x) {
      const Vec<T, N> xv = LoadVec<N>(xr + j * N), dyv = LoadVec<N>(dyr + j * N),
                      wv = LoadVec<N>(w + j * N);
      Vec<T, N> out;
      Vec<float, N> dwv;  // this row's dw terms; into dw_part as one vector (no bank conflicts)
#pragma unroll
      for (int k = 0; k < N; ++k) {
        const float xk = ToF32(xv.v[k]), dyk = ToF32(dyv.v[k]);
        out.v[k] = FromF32<T>(r * (offset + ToF32(wv.v[k])) * dyk - xk * kk);
        dwv.v[k] = dyk * xk * r;
      }
      StoreVec<N>(dxr + j * N, out);
      if (shared_dw) {
        Vec<float, N> part = LoadVec<N>(dw_part + j * N);
#pragma unroll
        for (int k = 0; k < N; ++k) part.v[k] += dwv.v[k];
        StoreVec<N>(dw_part + j * N, part);
      } else {
#pragma unroll
        for (int k = 0; k < N; ++k) atomicAdd(dw + j * N + k, dwv.v[k]);
      }
    }
  }
  __syncthreads();  // every thread's dw_part columns are final before any thread reads others'
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
                    DType dtype, cudaStream_t stream, float offset) {
  if (n <= 0 || c <= 0) return;
  DispatchFloat(dtype, "RmsNormForward", [&](auto tag) {
    using T = decltype(tag);
    constexpr int N = VecWidth(sizeof(T));
    T* yt = static_cast<T*>(y);
    const T *xt = static_cast<const T*>(x), *wt = static_cast<const T*>(w);
    if (c % N == 0 && VecAligned<N>(yt, xt, wt)) {
      MOREH_CUDA_LAUNCH(GridFor(n, 1), kThreads, 0, stream, RmsNormForwardKernel<N, T>)
      (yt, xt, wt, n, c, eps, offset);
    } else {
      MOREH_CUDA_LAUNCH(GridFor(n, 1), kThreads, 0, stream, RmsNormForwardKernel<1, T>)
      (yt, xt, wt, n, c, eps, offset);
    }
  });
  MOREH_CUDA_CHECK_LAUNCH();
}

void RmsNormBackward(void* dx, float* dw, const void* dy, const void* x, const void* w, int64_t n,
                     int64_t c, float eps, DType dtype, cudaStream_t stream, float offset) {
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
    constexpr int N = VecWidth(sizeof(T));
    T* dxt = static_cast<T*>(dx);
    const T *dyt = static_cast<const T*>(dy), *xt = static_cast<const T*>(x),
            *wt = static_cast<const T*>(w);
    const unsigned grid = static_cast<unsigned>(blocks);
    if (c % N == 0 && VecAligned<N>(dxt, dyt, xt, wt)) {
      MOREH_CUDA_LAUNCH(grid, kThreads, smem, stream, RmsNormBackwardKernel<N, T>)
      (dxt, dw, dyt, xt, wt, n, c, eps, offset, shared_dw);
    } else {
      MOREH_CUDA_LAUNCH(grid, kThreads, smem, stream, RmsNormBackwardKernel<1, T>)
      (dxt, dw, dyt, xt, wt, n, c, eps, offset, shared_dw);
    }
  });
  MOREH_CUDA_CHECK_LAUNCH();
}

}  // namespace moreh::kernels::cuda
