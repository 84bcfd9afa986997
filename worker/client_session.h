// One lease holder's connection to a worker: hello with the lease and its secret (as the scheduler
// pushed it), then ping, run_graph, or a pipeline job's job_* requests on a device of the lease
// (docs/protocol.md). Requests are read through runtime/net/protocol.h and their payloads by what
// runs them (StageAssignment::FromJson, StageJob), so a malformed field gets an error reply naming
// it and the session serves on. Graphs and jobs run on the device's job thread, against its
// allocator: an out-of-memory there is a reply (code OUT_OF_MEMORY), never the daemon's end. A job
// belongs to its session: when the connection closes or the lease is dropped, its jobs abort (a
// stage blocked on a peer fails at once) and go. Event loop thread only.
#pragma once

#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>

#include "runtime/core/status.h"
#include "runtime/net/protocol.h"
#include "worker/worker_context.h"

namespace moreh::parallel {
class StageJob;
}

namespace moreh::worker {

// The connection a session answers on (a net::JsonConnection in the daemon; a recorder in tests).
class SessionLink {
 public:
  virtual ~SessionLink() = default;
  virtual void Send(const nlohmann::json& m) = 0;
  virtual void Authenticated() = 0;
  // The connection's idle time-out does not apply while it is held (requests in flight, jobs).
  virtual void Hold() = 0;
  virtual void Unhold() = 0;
};

class ClientSession : public std::enable_shared_from_this<ClientSession> {
 public:
  ClientSession(WorkerContext* w, std::unique_ptr<SessionLink> link);
  ~ClientSession();
  // One message. Non-OK: the connection is answered with it and closed (before hello, or a type
  // a worker does not serve).
  Status Handle(const nlohmann::json& m);
  // The lease is gone: jobs abort and are dropped.
  void EndJobs();
  // The connection closed: jobs end, later replies are dropped.
  void Closed();
  size_t jobs() const { return jobs_.size(); }
  int in_flight() const { return in_flight_; }

 private:
  Status OnHello(const nlohmann::json& m);
  void OnRunGraph(const nlohmann::json& m, int device);
  void OnJob(net::Msg t, const nlohmann::json& m, int device);
  void Refuse(net::Msg t, const std::string& message, std::string_view code = "");
  // Runs `work` on the device's job thread; its reply is sent from the event loop.
  void RunOnDevice(int device, std::function<nlohmann::json()> work,
                   std::function<void(const nlohmann::json&)> on_reply = nullptr);
  void AddJob(int device, std::shared_ptr<parallel::StageJob> job);
  void RemoveJob(int device);

  WorkerContext* w_;
  std::unique_ptr<SessionLink> link_;
  uint64_t lease_ = 0;
  bool closed_ = false;
  int in_flight_ = 0;
  std::map<int, std::shared_ptr<parallel::StageJob>> jobs_;  // by device
  std::set<int> setting_up_;                                 // job_setup in flight
};

}  // namespace moreh::worker
