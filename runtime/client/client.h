// The client side of the control plane: asks the scheduler for the user's virtual device, connects
// to the granted workers, keeps the lease alive, and releases it at the end, logging each step in
// the reference platform's words:
//   [info] Requesting resources for MoAI Accelerator from the server...
//   [info] Initializing the worker daemon for MoAI Accelerator
//   [info] [1/4] Connecting to resources on the server (127.0.0.1:40123)...
//   [info] Establishing links to the resources...
//   [info] MoAI Accelerator is ready to use.
// With no scheduler configured (MOREH_SCHEDULER unset and none given) an embedded local cluster is
// started (local_cluster.h) and stopped with the client. While devices are short it says how many
// of how many are available, and gives up after wait_for_devices. Once granted, a LeaseKeeper
// thread renews the lease (reconnecting after a scheduler restart) and a WorkerWatch pings the
// workers (Health). Not thread-safe, except Health.
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "runtime/client/channel.h"
#include "runtime/client/local_cluster.h"
#include "runtime/core/status.h"

namespace moreh::client {

struct ClientOptions {
  std::string scheduler;             // HOST:PORT; empty: MOREH_SCHEDULER, else a local cluster
  std::string token = "local-user";  // MOREH_TOKEN overrides
  std::string device_size;   // empty: the user's current virtual device (embedded cluster: Small)
  LocalClusterConfig local;  // used for the embedded cluster
  // How long to wait for devices (workers registering, or another process on the virtual device).
  // MOREH_WAIT_TIMEOUT (seconds) overrides; moreh-run --wait-timeout sets it.
  std::chrono::milliseconds wait_for_devices{600000};
};

struct GrantedDevice {
  std::string node, address;
  int device = 0;
  std::string kind, name;  // "cpu" / "cuda"; the device's name
  int64_t memory_bytes = 0;
  double gemm_flops = 0, memory_bandwidth = 0;  // the node's measured start-up profile (0: none)
  int threads = 0, host_cores = 0;              // CPU threads the worker runs; its host's cores
  double loaded_latency = 0;  // s, one-way UCX latency on the node while its cores are all busy
  double link_bandwidth = 0;  // bytes/s, UCX between two processes of the node (0: unknown)
};

class Client {
 public:
  static StatusOr<std::unique_ptr<Client>> Connect(ClientOptions options);
  ~Client();  // releases the lease, stops an embedded cluster
  uint64_t lease() const { return lease_; }
  const std::vector<GrantedDevice>& devices() const { return devices_; }
  const std::string& scheduler() const { return scheduler_; }
  // A new control connection to a granted worker (hello done with the lease's secret), for callers
  // that talk to several workers at once (one channel per thread).
  StatusOr<std::unique_ptr<Channel>> OpenWorker(const std::string& address) const;
  // Ok while every granted worker answers its pings and the lease is held; else an error naming
  // the worker that failed and how (died, stopped answering) or why the lease was lost.
  Status Health() const;
  // The address of the worker that failed ("" when none has).
  std::string FailedWorker() const;
  struct Impl;

 private:
  Client();
  std::unique_ptr<Impl> impl_;
  std::unique_ptr<LocalCluster> local_;
  std::string scheduler_;
  uint64_t lease_ = 0;
  std::vector<GrantedDevice> devices_;
};

}  // namespace moreh::client
