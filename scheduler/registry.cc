#include "scheduler/registry.h"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <random>

#include "runtime/net/auth.h"
#include "runtime/net/protocol.h"

namespace moreh::scheduler {

Status Registry::RegisterWorker(Node node, Clock::time_point now, std::vector<uint64_t>* ended) {
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
  std::vector<uint64_t> gone;
  if (old != nodes_.end()) {  // re-registration: keep leases of devices that still exist
    for (const Device& o : old->second.devices) {
      bool kept = false;
      for (Device& d : node.devices) {
        if (o.id == d.id) {
          d.lease = o.lease;
          kept = true;
        }
      }
      if (!kept && o.lease && std::find(gone.begin(), gone.end(), o.lease) == gone.end()) {
        gone.push_back(o.lease);
      }
    }
  }
  for (Device& d : node.devices) {
    if (d.lease && !leases_.count(d.lease)) d.lease = 0;
  }
  node.last_heartbeat = now;
  node.alive = true;
  const std::string name = node.name;
  nodes_[name] = std::move(node);
  for (uint64_t l : gone) Free(l);  // its other devices are freed with it
  if (ended) ended->insert(ended->end(), gone.begin(), gone.end());
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

std::vector<std::pair<uint64_t, std::string>> Registry::ReapDead(Clock::time_point now,
                                                                 Clock::duration dead_after) {
  std::vector<std::pair<uint64_t, std::string>> hit;
  for (auto& [name, n] : nodes_) {
    if (!n.alive || now - n.last_heartbeat <= dead_after) continue;
    n.alive = false;
    for (const Device& d : n.devices) {
      if (d.lease &&
          std::none_of(hit.begin(), hit.end(), [&](const auto& h) { return h.first == d.lease; })) {
        hit.emplace_back(d.lease, name);
      }
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
  if (sizes_.empty()) return net::DeviceSizeCount(name);
  auto it = sizes_.find(Lower(name));
  return it == sizes_.end() ? -1 : it->second;
}

UserState& Registry::User(const std::string& user) {
  UserState& u = users_[user];
  if (u.devices.empty()) {
    u.devices.push_back({0, "Small"});
    u.current = 0;
  }
  return u;
}

StatusOr<int> Registry::AddVirtualDevice(const std::string& user, const std::string& size) {
  if (SizeCount(size) < 1) return Status::InvalidArgument("unknown device size '" + size + "'");
  UserState& u = User(user);
  if (static_cast<int>(u.devices.size()) >= kMaxVirtualDevices) {
    return Status::InvalidArgument(
        fmt::format("a user holds at most {} virtual devices", kMaxVirtualDevices));
  }
  int id = 0;
  for (const auto& d : u.devices) id = std::max(id, d.id + 1);
  u.devices.push_back({id, size});
  return id;
}

Status Registry::RemoveVirtualDevice(const std::string& user, int id) {
  UserState& u = User(user);
  auto it =
      std::find_if(u.devices.begin(), u.devices.end(), [&](const auto& d) { return d.id == id; });
  if (it == u.devices.end()) return Status::NotFound(fmt::format("no virtual device {}", id));
  if (u.devices.size() == 1)
    return Status::InvalidArgument("the last virtual device cannot be removed");
  if (LeaseOfVirtualDevice(user, id))
    return Status::InvalidArgument(fmt::format("virtual device {} is in use", id));
  u.devices.erase(it);
  if (u.current == id) u.current = u.devices.front().id;
  return Status::Ok();
}

Status Registry::SwitchVirtualDevice(const std::string& user, int id) {
  UserState& u = User(user);
  for (const auto& d : u.devices) {
    if (d.id == id) {
      u.current = id;
      return Status::Ok();
    }
  }
  return Status::NotFound(fmt::format("no virtual device {}", id));
}

Status Registry::SetCurrentSize(const std::string& user, const std::string& size) {
  if (SizeCount(size) < 1) return Status::InvalidArgument("unknown device size '" + size + "'");
  UserState& u = User(user);
  if (LeaseOfVirtualDevice(user, u.current)) {
    return Status::InvalidArgument(
        "the current virtual device is in use; its size cannot change now");
  }
  for (auto& d : u.devices) {
    if (d.id == u.current) d.size = size;
  }
  return Status::Ok();
}

const Lease* Registry::LeaseOfVirtualDevice(const std::string& user, int vdev) const {
  for (const auto& [id, l] : leases_) {
    if (l.user == user && l.vdev == vdev) return &l;
  }
  return nullptr;
}

int Registry::AliveDevices() const {
  int n = 0;
  for (const auto& [name, node] : nodes_) {
    if (node.alive) n += static_cast<int>(node.devices.size());
  }
  return n;
}

int Registry::FreeDevices() const {
  int n = 0;
  for (const auto& [name, node] : nodes_) {
    if (!node.alive) continue;
    for (const Device& d : node.devices) n += d.lease == 0;
  }
  return n;
}

StatusOr<Lease> Registry::Allocate(const std::string& user, const std::string& request_id,
                                   int num_devices, Clock::duration ttl, Clock::time_point now,
                                   int vdev, int64_t pid, bool* granted) {
  if (granted) *granted = false;
  if (user.empty() || request_id.empty()) {
    return Status::InvalidArgument("allocate: token and request_id are required");
  }
  if (num_devices < 1) return Status::InvalidArgument("allocate: num_devices must be >= 1");
  for (auto& [id, l] : leases_) {
    if (l.user != user || l.request_id != request_id) continue;
    // A retry: the same grant. Restored from the state store, the lease has only its secret's
    // hash; its holder never received the secret (it is still asking), so it gets a new one.
    if (l.secret.empty()) {
      l.secret = net::RandomSecret();
      l.secret_hash = net::HashSecret(l.secret);
      if (granted) *granted = true;
    }
    return l;
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
  l.secret = net::RandomSecret();
  l.secret_hash = net::HashSecret(l.secret);
  l.user = user;
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
  if (granted) *granted = true;
  return l;
}

Status Registry::Renew(uint64_t id, const std::string& secret, Clock::duration ttl,
                       Clock::time_point now) {
  auto it = leases_.find(id);
  if (it == leases_.end() || !net::SecretsEqual(it->second.secret_hash, net::HashSecret(secret))) {
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
  if (it == leases_.end() || !net::SecretsEqual(it->second.secret_hash, net::HashSecret(secret))) {
    return Status::NotFound(fmt::format("no lease {} with that secret", id));
  }
  Free(id);
  return Status::Ok();
}

Status Registry::EndLease(uint64_t id) {
  if (!leases_.count(id)) return Status::NotFound(fmt::format("no lease {}", id));
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
  net::ClusterView v;
  for (const auto& [name, n] : nodes_) {
    net::NodeView node;
    node.name = name;
    node.address = n.address;
    node.alive = n.alive;
    for (const Device& d : n.devices) {
      node.devices.push_back({d.id, d.kind, d.name, d.memory_bytes, d.lease});
    }
    FieldReader profile(n.profile, "profile");  // not an object: every field unknown
    node.profile = net::WorkerProfile::Read(profile);
    v.nodes.push_back(std::move(node));
  }
  v.num_leases = static_cast<int64_t>(leases_.size());
  v.free_devices = FreeDevices();
  return v.ToJson();
}

}  // namespace moreh::scheduler
