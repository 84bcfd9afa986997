// What the planner plans for: a cluster of identical devices (count, memory, measured or published
// profile) and its topology (devices per node; bandwidth and latency inside a node and between
// nodes). Comes from the workers' start-up profiles (the "DBs") or a cluster description file
// (examples/clusters/*.json). Also the reference platform's device-size table. Value types.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "runtime/core/status.h"

namespace moreh::planner {

struct DeviceProfile {
  std::string name = "cpu";
  int64_t memory_bytes = 0;
  double peak_flops = 0;            // dense FLOP/s in the compute dtype
  double gemm_efficiency = 0.7;     // achieved fraction of peak on large GEMMs (measured)
  double other_efficiency = 0.5;    // attention and fused kernels, fraction of peak
  double memory_bandwidth = 0;      // bytes/s
  double kernel_overhead_s = 5e-6;  // fixed cost per op launch
  int64_t reserved_bytes = 0;       // runtime workspace, allocator slack
  // The CPU backend's kernels compute on f32 copies of an op's bf16/f16 inputs and outputs,
  // temporaries that live for the op (GPU kernels read and write 16-bit values in place).
  bool widens_16bit = false;
};

struct ClusterSpec {
  std::string name;
  int num_devices = 1;
  int devices_per_node = 1;
  DeviceProfile device;
  double intra_node_bandwidth = 0;  // bytes/s per device (e.g. NVLink)
  double intra_node_latency = 0;    // s
  double inter_node_bandwidth = 0;  // bytes/s per device (e.g. InfiniBand)
  double inter_node_latency = 0;    // s
  // Whether the runtime overlaps the data-parallel gradient reduction with the backward (GPUs:
  // NCCL runs it on its own stream; the CPU devices' ring runs on the computing thread).
  bool overlapped_dp_reduction = false;
  // How many devices of one node compute at full speed at once; more active devices share the
  // node's compute equally (CPU devices on one host share its cores: host cores / threads per
  // device). 0: every device computes on its own (GPUs).
  double node_concurrency = 0;

  Status Validate() const;
  static StatusOr<ClusterSpec> FromJson(std::string_view text, const std::string& source);
  static StatusOr<ClusterSpec> FromFile(const std::string& path);
  std::string ToJson() const;
};

// The reference platform's cluster (examples/clusters/moreh-reference.json) with `num_devices`.
ClusterSpec ReferenceCluster(int num_devices);

}  // namespace moreh::planner
