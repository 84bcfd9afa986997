// The worker daemon (moreh-worker): one per node. Owns the node's devices (device_spec.h), measures
// a profile at start-up (profile.h), registers with the scheduler and heartbeats
// (scheduler_link.h), and serves lease holders on its own control endpoint (client_session.h):
// graphs and pipeline-job stages run on each device's job thread. The endpoint's connections have
// the limits of runtime/net/json_connection.h: 64 KiB frames and 5 s to authenticate, an idle
// time-out for connections without a job, a cap on connections. Jobs' UCX traffic stays on the
// interface of --listen-host. One event-loop thread.
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "runtime/core/status.h"
#include "runtime/net/json_connection.h"
#include "worker/device_spec.h"

namespace moreh::worker {

struct WorkerConfig {
  std::string node_name;
  std::string scheduler_host = "127.0.0.1";
  int scheduler_port = 0;
  std::string cluster_key;
  std::string listen_host = "127.0.0.1";
  int listen_port = 0;  // 0: chosen by the OS
  DeviceSpec devices;
  bool measure_profile = true;
  // Lease holders may send large frames (stage programs); a connection with a job or a request
  // in flight is never idle.
  net::ConnectionLimits limits = DefaultLimits();
  Status Validate() const;
  static net::ConnectionLimits DefaultLimits();
};

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
