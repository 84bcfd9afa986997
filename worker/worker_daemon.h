// The worker daemon (moreh-worker): one per node. Owns the node's devices (`cpu:N:MEM` for
// development and tests, or `cuda:all`: every visible GPU with its name and memory, in builds with
// CUDA; running graphs on them arrives with the CUDA kernels), measures a device profile at
// start-up (GEMM FLOP/s, memory bandwidth: the planner's "DB"), registers with the scheduler using
// the cluster key, heartbeats, and re-registers whenever the scheduler connection drops (scheduler
// restarts included). It listens on its own control endpoint for clients holding a lease (today:
// hello/ping, the connection step of a job; running stage programs arrives with [ap-end-to-end]).
// One event-loop thread.
#pragma once

#include <chrono>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "runtime/core/status.h"

namespace moreh::worker {

struct DeviceSpec {
  std::string kind;  // "cpu"
  int count = 0;
  int64_t memory_bytes = 0;
};
// "cpu:4:256M" -> 4 CPU devices of 256 MiB. Errors name the bad part.
StatusOr<DeviceSpec> ParseDevices(const std::string& spec);

struct WorkerConfig {
  std::string node_name;
  std::string scheduler_host = "127.0.0.1";
  int scheduler_port = 0;
  std::string cluster_key;
  std::string listen_host = "127.0.0.1";
  DeviceSpec devices;
  bool measure_profile = true;
  Status Validate() const;
};

// GEMM FLOP/s (f32) and memory bandwidth of this machine, measured in well under a second.
nlohmann::json MeasureProfile();

class WorkerDaemon {
 public:
  static StatusOr<std::unique_ptr<WorkerDaemon>> Create(WorkerConfig config);
  ~WorkerDaemon();
  void Run();  // until SIGINT/SIGTERM
  struct Impl;

 private:
  explicit WorkerDaemon(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace moreh::worker
