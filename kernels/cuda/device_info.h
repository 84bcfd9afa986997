// CUDA device discovery. Thread-safe. Returns 0 where no driver or no GPU is present.
#pragma once

namespace moreh::kernels::cuda {
int DeviceCount();
}  // namespace moreh::kernels::cuda
