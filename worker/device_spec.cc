#include "worker/device_spec.h"

#include <fmt/format.h>

#include <cctype>

#include "runtime/core/allocator.h"
#ifdef MOREH_WITH_CUDA
#include "kernels/cuda/device_info.h"
#endif

namespace moreh::worker {

StatusOr<DeviceSpec> ParseDevices(const std::string& spec) {
  DeviceSpec d;
  if (spec == "cuda:all") {
#ifdef MOREH_WITH_CUDA
    d.kind = "cuda";
    d.count = kernels::cuda::DeviceCount();
    if (d.count < 1) {
      return Status::InvalidArgument("--devices cuda:all: no CUDA device is visible on this node");
    }
    d.memory_bytes = kernels::cuda::DeviceMemoryBytes(0);
    return d;
#else
    return Status::InvalidArgument(
        "--devices cuda:all: this moreh-worker was built without CUDA (MOREH_ENABLE_CUDA)");
#endif
  }
  const size_t a = spec.find(':'), b = a == std::string::npos ? a : spec.find(':', a + 1);
  if (a == std::string::npos || b == std::string::npos) {
    return Status::InvalidArgument("--devices '" + spec + "' must be cpu:COUNT:MEMORY or cuda:all");
  }
  d.kind = spec.substr(0, a);
  if (d.kind != "cpu") {
    return Status::InvalidArgument("--devices kind '" + d.kind +
                                   "' is not supported (cpu:COUNT:MEMORY or cuda:all)");
  }
  const std::string count = spec.substr(a + 1, b - a - 1), memory = spec.substr(b + 1);
  if (count.empty() || count.size() > 4 ||
      count.find_first_not_of("0123456789") != std::string::npos || std::stoi(count) < 1) {
    return Status::InvalidArgument("--devices '" + spec + "': the count '" + count +
                                   "' must be a whole number from 1 to 9999");
  }
  d.count = std::stoi(count);
  d.memory_bytes = runtime::ParseMemoryBytes(memory.c_str());
  if (d.memory_bytes <= 0) {
    return Status::InvalidArgument("--devices '" + spec + "': the memory '" + memory +
                                   "' must be a size such as 256M, 1.5G or 1073741824");
  }
  return d;
}

}  // namespace moreh::worker
