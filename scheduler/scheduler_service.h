// The scheduler's message handlers, one per message type, without sockets: the server
// (scheduler_server.cc) feeds them each connection's messages, and the tests and the fuzzer
// (tests/fuzz/scheduler_fuzzer.cc) call them directly. Every request is read through its protocol
// struct (runtime/net/protocol.h), so a field of the wrong type or range is refused with an error
// naming it and nothing else happens. Not thread-safe: the server's one event-loop thread.
#pragma once

#include <chrono>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>
#include <string>

#include "runtime/core/status.h"
#include "runtime/net/protocol.h"
#include "scheduler/registry.h"

namespace moreh::scheduler {

class StateStore;

// One connection as the handlers see it: a way to answer, and what hello and register_worker
// established.
class Peer {
 public:
  virtual ~Peer() = default;
  virtual void Send(const nlohmann::json& m) = 0;
  virtual void Authenticated() {}

  bool said_hello = false;
  net::Role role = net::Role::kClient;
  std::string user;           // a client's token, hashed
  std::string node;           // a worker's node, once registered
  std::set<uint64_t> leases;  // leases allocated or renewed here: lease_lost is pushed here
};

struct ServiceConfig {
  std::string cluster_key;
  std::chrono::milliseconds heartbeat_period{1000};
  std::chrono::milliseconds dead_after{5000};
  std::chrono::milliseconds lease_ttl{30000};
};

class SchedulerService {
 public:
  SchedulerService(ServiceConfig config, Registry registry, std::unique_ptr<StateStore> store);
  ~SchedulerService();

  void Attach(Peer* p) { peers_.insert(p); }
  void Detach(Peer* p) { peers_.erase(p); }
  // One message from `p`. Non-OK: the connection is answered with it and closed (before hello,
  // an unknown type or one not meant for the peer's role); refusals that keep the connection
  // are answered here.
  Status Handle(Peer& p, const nlohmann::json& m, Clock::time_point now);
  // Periodic work: dead workers, expired leases.
  void Tick(Clock::time_point now);

  const Registry& registry() const { return registry_; }

 private:
  using Handler = Status (SchedulerService::*)(Peer&, net::Msg, const nlohmann::json&,
                                               Clock::time_point);
  Status OnHello(Peer& p, const nlohmann::json& m);
  Status OnRegisterWorker(Peer& p, net::Msg t, const nlohmann::json& m, Clock::time_point now);
  Status OnHeartbeat(Peer& p, net::Msg t, const nlohmann::json& m, Clock::time_point now);
  Status OnAllocate(Peer& p, net::Msg t, const nlohmann::json& m, Clock::time_point now);
  Status OnRenew(Peer& p, net::Msg t, const nlohmann::json& m, Clock::time_point now);
  Status OnRelease(Peer& p, net::Msg t, const nlohmann::json& m, Clock::time_point now);
  Status OnVirtualDevice(Peer& p, net::Msg t, const nlohmann::json& m, Clock::time_point now);
  Status OnClusterStatus(Peer& p, net::Msg t, const nlohmann::json& m, Clock::time_point now);

  // Answers a refused request; the connection stays.
  Status Refuse(Peer& p, net::Msg t, const Status& why, std::string_view code = "");
  void Persist(const Status& s);
  void NotifyLeaseLost(uint64_t lease, const std::string& why);
  // Tells the workers of a lease about it (they admit its holder), or one worker of all its own.
  void PushLease(const Lease& lease, Peer* only = nullptr);
  void DropLease(uint64_t lease);

  ServiceConfig config_;
  Registry registry_;
  std::unique_ptr<StateStore> store_;  // null: in memory only
  std::set<Peer*> peers_;
  std::map<std::string, bool> reported_dead_;  // nodes whose death was logged
};

}  // namespace moreh::scheduler
