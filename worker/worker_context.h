// What the parts of a worker daemon share: its devices (allocator and job thread each), the leases
// the scheduler granted on them, and the client sessions admitted under each lease. Event loop
// thread only, except the device threads themselves.
#pragma once

// clang-format off
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <boost/asio.hpp>
// clang-format on

#include "runtime/core/allocator.h"

namespace moreh::worker {

class ClientSession;

// Leases pushed by the scheduler (lease_granted / drop_lease), and the sessions under each.
class LeaseTable {
 public:
  struct Grant {
    std::string secret_hash;  // net::HashSecret of the lease's secret
    std::vector<int64_t> devices;
  };
  void Add(uint64_t lease, Grant g) { grants_[lease] = std::move(g); }
  // Forgets the lease and ends the jobs of the sessions admitted under it.
  void Drop(uint64_t lease);
  const Grant* Find(uint64_t lease) const {
    auto it = grants_.find(lease);
    return it == grants_.end() ? nullptr : &it->second;
  }
  void Admit(uint64_t lease, std::weak_ptr<ClientSession> s);
  size_t size() const { return grants_.size(); }

 private:
  std::map<uint64_t, Grant> grants_;
  std::multimap<uint64_t, std::weak_ptr<ClientSession>> sessions_;
};

struct WorkerContext {
  explicit WorkerContext(boost::asio::io_context& io) : io(io) {}
  boost::asio::io_context& io;
  std::string cluster_key;
  std::string net_device;  // the interface jobs' UCX traffic may use ("" : any)
  // Per device: its capacity (CPU devices' owned here, GPUs' the process's CUDA allocators) and
  // its job thread (graphs and pipeline stages run there, so heartbeats never wait on a job and
  // the stages of one job on two devices of this node run side by side).
  std::vector<runtime::Allocator*> allocators;
  std::vector<std::unique_ptr<runtime::Allocator>> owned_allocators;
  std::vector<std::unique_ptr<boost::asio::thread_pool>> device_threads;
  LeaseTable leases;
  int num_devices() const { return static_cast<int>(allocators.size()); }
};

}  // namespace moreh::worker
