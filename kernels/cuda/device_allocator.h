// The caching device allocator: a runtime::Allocator (capacity, live and peak bytes, the same
// OutOfMemoryError, freed blocks cached by exact size) whose memory comes from cudaMalloc on one
// GPU. Every freed block is cached (cudaFree would wait for the whole device), and the cache is
// released before an allocation fails.
//
// Blocks are reused in host order: correct for work queued on one stream per device (the runtime's
// compute stream), since a reused block's next kernel queues after the last kernel that used it.
// A buffer also used on another stream must be waited for (an event) before it is freed.
#pragma once

#include "runtime/core/allocator.h"

namespace moreh::kernels::cuda {

// The allocator of GPU `device` ("cuda:N"), made on first use and never destroyed. Its capacity is
// MOREH_CUDA_DEVICE_MEMORY (bytes, or with a K/M/G/T suffix) when set, else the memory the GPU
// had free at that moment less 256 MiB for the CUDA context's own needs (cuBLAS workspaces,
// kernels' code). Throws moreh::Error when `device` does not exist.
runtime::Allocator* CudaAllocator(int device);

}  // namespace moreh::kernels::cuda
