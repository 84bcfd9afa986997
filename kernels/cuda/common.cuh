// Device helpers shared by the kernel families: f32 conversion of each element type, warp and
// block reductions, and the dispatch from a runtime DType to a C++ element type.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <limits>

#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cuda/cuda_check.h"
#include "runtime/core/dtype.h"
#include "runtime/core/error.h"

// Launches a kernel: MOREH_CUDA_LAUNCH(grid, block, smem, stream, kernel)(args...) is
// kernel<<<grid, block, smem, stream>>>(args...), spelled so that the SIMT emulator
// (tests/cuda/simt) can run the same sources on a machine without a GPU.
#ifdef MOREH_CUDA_SIMT
#define MOREH_CUDA_LAUNCH(grid, block, smem, stream, ...) \
  ::moreh::simt::MakeLauncher(grid, block, smem, stream, __VA_ARGS__, #__VA_ARGS__)
#else
#define MOREH_CUDA_LAUNCH(grid, block, smem, stream, ...) __VA_ARGS__<<<grid, block, smem, stream>>>
#endif

namespace moreh::kernels::cuda {

// The block's dynamic shared memory (the launch's smem bytes), 128-byte aligned.
template <typename T>
__device__ __forceinline__ T* DynamicShared() {
#ifdef MOREH_CUDA_SIMT
  return static_cast<T*>(::moreh::simt::DynamicShared());
#else
  extern __shared__ __align__(128) unsigned char moreh_dynamic_smem[];
  return reinterpret_cast<T*>(moreh_dynamic_smem);
#endif
}

__device__ __forceinline__ float ToF32(float x) { return x; }
__device__ __forceinline__ float ToF32(__nv_bfloat16 x) { return __bfloat162float(x); }
__device__ __forceinline__ float ToF32(__half x) { return __half2float(x); }

template <typename T>
__device__ __forceinline__ T FromF32(float x);
template <>
__device__ __forceinline__ float FromF32<float>(float x) {
  return x;
}
template <>
__device__ __forceinline__ __nv_bfloat16 FromF32<__nv_bfloat16>(float x) {
  return __float2bfloat16_rn(x);
}
template <>
__device__ __forceinline__ __half FromF32<__half>(float x) {
  return __float2half_rn(x);
}

inline constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// Index of this thread in a grid-stride loop, and the loop's step.
__device__ __forceinline__ int64_t GlobalThread() {
  return static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
}
__device__ __forceinline__ int64_t GridStride() {
  return static_cast<int64_t>(gridDim.x) * blockDim.x;
}

__device__ __forceinline__ float WarpSum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// Sum over the block; every thread gets the total. blockDim.x must be a multiple of 32 and every
// thread of the block must call it (it synchronises).
__device__ __forceinline__ float BlockSum(float v) {
  __shared__ float partial[32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  v = WarpSum(v);
  __syncthreads();  // an earlier call's readers are done with `partial`
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  return WarpSum(lane < warps ? partial[lane] : 0.0f);
}

// Attention (both implementations): whether query row i of batch row b sees key j (rows and keys
// past the ends see nothing).
__device__ __forceinline__ bool KeyVisible(const cpu::AttentionShape& sh, const int64_t* key_mask,
                                           int64_t b, int64_t i, int64_t j) {
  return i < sh.t && j < sh.s && (!sh.causal || j <= i) && (sh.window <= 0 || i - j < sh.window) &&
         (key_mask == nullptr || key_mask[b * sh.s + j] != 0);
}

// Gemma 2's score soft-capping: cap * tanh(s / cap) (s itself when sh.softcap is 0), and its
// derivative in terms of the capped score c: 1 - (c / cap)^2.
__device__ __forceinline__ float Cap(const cpu::AttentionShape& sh, float s) {
  return sh.softcap > 0.0f ? sh.softcap * tanhf(s / sh.softcap) : s;
}
__device__ __forceinline__ float CapGrad(const cpu::AttentionShape& sh, float c) {
  if (sh.softcap <= 0.0f) return 1.0f;
  const float t = c / sh.softcap;
  return 1.0f - t * t;
}

// Calls f(T{}) with T the element type of `dtype` (float, __nv_bfloat16, __half); other dtypes
// throw naming `what`.
template <typename F>
void DispatchFloat(DType dtype, const char* what, F&& f) {
  switch (dtype) {
    case DType::kF32:
      f(float{});
      return;
    case DType::kBF16:
      f(__nv_bfloat16{});
      return;
    case DType::kF16:
      f(__half{});
      return;
    default:
      throw Error(fmt::format("cuda::{}: dtype {} is not a floating type", what, DTypeName(dtype)));
  }
}

}  // namespace moreh::kernels::cuda
