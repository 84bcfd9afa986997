// The tensor-core attention kernels (attention_tc.cu), behind AttentionForward/AttentionBackward
// (attention.cu). Internal to kernels/cuda.
#pragma once

#include <cuda_runtime_api.h>

#include <initializer_list>

#include "kernels/cuda/cuda_kernels.h"

namespace moreh::kernels::cuda {

// bf16, head dim 64 or 128, every pointer 16-byte aligned, and enough shared memory per block on
// the current GPU.
bool TensorCoreAttentionSupported(const AttentionShape& sh, DType dtype,
                                  std::initializer_list<const void*> ptrs);
// MOREH_CUDA_ATTENTION=simple: the CUDA-core kernels everywhere.
bool TensorCoreAttentionDisabled();
void AttentionForwardTensorCores(void* out, float* lse, const void* q, const void* k, const void* v,
                                 const int64_t* key_mask, const AttentionShape& sh,
                                 cudaStream_t stream);
void AttentionBackwardTensorCores(void* dq, void* dk, void* dv, const void* dout, const void* q,
                                  const void* k, const void* v, const void* out, const float* lse,
                                  const int64_t* key_mask, const AttentionShape& sh,
                                  cudaStream_t stream);

}  // namespace moreh::kernels::cuda
