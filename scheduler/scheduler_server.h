// The scheduler daemon (moreh-scheduler): a Boost.Asio server on one event-loop thread. Workers
// register and heartbeat; clients allocate, renew and release leases of devices (sized by the
// reference platform's device-size names). Every connection must say hello first with the cluster
// key (workers) or a user token (clients); keys are compared in constant time. The connections'
// limits (frames, deadlines, caps) are runtime/net/json_connection.h's; the handlers are
// scheduler_service.h's, so nothing a peer sends can stop the daemon. Periodic work (dead workers,
// expired leases) runs in one timer; with a state directory the state survives restarts
// (state_store.h).
#pragma once

#include <chrono>
#include <map>
#include <memory>
#include <string>

#include "runtime/core/status.h"
#include "runtime/net/json_connection.h"

namespace moreh::scheduler {

struct SchedulerConfig {
  std::string host = "127.0.0.1";
  int port = 0;             // 0: chosen by the OS
  std::string port_file;    // where the chosen port is written (for scripts and tests)
  std::string cluster_key;  // required for a non-loopback bind
  std::string state_dir;    // SQLite state (scheduler.db); empty: in memory only
  std::chrono::milliseconds heartbeat_period{1000};
  std::chrono::milliseconds dead_after{5000};
  std::chrono::milliseconds lease_ttl{30000};
  // Connections: scheduler messages are small, so frames stay at 256 KiB after hello too.
  net::ConnectionLimits limits = DefaultLimits();
  std::map<std::string, int> device_sizes;  // replaces the reference platform's table when set
  Status Validate() const;
  static net::ConnectionLimits DefaultLimits();
};

class SchedulerServer {
 public:
  static StatusOr<std::unique_ptr<SchedulerServer>> Create(SchedulerConfig config);
  ~SchedulerServer();
  int port() const;
  // Runs until SIGINT/SIGTERM or Stop().
  void Run();
  void Stop();

 public:
  struct Impl;  // the event loop's state (scheduler_server.cc)

 private:
  explicit SchedulerServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace moreh::scheduler
