// The scheduler's state: registered nodes and their devices, liveness from heartbeats, and leases
// of devices granted to clients. Pure logic with explicit time, so it is tested without sockets;
// the server (scheduler_server.h) owns one and calls it from its single event-loop thread.
// Not thread-safe.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "runtime/core/status.h"

namespace moreh::scheduler {

using Clock = std::chrono::steady_clock;

struct Device {
  int id = 0;
  std::string kind;  // "cpu" or "cuda"
  std::string name;
  int64_t memory_bytes = 0;
  uint64_t lease = 0;  // 0: free
};

struct Node {
  std::string name;
  std::string address;  // host:port of the worker's control endpoint
  std::vector<Device> devices;
  nlohmann::json profile;  // the worker's measured device profile (the planner's "DB")
  Clock::time_point last_heartbeat;
  bool alive = true;
};

// A user's virtual device: a size (a name from the device-size table). A token holds up to
// kMaxVirtualDevices, one of them current; one process may use a virtual device at a time.
struct VirtualDevice {
  int id = 0;
  std::string size = "Small";
};
inline constexpr int kMaxVirtualDevices = 5;

struct UserState {
  std::vector<VirtualDevice> devices;
  int current = 0;  // id of the current virtual device
};

struct Lease {
  uint64_t id = 0;
  int vdev = -1;    // the virtual device it serves (-1: a direct request)
  int64_t pid = 0;  // the client process
  // The secret proves a client holds the lease. Only its hash (net::HashSecret) is kept beyond
  // this process: `secret` itself is empty in a lease restored from the state store.
  std::string secret;
  std::string secret_hash;
  std::string user;  // the hash of the holder's token
  std::string request_id;
  std::vector<std::pair<std::string, int>> devices;  // (node, device id)
  Clock::time_point expiry;
};

class Registry {
 public:
  // Adds or replaces (re-registration) a node; devices keep their leases across re-registration.
  // A lease holding a device the node no longer has ends: it is added to *ended.
  Status RegisterWorker(Node node, Clock::time_point now, std::vector<uint64_t>* ended = nullptr);
  Status Heartbeat(const std::string& node, Clock::time_point now);
  // Marks nodes silent for longer than dead_after as dead; their devices leave the pool. Returns
  // the leases that held devices on them, each with the first dead node it had (their holders
  // must be told).
  std::vector<std::pair<uint64_t, std::string>> ReapDead(Clock::time_point now,
                                                         Clock::duration dead_after);

  // num_devices packed onto the fewest nodes. The same (user, request_id) returns the same lease
  // (a retried request is never granted twice; a lease restored without its secret gets a new
  // one). *granted is set when the workers must be told of the lease (it is new, or re-keyed).
  // ResourceExhausted when the pool is too small. `user` is the hash of the client's token.
  StatusOr<Lease> Allocate(const std::string& user, const std::string& request_id, int num_devices,
                           Clock::duration ttl, Clock::time_point now, int vdev = -1,
                           int64_t pid = 0, bool* granted = nullptr);
  Status Renew(uint64_t lease, const std::string& secret, Clock::duration ttl,
               Clock::time_point now);
  Status Release(uint64_t lease, const std::string& secret);
  // Ends a lease without its secret (its user's moreh-smi --reset).
  Status EndLease(uint64_t lease);
  std::vector<uint64_t> ExpireLeases(Clock::time_point now);

  // Restoring persisted state (StateStore::Load): nodes come back dead until they re-register.
  void RestoreNode(Node n);
  void RestoreLease(Lease l);
  void set_next_lease(uint64_t id) { next_lease_ = std::max(next_lease_, id); }
  uint64_t next_lease() const { return next_lease_; }

  // Virtual devices of a user (the hash of a token; created with one Small device on first use).
  UserState& User(const std::string& user);
  StatusOr<int> AddVirtualDevice(const std::string& user, const std::string& size);
  Status RemoveVirtualDevice(const std::string& user, int id);
  Status SwitchVirtualDevice(const std::string& user, int id);
  Status SetCurrentSize(const std::string& user, const std::string& size);
  // The lease currently holding the user's virtual device `vdev`, or nullptr.
  const Lease* LeaseOfVirtualDevice(const std::string& user, int vdev) const;
  const std::map<std::string, UserState>& users() const { return users_; }
  void RestoreUser(const std::string& user, UserState u) { users_[user] = std::move(u); }

  // The device-size table (name -> devices, names matched case-insensitively). Empty: the
  // reference platform's (net::DeviceSizeCount). Replaceable through the scheduler's config.
  void set_device_sizes(std::map<std::string, int> sizes);
  int SizeCount(const std::string& name) const;  // -1 for an unknown name

  const std::map<std::string, Node>& nodes() const { return nodes_; }
  const std::map<uint64_t, Lease>& leases() const { return leases_; }
  int FreeDevices() const;
  int AliveDevices() const;       // on nodes that heartbeat, leased or not
  nlohmann::json ToJson() const;  // the cluster view (moreh-smi --cluster)

 private:
  void Free(uint64_t lease);
  std::map<std::string, Node> nodes_;
  std::map<uint64_t, Lease> leases_;
  std::map<std::string, UserState> users_;  // by user (token hash)
  std::map<std::string, int> sizes_;        // lower-case names
  uint64_t next_lease_ = 1;
};

}  // namespace moreh::scheduler
