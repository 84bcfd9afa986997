// A worker's connection to the scheduler: hello with the cluster key, register_worker (devices and
// profile), a heartbeat every period, and the leases the scheduler pushes (lease_granted /
// drop_lease, into the LeaseTable). When the connection drops (the scheduler restarted, the
// network failed) it connects again with backoff (100 ms doubling to 2 s) and re-registers; the
// leases it holds stay, so running jobs go on. Event loop thread only.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "runtime/net/json_connection.h"
#include "worker/worker_context.h"

namespace moreh::worker {

class SchedulerLink {
 public:
  // registration(): the register_worker message.
  SchedulerLink(WorkerContext* w, std::string host, int port, std::string cluster_key,
                std::function<nlohmann::json()> registration);
  ~SchedulerLink();
  void Start();
  void Stop();

 private:
  void Connect();
  void Retry(const std::string& why);
  Status OnMessage(const nlohmann::json& m);

  WorkerContext* w_;
  std::string host_, key_;
  int port_;
  std::function<nlohmann::json()> registration_;
  net::ConnectionSet set_;  // the one outbound connection, with the daemons' limits
  std::shared_ptr<net::JsonConnection> conn_;
  boost::asio::steady_timer retry_;
  net::Periodic heartbeat_;
  int backoff_ms_ = 100;
  bool stopping_ = false;
  bool registered_ = false;
};

}  // namespace moreh::worker
