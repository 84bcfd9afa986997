#include "kernels/cuda/cuda_check.h"

#include <cuda_runtime_api.h>

#include "runtime/core/error.h"

namespace moreh::kernels::cuda {

void ThrowCudaError(cudaError_t e, const char* expr, const char* file, int line) {
  throw Error(fmt::format("CUDA error {} ({}): {} in {} at {}:{}", static_cast<int>(e),
                          cudaGetErrorName(e), cudaGetErrorString(e), expr, file, line));
}

}  // namespace moreh::kernels::cuda
