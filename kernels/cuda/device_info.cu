// CUDA device discovery: the first piece of the CUDA backend (kernels arrive with the [cuda]
// issue). Compiled whenever MOREH_ENABLE_CUDA is on, so the CUDA toolchain path of the build stays
// working.
#include <cuda_runtime.h>
#include <dlfcn.h>

#include <cstdio>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/device_info.h"
#include "runtime/core/error.h"

namespace moreh::kernels::cuda {

int DeviceCount() {
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  if (e == cudaSuccess) return n;
  // No device, or no driver at all (the runtime says "insufficient driver" then too), is the
  // normal case on a build machine. Anything else (a driver older than this build's CUDA runtime,
  // a broken install) is said once, so a GPU machine that "has no GPU" says why.
  static const bool said = [e] {
    const bool no_driver =
        e == cudaErrorInsufficientDriver && dlopen("libcuda.so.1", RTLD_LAZY) == nullptr;
    if (e != cudaErrorNoDevice && !no_driver) {
      std::fprintf(stderr, "CUDA: cudaGetDeviceCount failed: %s (%s); no GPU is used\n",
                   cudaGetErrorString(e), cudaGetErrorName(e));
    }
    return true;
  }();
  (void)said;
  return 0;
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

StreamMarks::~StreamMarks() {
  for (void* e : events_) cudaEventDestroy(static_cast<cudaEvent_t>(e));
}

int StreamMarks::Mark() {
  int device = 0;
  MOREH_CUDA_CHECK(cudaGetDevice(&device));
  if (device_ < 0) device_ = device;
  MOREH_CHECK(device == device_, "StreamMarks: made on cuda:{}, marked from cuda:{}", device_,
              device);
  if (used_ == static_cast<int>(events_.size())) {
    cudaEvent_t e;
    MOREH_CUDA_CHECK(cudaEventCreate(&e));
    events_.push_back(e);
  }
  MOREH_CUDA_CHECK(cudaEventRecord(static_cast<cudaEvent_t>(events_[used_]), cudaStreamLegacy));
  return used_++;
}

double StreamMarks::Seconds(int from, int to) const {
  MOREH_CHECK(from >= 0 && from < used_ && to >= 0 && to < used_,
              "StreamMarks: marks {} and {} of {}", from, to, used_);
  const auto a = static_cast<cudaEvent_t>(events_[from]), b = static_cast<cudaEvent_t>(events_[to]);
  MOREH_CUDA_CHECK(cudaEventSynchronize(b));
  float ms = 0;
  MOREH_CUDA_CHECK(cudaEventElapsedTime(&ms, a, b));
  return ms * 1e-3;
}

}  // namespace moreh::kernels::cuda
