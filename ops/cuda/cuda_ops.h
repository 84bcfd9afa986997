// The CUDA kernels of the operators (ops/cuda/cuda_ops.cc), registered with ops::RegisterKernel.
#pragma once

namespace moreh::ops {
// Registers every CUDA op kernel; idempotent and thread-safe.
void RegisterCudaKernels();
}  // namespace moreh::ops
