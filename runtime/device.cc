#include "runtime/device.h"

#include <cstdlib>

#include "runtime/core/error.h"

#ifdef MOREH_WITH_CUDA
#include "kernels/cuda/device_allocator.h"
#endif

namespace moreh::runtime {

Allocator* DeviceAllocator(const std::string& spec) {
  if (spec.empty() || spec == "cpu" || spec == "cpu:0") return CpuAllocator();
  if (spec.rfind("cuda:", 0) == 0) {
    const std::string index = spec.substr(5);
    const bool digits = !index.empty() && index.size() < 4 &&
                        index.find_first_not_of("0123456789") == std::string::npos;
    MOREH_CHECK(digits, "device '{}': expected cpu or cuda:N", spec);
#ifdef MOREH_WITH_CUDA
    return kernels::cuda::CudaAllocator(std::stoi(index));
#else
    throw Error(
        fmt::format("device '{}': this build has no CUDA backend (MOREH_ENABLE_CUDA)", spec));
#endif
  }
  throw Error(fmt::format("device '{}': expected cpu or cuda:N", spec));
}

Allocator* DefaultDevice() {
  const char* env = std::getenv("MOREH_DEVICE");
  return DeviceAllocator(env ? env : "");
}

}  // namespace moreh::runtime
