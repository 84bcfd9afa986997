#include "scheduler/scheduler_server.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include "scheduler/scheduler_service.h"
#include "scheduler/state_store.h"

namespace moreh::scheduler {
namespace asio = boost::asio;
using asio::ip::tcp;
using json = nlohmann::json;

net::ConnectionLimits SchedulerConfig::DefaultLimits() {
  net::ConnectionLimits l;
  l.max_frame = 256 << 10;
  return l;
}

Status SchedulerConfig::Validate() const {
  if (port < 0 || port > 65535)
    return Status::InvalidArgument(fmt::format("port {} out of range", port));
  boost::system::error_code ec;
  const auto addr = asio::ip::make_address(host, ec);
  if (ec) return Status::InvalidArgument("listen address '" + host + "' is not an IP address");
  if (!addr.is_loopback() && cluster_key.empty()) {
    return Status::InvalidArgument("refusing to listen on " + host + " without a cluster key");
  }
  if (heartbeat_period.count() <= 0 || dead_after <= heartbeat_period || lease_ttl.count() <= 0) {
    return Status::InvalidArgument("periods must be positive and dead_after > heartbeat_period");
  }
  for (const auto& [name, n] : device_sizes) {
    if (n < 1 || n > 65536) {
      return Status::InvalidArgument(
          fmt::format("device size '{}' of {} devices (1 to 65536)", name, n));
    }
  }
  return limits.Validate();
}

namespace {
// A connection as the handlers see it.
class ConnectionPeer : public Peer {
 public:
  explicit ConnectionPeer(std::weak_ptr<net::JsonConnection> c) : c_(std::move(c)) {}
  void Send(const json& m) override {
    if (auto c = c_.lock()) c->Send(m);
  }
  void Authenticated() override {
    if (auto c = c_.lock()) c->Authenticated();
  }

 private:
  std::weak_ptr<net::JsonConnection> c_;
};
}  // namespace

struct SchedulerServer::Impl {
  SchedulerConfig config;
  asio::io_context io;
  tcp::acceptor acceptor{io};
  asio::signal_set signals{io, SIGINT, SIGTERM};
  net::Periodic tick{io};
  std::unique_ptr<SchedulerService> service;
  std::unique_ptr<net::ConnectionSet> connections;
};

SchedulerServer::SchedulerServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
SchedulerServer::~SchedulerServer() = default;

StatusOr<std::unique_ptr<SchedulerServer>> SchedulerServer::Create(SchedulerConfig config) {
  MOREH_RETURN_IF_ERROR(config.Validate());
  auto impl = std::make_unique<Impl>();
  impl->config = std::move(config);
  const SchedulerConfig& c = impl->config;
  Registry registry;
  registry.set_device_sizes(c.device_sizes);
  std::unique_ptr<StateStore> store;
  if (!c.state_dir.empty()) {
    auto opened = StateStore::Open(c.state_dir);
    if (!opened.ok()) return opened.status();
    store = std::move(opened.value());
    MOREH_RETURN_IF_ERROR(store->Load(&registry));
    spdlog::info("state loaded from {}: {} nodes, {} leases", store->path(),
                 registry.nodes().size(), registry.leases().size());
  }
  impl->service = std::make_unique<SchedulerService>(
      ServiceConfig{c.cluster_key, c.heartbeat_period, c.dead_after, c.lease_ttl},
      std::move(registry), std::move(store));
  impl->connections = std::make_unique<net::ConnectionSet>(impl->io, c.limits);
  boost::system::error_code ec;
  const tcp::endpoint ep(asio::ip::make_address(c.host), c.port);
  impl->acceptor.open(ep.protocol(), ec);
  if (!ec) impl->acceptor.set_option(tcp::acceptor::reuse_address(true), ec);
  if (!ec) impl->acceptor.bind(ep, ec);
  if (!ec) impl->acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    return Status::Unavailable(
        fmt::format("cannot listen on {}:{}: {}", c.host, c.port, ec.message()));
  }
  if (!c.port_file.empty()) {  // private, as everything of a local cluster's is
    const std::string tmp = c.port_file + ".tmp";
    const std::string text = fmt::format("{}\n", impl->acceptor.local_endpoint().port());
    ::unlink(tmp.c_str());
    const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    const bool written =
        fd >= 0 && ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size());
    if (fd >= 0) ::close(fd);
    if (!written || std::rename(tmp.c_str(), c.port_file.c_str()) != 0) {
      return Status::Unavailable(c.port_file + ": cannot write the port file");
    }
  }
  return std::unique_ptr<SchedulerServer>(new SchedulerServer(std::move(impl)));
}

int SchedulerServer::port() const { return impl_->acceptor.local_endpoint().port(); }

void SchedulerServer::Run() {
  Impl& i = *impl_;
  net::RaiseFileLimit();
  i.signals.async_wait([this](boost::system::error_code, int) { Stop(); });
  i.connections->AcceptOn(i.acceptor, [&i](std::shared_ptr<net::JsonConnection> c) {
    auto peer = std::make_shared<ConnectionPeer>(c);
    i.service->Attach(peer.get());
    c->Start([&i, peer](const json& m) { return i.service->Handle(*peer, m, Clock::now()); },
             [&i, peer] { i.service->Detach(peer.get()); });
  });
  i.tick.Start(i.config.heartbeat_period, [&i] { i.service->Tick(Clock::now()); });
  spdlog::info("moreh-scheduler listening on {}:{}", i.config.host, port());
  i.io.run();
}

void SchedulerServer::Stop() {
  asio::post(impl_->io, [this] {
    boost::system::error_code ec;
    impl_->acceptor.close(ec);
    impl_->tick.Stop();
    impl_->signals.cancel();
    impl_->connections->CloseAll();
  });
}

}  // namespace moreh::scheduler
