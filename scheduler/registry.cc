#include "scheduler/registry.h"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <random>

#include "runtime/planner/cluster.h"

namespace moreh::scheduler {

bool SecretsEqual(const std::string& a, const std::string& b) {
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  const size_t n = std::max(a.size(), b.size());
  for (size_t i = 0; i < n; ++i) {
    const unsigned char x = i < a.size() ? static_cast<unsigned char>(a[i]) : 0;
    const unsigned char y = i < b.size() ? static_cast<unsigned char>(b[i]) : 0;
    diff |= x ^ y;
  }
  return diff == 0;
}

std::string RandomSecret() {
  std::random_device rd;
  std::string s;
  for (int i = 0; i < 4; ++i) s += fmt::format("{:08x}", rd());
  return s;
}

Status Registry::RegisterWorker(Node node, Clock::time_point now) {
  if (node.name.empty()) return Status::InvalidArgument("register_worker: empty node name");
  if (node.devices.empty()) return Status::InvalidArgument("register_worker: no devices");
  for (size_t i = 0; i < node.devices.size(); ++i) {
    const Device& d = node.devices[i];
    if (d.memory_bytes <= 0 || (d.kind != "cpu" && d.kind != "cuda")) {
      return Status::InvalidArgument(
          fmt::format("register_worker: device {} needs kind cpu|cuda and positive memory", i));
    }
    for (size_t j = 0; j < i; ++j) {
      if (node.devices[j].id == d.id) {
        return Status::InvalidArgument(fmt::format("register_worker: device id {} twice", d.id));
      }
    }
  }
  auto old = nodes_.find(node.name);
  if (old != nodes_.end()) {  // re-registration: keep leases of devices that still exist
    for (Device& d : node.devices) {
      for (const Device& o : old->second.devices) {
        if (o.id == d.id) d.lease = o.lease;
      }
    }
  }
  for (Device& d : node.devices) {
    if (d.lease && !leases_.count(d.lease)) d.lease = 0;
  }
  node.last_heartbeat = now;
  node.alive = true;
  nodes_[node.name] = std::move(node);
  return Status::Ok();
}

Status Registry::Heartbeat(const std::string& name, Clock::time_point now) {
  auto it = nodes_.find(name);
  if (it == nodes_.end())
    return Status::NotFound("heartbeat from unregistered node '" + name + "'");
  if (!it->second.alive)
    return Status::NotFound("node '" + name + "' was declared dead; register again");
  it->second.last_heartbeat = now;
  return Status::Ok();
}

std::vector<uint64_t> Registry::ReapDead(Clock::time_point now, Clock::duration dead_after) {
  std::vector<uint64_t> hit;
  for (auto& [name, n] : nodes_) {
    if (!n.alive || now - n.last_heartbeat <= dead_after) continue;
    n.alive = false;
    for (const Device& d : n.devices) {
      if (d.lease && std::find(hit.begin(), hit.end(), d.lease) == hit.end())
        hit.push_back(d.lease);
    }
  }
  return hit;
}

void Registry::RestoreNode(Node n) {
  n.alive = false;
  n.last_heartbeat = Clock::now();
  nodes_[n.name] = std::move(n);
}

void Registry::RestoreLease(Lease l) {
  for (const auto& [node, id] : l.devices) {
    auto it = nodes_.find(node);
    if (it == nodes_.end()) continue;
    for (Device& d : it->second.devices) {
      if (d.id == id) d.lease = l.id;
    }
  }
  next_lease_ = std::max(next_lease_, l.id + 1);
  leases_[l.id] = std::move(l);
}

namespace {
std::string Lower(std::string s) {
  for (char& ch : s) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  return s;
}
}  // namespace

void Registry::set_device_sizes(std::map<std::string, int> sizes) {
  sizes_.clear();
  for (auto& [name, n] : sizes) sizes_[Lower(name)] = n;
}

int Registry::SizeCount(const std::string& name) const {
  if (sizes_.empty()) return planner::DeviceSizeCount(name);
  auto it = sizes_.find(Lower(name));
  return it == sizes_.end() ? -1 : it->second;
}

UserState& Registry::User(const std::string& token) {
  UserState& u = users_[token];
  if (u.devices.empty()) {
    u.devices.push_back({0, "Small"});
    u.current = 0;
  }
  return u;
}

StatusOr<int> Registry::AddVirtualDevice(const std::string& token, const std::string& size) {
  if (SizeCount(size) < 1) return Status::InvalidArgument("unknown device size '" + size + "'");
  UserState& u = User(token);
  if (static_cast<int>(u.devices.size()) >= kMaxVirtualDevices) {
    return Status::InvalidArgument(
        fmt::format("a user holds at most {} virtual devices", kMaxVirtualDevices));
  }
  int id = 0;
  for (const auto& d : u.devices) id = std::max(id, d.id + 1);
  u.devices.push_back({id, size});
  return id;
}

Status Registry::RemoveVirtualDevice(const std::string& token, int id) {
  UserState& u = User(token);
  auto it =
      std::find_if(u.devices.begin(), u.devices.end(), [&](const auto& d) { return d.id == id; });
  if (it == u.devices.end()) return Status::NotFound(fmt::format("no virtual device {}", id));
  if (u.devices.size() == 1)
    return Status::InvalidArgument("the last virtual device cannot be removed");
  if (LeaseOfVirtualDevice(token, id))
    return Status::InvalidArgument(fmt::format("virtual device {} is in use", id));
  u.devices.erase(it);
  if (u.current == id) u.current = u.devices.front().id;
  return Status::Ok();
}

Status Registry::SwitchVirtualDevice(const std::string& token, int id) {
  UserState& u = User(token);
  for (const auto& d : u.devices) {
    if (d.id == id) {
      u.current = id;
      return Status::Ok();
    }
  }
  return Status::NotFound(fmt::format("no virtual device {}", id));
}

Status Registry::SetCurrentSize(const std::string& token, const std::string& size) {
  if (SizeCount(size) < 1) return Status::InvalidArgument("unknown device size '" + size + "'");
  UserState& u = User(token);
  if (LeaseOfVirtualDevice(token, u.current)) {
    return Status::InvalidArgument(
        "the current virtual device is in use; its size cannot change now");
  }
  for (auto& d : u.devices) {
    if (d.id == u.current) d.size = size;
  }
  return Status::Ok();
}

const Lease* Registry::LeaseOfVirtualDevice(const std::string& token, int vdev) const {
  for (const auto& [id, l] : leases_) {
    if (l.token == token && l.vdev == vdev) return &l;
  }
  return nullptr;
}

int Registry::FreeDevices() const {
  int n = 0;
  for (const auto& [name, node] : nodes_) {
    if (!node.alive) continue;
    for (const Device& d : node.devices) n += d.lease == 0;
  }
  return n;
}

StatusOr<Lease> Registry::Allocate(const std::string& token, const std::string& request_id,
                                   int num_devices, Clock::duration ttl, Clock::time_point now,
                                   int vdev, int64_t pid) {
  if (token.empty() || request_id.empty()) {
    return Status::InvalidArgument("allocate: token and request_id are required");
  }
  if (num_devices < 1) return Status::InvalidArgument("allocate: num_devices must be >= 1");
  for (const auto& [id, l] : leases_) {
    if (l.token == token && l.request_id == request_id) return l;  // a retry: same grant
  }
  if (FreeDevices() < num_devices) {
    return Status(
        StatusCode::kResourceExhausted,
        fmt::format("allocate: {} devices requested, {} free", num_devices, FreeDevices()));
  }
  // Fewest nodes: a single node with enough free devices (the tightest fit), else the emptiest
  // nodes first.
  std::vector<std::pair<int, Node*>> free;
  for (auto& [name, n] : nodes_) {
    if (!n.alive) continue;
    int f = 0;
    for (const Device& d : n.devices) f += d.lease == 0;
    if (f > 0) free.emplace_back(f, &n);
  }
  std::sort(free.begin(), free.end(), [](const auto& a, const auto& b) {
    return a.first != b.first ? a.first > b.first : a.second->name < b.second->name;
  });
  std::vector<Node*> chosen;
  Node* single = nullptr;
  for (auto& [f, n] : free) {
    if (f >= num_devices && (!single || f < static_cast<int>(std::count_if(
                                                single->devices.begin(), single->devices.end(),
                                                [](const Device& d) { return d.lease == 0; })))) {
      single = n;
    }
  }
  if (single) {
    chosen.push_back(single);
  } else {
    int have = 0;
    for (auto& [f, n] : free) {
      if (have >= num_devices) break;
      chosen.push_back(n);
      have += f;
    }
  }
  Lease l;
  l.id = next_lease_++;
  l.secret = RandomSecret();
  l.token = token;
  l.request_id = request_id;
  l.expiry = now + ttl;
  l.vdev = vdev;
  l.pid = pid;
  for (Node* n : chosen) {
    for (Device& d : n->devices) {
      if (static_cast<int>(l.devices.size()) == num_devices) break;
      if (d.lease) continue;
      d.lease = l.id;
      l.devices.emplace_back(n->name, d.id);
    }
  }
  leases_[l.id] = l;
  return l;
}

Status Registry::Renew(uint64_t id, const std::string& secret, Clock::duration ttl,
                       Clock::time_point now) {
  auto it = leases_.find(id);
  if (it == leases_.end() || !SecretsEqual(it->second.secret, secret)) {
    return Status::NotFound(fmt::format("no lease {} with that secret", id));
  }
  it->second.expiry = now + ttl;
  return Status::Ok();
}

void Registry::Free(uint64_t id) {
  for (auto& [name, n] : nodes_) {
    for (Device& d : n.devices) {
      if (d.lease == id) d.lease = 0;
    }
  }
  leases_.erase(id);
}

Status Registry::Release(uint64_t id, const std::string& secret) {
  auto it = leases_.find(id);
  if (it == leases_.end() || !SecretsEqual(it->second.secret, secret)) {
    return Status::NotFound(fmt::format("no lease {} with that secret", id));
  }
  Free(id);
  return Status::Ok();
}

std::vector<uint64_t> Registry::ExpireLeases(Clock::time_point now) {
  std::vector<uint64_t> gone;
  for (const auto& [id, l] : leases_) {
    if (now > l.expiry) gone.push_back(id);
  }
  for (uint64_t id : gone) Free(id);
  return gone;
}

nlohmann::json Registry::ToJson() const {
  nlohmann::json nodes = nlohmann::json::array();
  for (const auto& [name, n] : nodes_) {
    nlohmann::json devs = nlohmann::json::array();
    for (const Device& d : n.devices) {
      devs.push_back({{"id", d.id},
                      {"kind", d.kind},
                      {"name", d.name},
                      {"memory_bytes", d.memory_bytes},
                      {"lease", d.lease}});
    }
    nodes.push_back({{"name", name},
                     {"address", n.address},
                     {"alive", n.alive},
                     {"devices", devs},
                     {"profile", n.profile}});
  }
  return {{"nodes", nodes}, {"num_leases", leases_.size()}, {"free_devices", FreeDevices()}};
}

}  // namespace moreh::scheduler
