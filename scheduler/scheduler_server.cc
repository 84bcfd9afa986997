#include "scheduler/scheduler_server.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <boost/asio.hpp>
#include <deque>
#include <fstream>
#include <set>

#include "runtime/net/framing.h"
#include "runtime/planner/cluster.h"
#include "scheduler/registry.h"
#include "scheduler/state_store.h"

namespace moreh::scheduler {
namespace asio = boost::asio;
using asio::ip::tcp;
using json = nlohmann::json;

inline constexpr int kProtocolVersion = 1;

Status SchedulerConfig::Validate() const {
  if (port < 0 || port > 65535)
    return Status::InvalidArgument(fmt::format("port {} out of range", port));
  boost::system::error_code ec;
  const auto addr = asio::ip::make_address(host, ec);
  if (ec) return Status::InvalidArgument("listen address '" + host + "' is not an IP address");
  if (!addr.is_loopback() && cluster_key.empty()) {
    return Status::InvalidArgument("refusing to listen on " + host + " without a cluster key");
  }
  if (heartbeat_period.count() <= 0 || dead_after <= heartbeat_period || lease_ttl.count() <= 0 ||
      idle_timeout.count() <= 0) {
    return Status::InvalidArgument("periods must be positive and dead_after > heartbeat_period");
  }
  return Status::Ok();
}

class Connection;

struct SchedulerServer::Impl {
  SchedulerConfig config;
  asio::io_context io;
  tcp::acceptor acceptor{io};
  asio::signal_set signals{io, SIGINT, SIGTERM};
  asio::steady_timer tick{io};
  Registry registry;
  std::unique_ptr<StateStore> store;  // null: in memory only
  std::set<std::shared_ptr<Connection>> connections;

  // Persists a change; a failing disk is logged loudly (the in-memory state stays authoritative).
  void Persist(const Status& s) {
    if (!s.ok()) spdlog::error("scheduler state: {}", s.message());
  }

  void Accept();
  void Tick();
  void NotifyLeaseLost(uint64_t lease, const std::string& why);
  // Tells the workers of a lease about it (they admit its holder) and, later, to drop its job.
  void PushLease(const Lease& lease);
  void DropLease(uint64_t lease);
};

// One peer. Reads frames, answers each in order with one write in flight.
class Connection : public std::enable_shared_from_this<Connection> {
 public:
  Connection(tcp::socket socket, SchedulerServer::Impl* server)
      : socket_(std::move(socket)), timer_(socket_.get_executor()), server_(server) {}
  void Start() {
    ResetIdle();
    Read();
  }
  void Send(const json& m) {
    out_.push_back(net::EncodeFrame(m));
    if (out_.size() == 1) Write();
  }
  void Close() {
    boost::system::error_code ec;
    timer_.cancel();
    socket_.shutdown(tcp::socket::shutdown_both, ec);
    socket_.close(ec);
    server_->connections.erase(shared_from_this());
  }
  const std::string& role() const { return role_; }
  const std::string& node() const { return node_; }
  const std::set<uint64_t>& leases() const { return leases_; }

 private:
  void ResetIdle() {
    timer_.expires_after(server_->config.idle_timeout);
    timer_.async_wait([self = shared_from_this()](boost::system::error_code ec) {
      if (!ec) self->Close();
    });
  }
  void Read() {
    socket_.async_read_some(
        asio::buffer(buf_), [self = shared_from_this()](boost::system::error_code ec, size_t n) {
          if (ec) return self->Close();
          Status s = self->decoder_.Feed(std::string_view(self->buf_.data(), n));
          while (s.ok() && self->decoder_.HasMessage()) {
            self->ResetIdle();
            s = self->Handle(self->decoder_.Pop());
          }
          if (!s.ok()) return self->Fail(s);
          if (!self->closing_) self->Read();
        });
  }
  void Write() {
    asio::async_write(socket_, asio::buffer(out_.front()),
                      [self = shared_from_this()](boost::system::error_code ec, size_t) {
                        if (ec) return self->Close();
                        self->out_.pop_front();
                        if (!self->out_.empty()) return self->Write();
                        if (self->closing_) self->Close();
                      });
  }
  // Answers with an error and closes once it is written.
  void Fail(const Status& s) {
    closing_ = true;
    Send({{"type", "error"}, {"message", s.message()}});
  }
  Status Handle(const json& m);

