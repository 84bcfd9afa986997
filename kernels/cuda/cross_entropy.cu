// Cross-entropy fused with log-softmax: one block per row reads the row once with an online max
// (each thread keeps a running max and a sum rescaled when the max moves; the block merges them).
// The probability matrix is never stored: the backward recomputes each probability from the
// logits and the saved log-sum-exp and writes the gradient in the logits' dtype.
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/cuda_kernels.h"

namespace moreh::kernels::cuda {
namespace {

constexpr int kThreads = 256;

// Merges (m2, s2) into (m, s): sums of exp(x - m) over two sets of values.
__device__ __forceinline__ void MergeOnline(float& m, float& s, float m2, float s2) {
  const float mx = fmaxf(m, m2);
  if (mx == kNegInf) return;  // both empty
  s = s * expf(m - mx) + s2 * expf(m2 - mx);
  m = mx;
}

template <typename T>
__global__ void CrossEntropyForwardKernel(float* lse, float* row_loss, const T* logits,
                                          const int64_t* labels, int64_t n, int64_t v,
                                          int64_t ignore_index) {
  __shared__ float ms[32], ss[32];
  for (int64_t row = blockIdx.x; row < n; row += gridDim.x) {
    const T* x = logits + row * v;
    float m = kNegInf, s = 0.0f;
    for (int64_t j = threadIdx.x; j < v; j += blockDim.x) {
      const float xv = ToF32(x[j]);
      if (xv == kNegInf) continue;  // contributes exp(-inf) = 0
      if (xv > m) {
        s = s * expf(m - xv) + 1.0f;  // expf(-inf) = 0 on the first value
        m = xv;
      } else {
        s += expf(xv - m);
      }
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
      const float m2 = __shfl_xor_sync(0xffffffffu, m, o);
      const float s2 = __shfl_xor_sync(0xffffffffu, s, o);
      MergeOnline(m, s, m2, s2);
    }
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    __syncthreads();  // the previous row's readers are done
    if (lane == 0) {
      ms[warp] = m;
      ss[warp] = s;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      float bm = ms[0], bs = ss[0];
      for (int w = 1; w < warps; ++w) MergeOnline(bm, bs, ms[w], ss[w]);
      const float l = bm + logf(bs);
      lse[row] = l;
      const int64_t label = labels[row];
      float loss = 0.0f;
      if (label != ignore_index) {
        loss = (label >= 0 && label < v) ? l - ToF32(x[label]) : __int_as_float(0x7fc00000);
      }
      row_loss[row] = loss;
    }
  }
}

// One block: the sum of row losses and the count, in f64 and a fixed order (repeatable), and the
// loss (the sum, or the mean over counted rows).
__global__ void SumLossKernel(float* loss, double* sum_count, const float* row_loss,
                              const int64_t* labels, int64_t n, int64_t ignore_index, bool mean) {
  __shared__ double sum_part[kThreads], count_part[kThreads];
  double sum = 0.0, count = 0.0;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
    sum += row_loss[i];
    count += labels[i] != ignore_index ? 1.0 : 0.0;
  }
  sum_part[threadIdx.x] = sum;
  count_part[threadIdx.x] = count;
  __syncthreads();
  for (int stride = kThreads / 2; stride > 0; stride >>= 1) {
    if (threadIdx.x < stride) {
      sum_part[threadIdx.x] += sum_part[threadIdx.x + stride];
      count_part[threadIdx.x] += count_part[threadIdx.x + stride];
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    sum_count[0] = sum_part[0];
    sum_count[1] = count_part[0];
    if (loss != nullptr) {
      loss[0] = !mean               ? static_cast<float>(sum_part[0])
                : count_part[0] > 0 ? static_cast<float>(sum_part[0] / count_part[0])
                                    : __int_as_float(0x7fc00000);
    }
  }
}

// One block: scale[0] = grad_scale * (*dloss) / (the number of counted rows, with mean).
__global__ void GradScaleKernel(float* scale, const int64_t* labels, int64_t n,
                                int64_t ignore_index, float grad_scale, const float* dloss,
                                bool mean) {
  float count = 0.0f;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) count += labels[i] != ignore_index;
  count = BlockSum(count);
  if (threadIdx.x == 0) {
    float s = grad_scale * (dloss ? *dloss : 1.0f);
    if (mean) s = count > 0 ? s / count : 0.0f;
    scale[0] = s;
  }
}

template <typename T>
__global__ void CrossEntropyBackwardKernel(T* dlogits, const T* logits, const int64_t* labels,
                                           const float* lse, int64_t n, int64_t v,
                                           int64_t ignore_index, const float* scale_ptr) {
  const float scale = *scale_ptr;
  for (int64_t row = blockIdx.x; row < n; row += gridDim.x) {
    const int64_t label = labels[row];
    T* d = dlogits + row * v;
    if (label == ignore_index) {
      for (int64_t j = threadIdx.x; j < v; j += blockDim.x) d[j] = FromF32<T>(0.0f);
      continue;
    }
    const T* x = logits + row * v;
    const float l = lse[row];
    for (int64_t j = threadIdx.x; j < v; j += blockDim.x) {
      const float p = expf(ToF32(x[j]) - l);
      d[j] = FromF32<T>((j == label ? p - 1.0f : p) * scale);
    }
  }
}

}  // namespace

void CrossEntropyForward(float* loss, float* lse, float* row_loss, double* sum_count,
                         const void* logits, const int64_t* labels, int64_t n, int64_t v,
                         int64_t ignore_index, bool mean, DType dtype, cudaStream_t stream) {
  MOREH_CHECK(v > 0, "cuda::CrossEntropyForward: {} classes", v);
  if (n > 0) {
    DispatchFloat(dtype, "CrossEntropyForward", [&](auto tag) {
      using T = decltype(tag);
      MOREH_CUDA_LAUNCH(GridFor(n, 1), kThreads, 0, stream, CrossEntropyForwardKernel<T>)
      (lse, row_loss, static_cast<const T*>(logits), labels, n, v, ignore_index);
    });
    MOREH_CUDA_CHECK_LAUNCH();
  }
  MOREH_CUDA_LAUNCH(1, kThreads, 0, stream, SumLossKernel)
  (loss, sum_count, row_loss, labels, n, ignore_index, mean);
  MOREH_CUDA_CHECK_LAUNCH();
}

void CrossEntropyBackward(void* dlogits, const void* logits, const int64_t* labels,
                          const float* lse, int64_t n, int64_t v, int64_t ignore_index,
                          float grad_scale, const float* dloss, bool mean, float* scratch,
                          DType dtype, cudaStream_t stream) {
  MOREH_CHECK(IsFloating(dtype), "cuda::CrossEntropyBackward: dtype {}", DTypeName(dtype));
  if (n <= 0 || v <= 0) return;
  MOREH_CUDA_LAUNCH(1, kThreads, 0, stream, GradScaleKernel)
  (scratch, labels, n, ignore_index, grad_scale, dloss, mean);
  MOREH_CUDA_CHECK_LAUNCH();
  DispatchFloat(dtype, "CrossEntropyBackward", [&](auto tag) {
    using T = decltype(tag);
    MOREH_CUDA_LAUNCH(GridFor(n, 1), kThreads, 0, stream, CrossEntropyBackwardKernel<T>)
    (static_cast<T*>(dlogits), static_cast<const T*>(logits), labels, lse, n, v, ignore_index,
     scratch);
  });
  MOREH_CUDA_CHECK_LAUNCH();
}

}  // namespace moreh::kernels::cuda
