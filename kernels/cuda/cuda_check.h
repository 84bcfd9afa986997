// Error checks for CUDA calls and launches: every call's status is checked, and a failure
// throws moreh::Error naming the call, CUDA's message, and the source line.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace moreh::kernels::cuda {

[[noreturn]] void ThrowCudaError(cudaError_t e, const char* expr, const char* file, int line);

// Most blocks a grid-stride loop's grid has. The SIMT emulator (tests/cuda/simt) takes far fewer,
// so that its small cases run every grid-stride loop for several rounds.
#ifdef MOREH_CUDA_SIMT
inline constexpr int64_t kMaxGridBlocks = 61;
#else
inline constexpr int64_t kMaxGridBlocks = 65536;
#endif

// Grid size for a grid-stride loop over n elements with `threads` per block.
inline unsigned GridFor(int64_t n, int threads) {
  const int64_t blocks = (n + threads - 1) / threads;
  return static_cast<unsigned>(blocks < 1 ? 1
                                          : (blocks > kMaxGridBlocks ? kMaxGridBlocks : blocks));
}

}  // namespace moreh::kernels::cuda

#define MOREH_CUDA_CHECK(expr)                                                            \
  do {                                                                                    \
    const cudaError_t moreh_cuda_err_ = (expr);                                           \
    if (moreh_cuda_err_ != cudaSuccess) [[unlikely]]                                      \
      ::moreh::kernels::cuda::ThrowCudaError(moreh_cuda_err_, #expr, __FILE__, __LINE__); \
  } while (0)

// After a kernel launch: a bad configuration shows here, not at the next sync.
#define MOREH_CUDA_CHECK_LAUNCH() MOREH_CUDA_CHECK(cudaGetLastError())
