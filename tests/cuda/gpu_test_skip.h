// The GPU tests' skip: where no CUDA device is present they skip with the reason, unless
// MOREH_REQUIRE_GPU is set (scripts/gpu-check sets it: there a missing device is a failure).
#pragma once

#include <gtest/gtest.h>

#include <cstdlib>

#include "kernels/cuda/device_info.h"

#define MOREH_SKIP_WITHOUT_GPU(what)                                                    \
  do {                                                                                  \
    if (::moreh::kernels::cuda::DeviceCount() > 0) break;                               \
    if (std::getenv("MOREH_REQUIRE_GPU") != nullptr) FAIL() << "no usable CUDA device"; \
    GTEST_SKIP() << "no CUDA device on this machine: " << what << " built, not run";    \
  } while (0)
