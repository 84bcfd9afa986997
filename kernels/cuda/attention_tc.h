// The tensor-core attention kernels behind AttentionForward/AttentionBackward (attention.cu):
// attention_mma.cu (mma.sync, register-resident tiles, the default) and attention_tc.cu (WMMA,
// tiles through shared memory). Internal to kernels/cuda; included by .cu files only.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstdint>
#include <initializer_list>
#include <mutex>
#include <set>
#include <utility>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_kernels.h"

namespace moreh::kernels::cuda {

// bf16, head dim 64 or 128, every pointer 16-byte aligned, and enough shared memory per block on
// the current GPU for the implementation's kernels.
bool TensorCoreAttentionSupported(AttentionImpl impl, const AttentionShape& sh, DType dtype,
                                  std::initializer_list<const void*> ptrs);
// What kAuto runs, from MOREH_CUDA_ATTENTION (mma, the default; wmma; simple: the CUDA-core
// kernels everywhere). Read once; an unknown value throws naming the choices.
AttentionImpl DefaultAttentionImpl();

// attention_tc.cu (WMMA).
size_t WmmaAttentionSmemBytes(int64_t d);
void AttentionForwardTensorCores(void* out, float* lse, const void* q, const void* k, const void* v,
                                 const int64_t* key_mask, const AttentionShape& sh,
                                 cudaStream_t stream);
void AttentionBackwardTensorCores(void* dq, void* dk, void* dv, const void* dout, const void* q,
                                  const void* k, const void* v, const void* out, const float* lse,
                                  const int64_t* key_mask, float* drow, const AttentionShape& sh,
                                  cudaStream_t stream);

// attention_mma.cu (mma.sync).
size_t MmaAttentionSmemBytes(int64_t d);
void AttentionForwardMma(void* out, float* lse, const void* q, const void* k, const void* v,
                         const int64_t* key_mask, const AttentionShape& sh, cudaStream_t stream);
void AttentionBackwardMma(void* dq, void* dk, void* dv, const void* dout, const void* q,
                          const void* k, const void* v, const void* out, const float* lse,
                          const int64_t* key_mask, float* drow, const AttentionShape& sh,
                          cudaStream_t stream);

// The kernels of a tensor-core implementation (the same signatures in both), launched by
// LaunchAttentionForward/Backward (attention.cu) over query tiles x heads x batch (forward, dq)
// and key tiles x KV heads x batch (dk, dv), `rows` rows per tile, with `smem` bytes of dynamic
// shared memory each.
using AttentionForwardKernelFn = void (*)(__nv_bfloat16*, float*, const __nv_bfloat16*,
                                          const __nv_bfloat16*, const __nv_bfloat16*,
                                          const int64_t*, AttentionShape);
// The backward kernels' `drow` ([B, H, T] f32): dq writes dO . O of each query row there and
// dk/dv reads it (the mma kernels; the WMMA ones compute it where they need it and ignore it).
using AttentionDqKernelFn = void (*)(__nv_bfloat16*, const __nv_bfloat16*, const __nv_bfloat16*,
                                     const __nv_bfloat16*, const __nv_bfloat16*,
                                     const __nv_bfloat16*, const float*, const int64_t*, float*,
                                     AttentionShape);
using AttentionDkvKernelFn = void (*)(__nv_bfloat16*, __nv_bfloat16*, const __nv_bfloat16*,
                                      const __nv_bfloat16*, const __nv_bfloat16*,
                                      const __nv_bfloat16*, const __nv_bfloat16*, const float*,
                                      const int64_t*, const float*, AttentionShape);
void LaunchAttentionForward(AttentionForwardKernelFn kernel, size_t smem, int rows, int threads,
                            void* out, float* lse, const void* q, const void* k, const void* v,
                            const int64_t* key_mask, const AttentionShape& sh, cudaStream_t stream);
void LaunchAttentionBackward(AttentionDqKernelFn dq_kernel, size_t dq_smem,
                             AttentionDkvKernelFn dkv_kernel, size_t dkv_smem, int rows,
                             int threads, void* dq, void* dk, void* dv, const void* dout,
                             const void* q, const void* k, const void* v, const void* out,
                             const float* lse, const int64_t* key_mask, float* drow,
                             const AttentionShape& sh, cudaStream_t stream);

// Raises a kernel's dynamic shared-memory limit above the default 48 KiB, once per kernel and
// device (the attribute belongs to the current device).
template <typename K>
void AllowDynamicSmem(K kernel, size_t bytes) {
  int device = 0;
  MOREH_CUDA_CHECK(cudaGetDevice(&device));
  static std::mutex mu;
  static std::set<std::pair<const void*, int>> done;
  std::lock_guard<std::mutex> lock(mu);
  const auto key = std::make_pair(reinterpret_cast<const void*>(kernel), device);
  if (done.count(key)) return;
  MOREH_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                        static_cast<int>(bytes)));
  done.insert(key);
}

}  // namespace moreh::kernels::cuda
