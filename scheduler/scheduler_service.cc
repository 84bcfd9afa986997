#include "scheduler/scheduler_service.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <optional>

#include "runtime/net/auth.h"
#include "scheduler/state_store.h"

namespace moreh::scheduler {
using json = nlohmann::json;
using net::Msg;

SchedulerService::SchedulerService(ServiceConfig config, Registry registry,
                                   std::unique_ptr<StateStore> store)
    : config_(std::move(config)), registry_(std::move(registry)), store_(std::move(store)) {}

SchedulerService::~SchedulerService() = default;

void SchedulerService::Persist(const Status& s) {
  // A failing disk is logged loudly; the in-memory state stays authoritative.
  if (!s.ok()) spdlog::error("scheduler state: {}", s.message());
}

Status SchedulerService::Refuse(Peer& p, Msg t, const Status& why, std::string_view code) {
  p.Send(net::Error(net::MsgName(t), why.message(), code));
  return Status::Ok();
}

Status SchedulerService::Handle(Peer& p, const json& m, Clock::time_point now) {
  auto type = net::TypeOf(m);
  if (!type.ok()) return type.status();
  const Msg t = *type;
  if (!p.said_hello) {  // authentication comes before anything else is read
    if (t != Msg::kHello) return Status::InvalidArgument("the first message must be 'hello'");
    return OnHello(p, m);
  }
  struct Route {
    Msg msg;
    std::optional<net::Role> role;  // nullopt: any
    Handler fn;
  };
  using R = net::Role;
  static const Route kRoutes[] = {
      {Msg::kRegisterWorker, R::kWorker, &SchedulerService::OnRegisterWorker},
      {Msg::kHeartbeat, R::kWorker, &SchedulerService::OnHeartbeat},
      {Msg::kAllocate, R::kClient, &SchedulerService::OnAllocate},
      {Msg::kRenew, R::kClient, &SchedulerService::OnRenew},
      {Msg::kRelease, R::kClient, &SchedulerService::OnRelease},
      {Msg::kVdevList, R::kClient, &SchedulerService::OnVirtualDevice},
      {Msg::kVdevAdd, R::kClient, &SchedulerService::OnVirtualDevice},
      {Msg::kVdevRemove, R::kClient, &SchedulerService::OnVirtualDevice},
      {Msg::kVdevSwitch, R::kClient, &SchedulerService::OnVirtualDevice},
      {Msg::kVdevSetSize, R::kClient, &SchedulerService::OnVirtualDevice},
      {Msg::kVdevReset, R::kClient, &SchedulerService::OnVirtualDevice},
      {Msg::kClusterStatus, std::nullopt, &SchedulerService::OnClusterStatus},
  };
  if (t == Msg::kHello) return Refuse(p, t, Status::InvalidArgument("hello was already said"));
  for (const Route& r : kRoutes) {
    if (r.msg != t || (r.role && *r.role != p.role)) continue;
    return (this->*r.fn)(p, t, m, now);
  }
  return Status::InvalidArgument(fmt::format("unknown message type '{}' for a {}", net::MsgName(t),
                                             p.role == R::kWorker ? "worker" : "client"));
}

Status SchedulerService::OnHello(Peer& p, const json& m) {
  auto h = net::SchedulerHello::FromJson(m);
  if (!h.ok()) return h.status();
  if (h->version != net::kProtocolVersion) {
    return Status::InvalidArgument(fmt::format("protocol version {} (this scheduler speaks {})",
                                               h->version, net::kProtocolVersion));
  }
  if (h->role == net::Role::kWorker && !net::SecretsEqual(h->key, config_.cluster_key)) {
    return Status::InvalidArgument("wrong cluster key");
  }
  p.said_hello = true;
  p.role = h->role;
  if (h->role == net::Role::kClient) p.user = net::HashSecret(h->token);
  p.Authenticated();
  json ok = net::Message(Msg::kHelloOk);
  ok["version"] = net::kProtocolVersion;
  p.Send(ok);
  return Status::Ok();
}

Status SchedulerService::OnRegisterWorker(Peer& p, Msg t, const json& m, Clock::time_point now) {
  auto r = net::RegisterWorker::FromJson(m);
  if (!r.ok()) return Refuse(p, t, r.status());
  Node n;
  n.name = r->node;
  n.address = r->address;
  for (const net::DeviceInfo& d : r->devices) {
    n.devices.push_back({static_cast<int>(d.id), d.kind, d.name, d.memory_bytes, 0});
  }
  n.profile = r->profile.ToJson();
  std::vector<uint64_t> ended;
  Status s = registry_.RegisterWorker(n, now, &ended);
  if (!s.ok()) return Refuse(p, t, s);
  if (store_) Persist(store_->SaveNode(registry_.nodes().at(n.name)));
  for (uint64_t l : ended) {
    NotifyLeaseLost(
        l, fmt::format("worker '{}' registered again without a device of the lease", n.name));
    if (store_) Persist(store_->DeleteLease(l));
  }
  p.node = n.name;
  reported_dead_.erase(n.name);
  spdlog::info("worker '{}' registered ({} devices) at {}", n.name, n.devices.size(), n.address);
  net::RegisterOk ok;
  ok.heartbeat_period_ms = config_.heartbeat_period.count();
  p.Send(ok.ToJson());
  // A worker that restarted, or registers with a scheduler that restarted, learns again of the
  // leases that hold its devices.
  for (const auto& [id, l] : registry_.leases()) PushLease(l, &p);
  return Status::Ok();
}

Status SchedulerService::OnHeartbeat(Peer& p, Msg t, const json&, Clock::time_point now) {
  Status s = registry_.Heartbeat(p.node, now);
  if (!s.ok()) return Refuse(p, t, s);
  p.Send(net::Message(Msg::kHeartbeatOk));
  return Status::Ok();
}

Status SchedulerService::OnAllocate(Peer& p, Msg t, const json& m, Clock::time_point now) {
  auto req = net::AllocateRequest::FromJson(m);
  if (!req.ok()) return Refuse(p, t, req.status());
  std::string size = req->device_size;
  int num = static_cast<int>(req->num_devices);
  int vdev = -1;
  if (req->device_size.empty() && req->num_devices == 0) {
    // The user's current virtual device; one process at a time.
    const UserState& u = registry_.User(p.user);
    vdev = u.current;
    for (const auto& d : u.devices) {
      if (d.id == u.current) size = d.size;
    }
    const Lease* held = registry_.LeaseOfVirtualDevice(p.user, vdev);
    if (held && held->request_id != req->request_id) {
      net::Busy b;
      b.pid = held->pid;
      b.vdev = vdev;
      p.Send(b.ToJson());
      return Status::Ok();
    }
    num = registry_.SizeCount(size);
  } else if (!size.empty()) {
    num = registry_.SizeCount(size);
    if (num < 0) return Refuse(p, t, Status::InvalidArgument("unknown device size '" + size + "'"));
  }
  bool granted = false;
  auto lease = registry_.Allocate(p.user, req->request_id, num, config_.lease_ttl, now, vdev,
                                  req->pid, &granted);
  if (!lease.ok()) {
    if (lease.status().code() != StatusCode::kResourceExhausted) {
      return Refuse(p, t, lease.status());
    }
    net::ErrorReply e;
    e.request = net::MsgName(t);
    e.message = lease.status().message();
    e.code = net::kNotEnoughDevices;
    e.needed = num;
    e.free = registry_.FreeDevices();
    e.alive = registry_.AliveDevices();
    p.Send(e.ToJson());
    return Status::Ok();
  }
  p.leases.insert(lease->id);
  if (granted) {
    if (store_) Persist(store_->SaveLease(lease.value(), registry_.next_lease()));
    PushLease(lease.value());
  }
  net::AllocateOk ok;
  ok.lease = lease->id;
  ok.secret = lease->secret;
  ok.ttl_ms = config_.lease_ttl.count();
  for (const auto& [node, id] : lease->devices) {
    const Node& n = registry_.nodes().at(node);
    net::GrantedDeviceInfo g;
    g.node = node;
    g.address = n.address;
    g.device = id;
    for (const Device& dev : n.devices) {
      if (dev.id != id) continue;
      g.kind = dev.kind;
      g.name = dev.name;
      g.memory_bytes = dev.memory_bytes;
    }
    FieldReader profile(n.profile, "profile");
    g.profile = net::WorkerProfile::Read(profile);
    ok.devices.push_back(std::move(g));
  }
  p.Send(ok.ToJson());
  return Status::Ok();
}

Status SchedulerService::OnRenew(Peer& p, Msg t, const json& m, Clock::time_point now) {
  auto c = net::LeaseCredentials::FromJson(m);
  if (!c.ok()) return Refuse(p, t, c.status());
  Status s = registry_.Renew(c->lease, c->secret, config_.lease_ttl, now);
  if (!s.ok()) return Refuse(p, t, s, net::kUnknownLease);
  // A client that reconnected (the scheduler restarted) hears of the lease's loss here.
  p.leases.insert(c->lease);
  if (store_) Persist(store_->SaveLease(registry_.leases().at(c->lease), registry_.next_lease()));
  p.Send(net::Message(Msg::kRenewOk));
  return Status::Ok();
}

Status SchedulerService::OnRelease(Peer& p, Msg t, const json& m, Clock::time_point) {
  auto c = net::LeaseCredentials::FromJson(m);
  if (!c.ok()) return Refuse(p, t, c.status());
  Status s = registry_.Release(c->lease, c->secret);
  if (!s.ok()) return Refuse(p, t, s, net::kUnknownLease);
  p.leases.erase(c->lease);
  DropLease(c->lease);
  if (store_) Persist(store_->DeleteLease(c->lease));
  p.Send(net::Message(Msg::kReleaseOk));
  return Status::Ok();
}

Status SchedulerService::OnVirtualDevice(Peer& p, Msg t, const json& m, Clock::time_point) {
  Status s = Status::Ok();
  if (t == Msg::kVdevAdd || t == Msg::kVdevSetSize) {
    auto v = net::VdevSize::FromJson(m);
    s = !v.ok()              ? v.status()
        : t == Msg::kVdevAdd ? registry_.AddVirtualDevice(p.user, v->size).status()
                             : registry_.SetCurrentSize(p.user, v->size);
  } else if (t == Msg::kVdevRemove || t == Msg::kVdevSwitch) {
    auto v = net::VdevId::FromJson(m);
    const int id = v.ok() ? static_cast<int>(v->id) : 0;
    s = !v.ok()                 ? v.status()
        : t == Msg::kVdevRemove ? registry_.RemoveVirtualDevice(p.user, id)
                                : registry_.SwitchVirtualDevice(p.user, id);
  } else if (t == Msg::kVdevReset) {  // moreh-smi --reset: end the job stuck on the device
    const UserState& cu = registry_.User(p.user);
    if (const Lease* l = registry_.LeaseOfVirtualDevice(p.user, cu.current)) {
      const uint64_t id = l->id;
      NotifyLeaseLost(id, "reset by the user (moreh-smi --reset)");
      s = registry_.EndLease(id);
      if (s.ok() && store_) Persist(store_->DeleteLease(id));
    }
  }
  if (!s.ok()) return Refuse(p, t, s);
  const UserState& u = registry_.User(p.user);
  if (store_ && t != Msg::kVdevList) Persist(store_->SaveUser(p.user, u));
  net::Vdevs list;
  list.current = u.current;
  for (const auto& d : u.devices) {
    const Lease* l = registry_.LeaseOfVirtualDevice(p.user, d.id);
    list.devices.push_back({d.id, d.size, registry_.SizeCount(d.size), d.id == u.current,
                            l ? l->pid : 0, l ? l->id : 0});
  }
  p.Send(list.ToJson());
  return Status::Ok();
}

Status SchedulerService::OnClusterStatus(Peer& p, Msg, const json&, Clock::time_point) {
  json ok = net::Message(Msg::kClusterStatusOk);
  ok["cluster"] = registry_.ToJson();
  p.Send(ok);
  return Status::Ok();
}

void SchedulerService::NotifyLeaseLost(uint64_t lease, const std::string& why) {
  net::LeaseLost lost;
  lost.lease = lease;
  lost.reason = why;
  const json m = lost.ToJson();
  for (Peer* p : peers_) {
    if (p->role == net::Role::kClient && p->leases.count(lease)) p->Send(m);
  }
  DropLease(lease);
}

void SchedulerService::PushLease(const Lease& lease, Peer* only) {
  for (Peer* p : peers_) {
    if (p->role != net::Role::kWorker || p->node.empty() || (only && p != only)) continue;
    net::LeaseGranted g;
    g.lease = lease.id;
    g.secret_hash = lease.secret_hash;
    for (const auto& [node, id] : lease.devices) {
      if (node == p->node) g.devices.push_back(id);
    }
    if (!g.devices.empty()) p->Send(g.ToJson());
  }
}

void SchedulerService::DropLease(uint64_t lease) {
  net::DropLease d;
  d.lease = lease;
  const json m = d.ToJson();
  for (Peer* p : peers_) {
    if (p->role == net::Role::kWorker && !p->node.empty()) p->Send(m);
  }
}

void SchedulerService::Tick(Clock::time_point now) {
  for (const auto& [lease, node] : registry_.ReapDead(now, config_.dead_after)) {
    NotifyLeaseLost(lease, fmt::format("worker '{}' stopped heartbeating (none for {} ms)", node,
                                       config_.dead_after.count()));
  }
  for (const auto& [name, n] : registry_.nodes()) {
    if (!n.alive && n.last_heartbeat + config_.dead_after <= now && !reported_dead_[name]) {
      reported_dead_[name] = true;
      spdlog::warn("worker '{}' is dead (no heartbeat for {} ms)", name,
                   config_.dead_after.count());
    }
  }
  for (uint64_t l : registry_.ExpireLeases(now)) {
    NotifyLeaseLost(
        l, fmt::format("the lease expired (not renewed within {} ms)", config_.lease_ttl.count()));
    if (store_) Persist(store_->DeleteLease(l));
  }
}

}  // namespace moreh::scheduler