  tcp::socket socket_;
  asio::steady_timer timer_;
  SchedulerServer::Impl* server_;
  net::FrameDecoder decoder_;
  std::array<char, 16384> buf_;
  std::deque<std::string> out_;
  bool closing_ = false;
  std::string role_;  // "" until hello
  std::string token_, node_;
  std::set<uint64_t> leases_;
};

namespace {
template <typename T>
Status Get(const json& m, const char* key, T* out) {
  const auto it = m.find(key);
  if (it == m.end()) return Status::InvalidArgument(fmt::format("'{}' is missing", key));
  try {
    *out = it->get<T>();
  } catch (const std::exception&) {
    return Status::InvalidArgument(fmt::format("'{}' has the wrong type", key));
  }
  return Status::Ok();
}
}  // namespace

Status Connection::Handle(const json& m) {
  const std::string type = m["type"].get<std::string>();
  const auto now = Clock::now();
  Registry& reg = server_->registry;
  if (role_.empty()) {  // authentication comes before anything else is read
    if (type != "hello") return Status::InvalidArgument("the first message must be 'hello'");
    int version = 0;
    std::string role;
    Status s = Get(m, "version", &version);
    if (s.ok()) s = Get(m, "role", &role);
    if (!s.ok()) return s;
    if (version != kProtocolVersion) {
      return Status::InvalidArgument(
          fmt::format("protocol version {} (this scheduler speaks {})", version, kProtocolVersion));
    }
    if (role == "worker") {
      std::string key;
      if (!Get(m, "key", &key).ok() || !SecretsEqual(key, server_->config.cluster_key)) {
        return Status::InvalidArgument("wrong cluster key");
      }
    } else if (role == "client") {
      s = Get(m, "token", &token_);
      if (!s.ok() || token_.empty()) return Status::InvalidArgument("a client needs a token");
    } else {
      return Status::InvalidArgument("role must be 'worker' or 'client'");
    }
    role_ = role;
    Send({{"type", "hello_ok"}, {"version", kProtocolVersion}});
    return Status::Ok();
  }
  auto reply_error = [&](const Status& s) {
    Send({{"type", "error"}, {"request", type}, {"message", s.message()}});
    return Status::Ok();  // a refused request keeps the connection
  };
  if (role_ == "worker" && type == "register_worker") {
    Node n;
    Status s = Get(m, "node", &n.name);
    if (s.ok()) s = Get(m, "address", &n.address);
    if (!s.ok()) return reply_error(s);
    const auto devs = m.find("devices");
    if (devs == m.end() || !devs->is_array())
      return reply_error(Status::InvalidArgument("'devices' must be an array"));
    for (const json& d : *devs) {
      Device dev;
      if (!d.is_object()) return reply_error(Status::InvalidArgument("a device must be an object"));
      s = Get(d, "id", &dev.id);
      if (s.ok()) s = Get(d, "kind", &dev.kind);
      if (s.ok()) s = Get(d, "name", &dev.name);
      if (s.ok()) s = Get(d, "memory_bytes", &dev.memory_bytes);
      if (!s.ok()) return reply_error(s);
      n.devices.push_back(dev);
    }
    n.profile = m.value("profile", json::object());
    s = reg.RegisterWorker(n, now);
    if (!s.ok()) return reply_error(s);
    if (server_->store) server_->Persist(server_->store->SaveNode(reg.nodes().at(n.name)));
    node_ = n.name;
    spdlog::info("worker '{}' registered ({} devices) at {}", n.name, n.devices.size(), n.address);
    Send({{"type", "register_ok"},
          {"heartbeat_period_ms", server_->config.heartbeat_period.count()}});
    return Status::Ok();
  }
  if (role_ == "worker" && type == "heartbeat") {
    Status s = reg.Heartbeat(node_, now);
    if (!s.ok()) return reply_error(s);
    Send({{"type", "heartbeat_ok"}});
    return Status::Ok();
  }
  if (role_ == "client" && type.rfind("vdev_", 0) == 0) {
    Status s = Status::Ok();
    if (type == "vdev_add") {
      std::string size;
      s = Get(m, "size", &size);
      if (s.ok()) s = reg.AddVirtualDevice(token_, size).status();
    } else if (type == "vdev_remove" || type == "vdev_switch") {
      int id = 0;
      s = Get(m, "id", &id);
      if (s.ok())
        s = type == "vdev_remove" ? reg.RemoveVirtualDevice(token_, id)
                                  : reg.SwitchVirtualDevice(token_, id);
    } else if (type == "vdev_set_size") {
      std::string size;
      s = Get(m, "size", &size);
      if (s.ok()) s = reg.SetCurrentSize(token_, size);
    } else if (type == "vdev_reset") {  // moreh-smi --reset: end the job stuck on the device
      const UserState& cu = reg.User(token_);
      if (const Lease* l = reg.LeaseOfVirtualDevice(token_, cu.current)) {
        const uint64_t id = l->id;
        s = reg.Release(id, l->secret);
        if (s.ok()) {
          server_->NotifyLeaseLost(id, "reset by the user (moreh-smi --reset)");
          if (server_->store) server_->Persist(server_->store->DeleteLease(id));
        }
      }
    } else if (type != "vdev_list") {
      return Status::InvalidArgument("unknown message type '" + type + "'");
    }
    if (!s.ok()) return reply_error(s);
    const UserState& u = reg.User(token_);
    if (server_->store && type != "vdev_list")
      server_->Persist(server_->store->SaveUser(token_, u));
    json list = json::array();
    for (const auto& d : u.devices) {
      const Lease* l = reg.LeaseOfVirtualDevice(token_, d.id);
      list.push_back({{"id", d.id},
                      {"size", d.size},
                      {"num_devices", reg.SizeCount(d.size)},
                      {"current", d.id == u.current},
                      {"pid", l ? l->pid : 0},
                      {"lease", l ? l->id : 0}});
    }
    Send({{"type", "vdevs"}, {"devices", list}, {"current", u.current}});
    return Status::Ok();
  }
  if (role_ == "client" && type == "allocate") {
    std::string request_id, size;
    int num = 0;
    int vdev = -1;
    Status s = Get(m, "request_id", &request_id);
    if (!s.ok()) return reply_error(s);
    if (!m.contains("device_size") && !m.contains("num_devices")) {
      // The user's current virtual device; one process at a time.
      const UserState& u = reg.User(token_);
      vdev = u.current;
      for (const auto& d : u.devices) {
        if (d.id == u.current) size = d.size;
      }
      const Lease* held = reg.LeaseOfVirtualDevice(token_, vdev);
      if (held && held->request_id != request_id) {
        Send({{"type", "busy"}, {"pid", held->pid}, {"vdev", vdev}});
        return Status::Ok();
      }
      num = reg.SizeCount(size);
    } else if (m.contains("device_size")) {
      s = Get(m, "device_size", &size);
      num = s.ok() ? reg.SizeCount(size) : 0;
      if (s.ok() && num < 0) s = Status::InvalidArgument("unknown device size '" + size + "'");
    } else {
      s = Get(m, "num_devices", &num);
    }
    if (!s.ok()) return reply_error(s);
    auto lease = reg.Allocate(token_, request_id, num, server_->config.lease_ttl, now, vdev,
                              m.value("pid", int64_t{0}));
    if (!lease.ok()) return reply_error(lease.status());
    const bool fresh = !leases_.count(lease->id);
    leases_.insert(lease->id);
    if (fresh) {
      if (server_->store)
        server_->Persist(server_->store->SaveLease(lease.value(), reg.next_lease()));
      server_->PushLease(lease.value());
    }
    json devices = json::array();
    for (const auto& [node, id] : lease->devices) {
      const Node& n = reg.nodes().at(node);
      json d = {{"node", node}, {"address", n.address}, {"device", id}, {"profile", n.profile}};
      for (const Device& dev : n.devices) {
        if (dev.id != id) continue;
        d["kind"] = dev.kind;
        d["name"] = dev.name;
        d["memory_bytes"] = dev.memory_bytes;
      }
      devices.push_back(std::move(d));
    }
    Send({{"type", "allocate_ok"},
          {"lease", lease->id},
          {"secret", lease->secret},
          {"ttl_ms", server_->config.lease_ttl.count()},
          {"devices", devices}});
    return Status::Ok();
  }
  if (role_ == "client" && (type == "renew" || type == "release")) {
    uint64_t lease = 0;
    std::string secret;
    Status s = Get(m, "lease", &lease);
    if (s.ok()) s = Get(m, "secret", &secret);
    if (s.ok()) {
      s = type == "renew" ? reg.Renew(lease, secret, server_->config.lease_ttl, now)
                          : reg.Release(lease, secret);
    }
    if (!s.ok()) return reply_error(s);
    if (type == "release") {
      leases_.erase(lease);
      server_->DropLease(lease);
      if (server_->store) server_->Persist(server_->store->DeleteLease(lease));
    } else if (server_->store) {
      server_->Persist(server_->store->SaveLease(reg.leases().at(lease), reg.next_lease()));
    }
    Send({{"type", type + "_ok"}});
    return Status::Ok();
  }
  if (type == "cluster_status") {
    Send({{"type", "cluster_status_ok"}, {"cluster", reg.ToJson()}});
    return Status::Ok();
  }
  return Status::InvalidArgument("unknown message type '" + type + "' for a " + role_);
}

void SchedulerServer::Impl::Accept() {
  acceptor.async_accept([this](boost::system::error_code ec, tcp::socket socket) {
    if (!acceptor.is_open()) return;
    if (!ec) {
      auto c = std::make_shared<Connection>(std::move(socket), this);
      connections.insert(c);
      c->Start();
    }
    Accept();
  });
}

void SchedulerServer::Impl::NotifyLeaseLost(uint64_t lease, const std::string& why) {
  for (const auto& c : connections) {
    if (c->leases().count(lease)) {
      c->Send({{"type", "lease_lost"}, {"lease", lease}, {"reason", why}});
    }
  }
  DropLease(lease);
}

void SchedulerServer::Impl::PushLease(const Lease& lease) {
  for (const auto& c : connections) {
    if (c->role() != "worker") continue;
    json devices = json::array();
    for (const auto& [node, id] : lease.devices) {
      if (node == c->node()) devices.push_back(id);
    }
    if (devices.empty()) continue;
    c->Send({{"type", "lease_granted"},
             {"lease", lease.id},
             {"secret", lease.secret},
             {"devices", devices}});
  }
}

void SchedulerServer::Impl::DropLease(uint64_t lease) {
  for (const auto& c : connections) {
    if (c->role() == "worker") c->Send({{"type", "drop_lease"}, {"lease", lease}});
  }
}

void SchedulerServer::Impl::Tick() {
  tick.expires_after(config.heartbeat_period);
  tick.async_wait([this](boost::system::error_code ec) {
    if (ec) return;
    const auto now = Clock::now();
    for (uint64_t l : registry.ReapDead(now, config.dead_after)) {
      NotifyLeaseLost(l, "a worker of the lease stopped responding");
    }
    for (const auto& [name, n] : registry.nodes()) {
      if (!n.alive && now - n.last_heartbeat <= config.dead_after + config.heartbeat_period) {
        spdlog::warn("worker '{}' is dead (no heartbeat for {} ms)", name,
                     config.dead_after.count());
      }
    }
    for (uint64_t l : registry.ExpireLeases(now)) {
      NotifyLeaseLost(l, "the lease expired");
      if (store) Persist(store->DeleteLease(l));
    }
    Tick();
  });
}

SchedulerServer::SchedulerServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
SchedulerServer::~SchedulerServer() = default;

StatusOr<std::unique_ptr<SchedulerServer>> SchedulerServer::Create(SchedulerConfig config) {
  Status s = config.Validate();
  if (!s.ok()) return s;
  auto impl = std::make_unique<Impl>();
  impl->config = std::move(config);
  for (const auto& [name, n] : impl->config.device_sizes) {
    if (n < 1)
      return Status::InvalidArgument(fmt::format("device size '{}' of {} devices", name, n));
  }
  impl->registry.set_device_sizes(impl->config.device_sizes);
  if (!impl->config.state_dir.empty()) {
    auto store = StateStore::Open(impl->config.state_dir);
    if (!store.ok()) return store.status();
    impl->store = std::move(store.value());
    Status l = impl->store->Load(&impl->registry);
    if (!l.ok()) return l;
    spdlog::info("state loaded from {}: {} nodes, {} leases", impl->store->path(),
                 impl->registry.nodes().size(), impl->registry.leases().size());
  }
  boost::system::error_code ec;
  const tcp::endpoint ep(asio::ip::make_address(impl->config.host), impl->config.port);
  impl->acceptor.open(ep.protocol(), ec);
  if (!ec) impl->acceptor.set_option(tcp::acceptor::reuse_address(true), ec);
  if (!ec) impl->acceptor.bind(ep, ec);
  if (!ec) impl->acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    return Status(StatusCode::kUnavailable,
                  fmt::format("cannot listen on {}:{}: {}", impl->config.host, impl->config.port,
                              ec.message()));
  }
  if (!impl->config.port_file.empty()) {
    const std::string tmp = impl->config.port_file + ".tmp";
    std::ofstream(tmp) << impl->acceptor.local_endpoint().port() << "\n";
    std::rename(tmp.c_str(), impl->config.port_file.c_str());
  }
  return std::unique_ptr<SchedulerServer>(new SchedulerServer(std::move(impl)));
}

int SchedulerServer::port() const { return impl_->acceptor.local_endpoint().port(); }

void SchedulerServer::Run() {
  impl_->signals.async_wait([this](boost::system::error_code, int) { Stop(); });
  impl_->Accept();
  impl_->Tick();
  spdlog::info("moreh-scheduler listening on {}:{}", impl_->config.host, port());
  impl_->io.run();
}

void SchedulerServer::Stop() {
  asio::post(impl_->io, [this] {
    boost::system::error_code ec;
    impl_->acceptor.close(ec);
    impl_->tick.cancel();
    impl_->signals.cancel();
    auto conns = impl_->connections;
    for (const auto& c : conns) c->Close();
  });
}

}  // namespace moreh::scheduler
