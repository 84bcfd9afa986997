// What devices a worker serves: `cpu:COUNT:MEMORY` (development and tests) or `cuda:all` (every
// visible GPU, in builds with CUDA).
#pragma once

#include <cstdint>
#include <string>

#include "runtime/core/status.h"

namespace moreh::worker {

struct DeviceSpec {
  std::string kind;  // "cpu" or "cuda"
  int count = 0;
  int64_t memory_bytes = 0;  // per device (the first GPU's for cuda:all)
};

// "cpu:4:256M" -> 4 CPU devices of 256 MiB (memory as runtime::ParseMemoryBytes reads it);
// "cuda:all". Errors name the bad part.
StatusOr<DeviceSpec> ParseDevices(const std::string& spec);

}  // namespace moreh::worker
