// The start-up profile a worker registers with (the planner's "DB"): GEMM speed of one device
// alone, memory bandwidth, and the links between the devices of this host.
#pragma once

#include "runtime/net/protocol.h"

namespace moreh::worker {

// GEMM FLOP/s (f32), memory bandwidth and UCX links of this machine, measured in about a second.
net::WorkerProfile MeasureProfile();

}  // namespace moreh::worker
