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
// had free at that moment less what the process needs beside it: 256 MiB for the CUDA context
// (cuBLASLt workspaces, kernels' code) and 2 GiB for NCCL's buffers (a pipeline stage joins up to
// six communicators: data and tensor parallel, two links to each neighbour; each takes up to a
// few hundred MiB on a GPU with many channels), at most a quarter of the free memory in all.
// Throws moreh::Error when `device` does not exist.
runtime::Allocator* CudaAllocator(int device);

}  // namespace moreh::kernels::cuda
