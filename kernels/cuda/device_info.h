// CUDA device discovery. Thread-safe. Returns 0 where no driver or no GPU is present.
#pragma once

#include <cstdint>
#include <string>

namespace moreh::kernels::cuda {
int DeviceCount();
// Total memory and name of device `i` (0 / "" when it cannot be read).
int64_t DeviceMemoryBytes(int i);
std::string DeviceName(int i);
}  // namespace moreh::kernels::cuda
