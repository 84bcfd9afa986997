// CUDA device discovery: the first piece of the CUDA backend (kernels arrive with the [cuda]
// issue). Compiled whenever MOREH_ENABLE_CUDA is on, so the CUDA toolchain path of the build stays
// working.
#include <cuda_runtime.h>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/device_info.h"

namespace moreh::kernels::cuda {

int DeviceCount() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) return 0;
  return n;
}

void SetDevice(int i) { MOREH_CUDA_CHECK(cudaSetDevice(i)); }

int64_t DeviceMemoryBytes(int i) {
  cudaDeviceProp p;
  if (cudaGetDeviceProperties(&p, i) != cudaSuccess) return 0;
  return static_cast<int64_t>(p.totalGlobalMem);
}

std::string DeviceName(int i) {
  cudaDeviceProp p;
  if (cudaGetDeviceProperties(&p, i) != cudaSuccess) return "";
  return p.name;
}

}  // namespace moreh::kernels::cuda
