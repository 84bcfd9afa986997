// The device a program's tensors compute on when the job runs in-process (not on worker daemons):
// MOREH_DEVICE=cpu (the default; the CPU device, capacity MOREH_CPU_DEVICE_MEMORY) or cuda:N (GPU
// N, CUDA builds; capacity MOREH_CUDA_DEVICE_MEMORY or its free memory). The lazy runtime runs
// each step's graph there; parameters, gradients and optimizer states move there with the first
// step and stay.
#pragma once

#include <string>

#include "runtime/core/allocator.h"

namespace moreh::runtime {

// "cpu", "cpu:0" or "cuda:N". Throws moreh::Error naming the spec when it is not one of them, when
// this build has no CUDA, or when GPU N does not exist.
Allocator* DeviceAllocator(const std::string& spec);
// DeviceAllocator(MOREH_DEVICE), or the CPU when unset.
Allocator* DefaultDevice();

}  // namespace moreh::runtime
