#include "worker/scheduler_link.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "runtime/net/protocol.h"

namespace moreh::worker {
namespace asio = boost::asio;
using asio::ip::tcp;
using json = nlohmann::json;
using net::Msg;

namespace {
net::ConnectionLimits LinkLimits() {
  net::ConnectionLimits l;
  // The scheduler answers every heartbeat: this long without a word, it is gone (or hung), and
  // the worker connects again.
  l.idle_timeout = std::chrono::milliseconds(30000);
  l.max_connections = 1;
  return l;
}
}  // namespace

SchedulerLink::SchedulerLink(WorkerContext* w, std::string host, int port, std::string cluster_key,
                             std::function<json()> registration)
    : w_(w),
      host_(std::move(host)),
      key_(std::move(cluster_key)),
      port_(port),
      registration_(std::move(registration)),
      set_(w->io, LinkLimits()),
      retry_(w->io),
      heartbeat_(w->io) {}

SchedulerLink::~SchedulerLink() = default;

void SchedulerLink::Start() { Connect(); }

void SchedulerLink::Stop() {
  stopping_ = true;
  retry_.cancel();
  heartbeat_.Stop();
  set_.CloseAll();
}

void SchedulerLink::Retry(const std::string& why) {
  if (stopping_) return;
  heartbeat_.Stop();
  registered_ = false;
  conn_.reset();
  spdlog::warn("scheduler connection: {}; retrying in {} ms", why, backoff_ms_);
  retry_.expires_after(std::chrono::milliseconds(backoff_ms_));
  backoff_ms_ = std::min(backoff_ms_ * 2, 2000);
  retry_.async_wait([this](boost::system::error_code ec) {
    if (!ec) Connect();
  });
}

void SchedulerLink::Connect() {
  // A host name (a Slurm node's, say) or an address; resolved anew at every attempt.
  auto resolver = std::make_shared<tcp::resolver>(w_->io);
  resolver->async_resolve(
      host_, std::to_string(port_),
      [this, resolver](boost::system::error_code ec, tcp::resolver::results_type endpoints) {
        if (stopping_) return;
        if (ec) return Retry("cannot resolve '" + host_ + "': " + ec.message());
        auto socket = std::make_shared<tcp::socket>(w_->io);
        asio::async_connect(*socket, endpoints,
                            [this, socket](boost::system::error_code e, const tcp::endpoint&) {
                              if (stopping_) return;
                              if (e) return Retry(e.message());
                              conn_ = set_.Adopt(std::move(*socket));
                              conn_->Start([this](const json& m) { return OnMessage(m); },
                                           [this] { Retry("the connection closed"); });
                              conn_->Authenticated();
                              net::SchedulerHello hello;
                              hello.role = net::Role::kWorker;
                              hello.key = key_;
                              conn_->Send(hello.ToJson());
                              conn_->Send(registration_());
                            });
      });
}

Status SchedulerLink::OnMessage(const json& m) {
  auto type = net::TypeOf(m);
  if (!type.ok()) return type.status();
  switch (*type) {
    case Msg::kHelloOk:
    case Msg::kHeartbeatOk:
      return Status::Ok();
    case Msg::kRegisterOk: {
      auto ok = net::RegisterOk::FromJson(m);
      if (!ok.ok()) return ok.status();
      backoff_ms_ = 100;
      registered_ = true;
      spdlog::info("registered with the scheduler ({} leases held)", w_->leases.size());
      heartbeat_.Start(std::chrono::milliseconds(ok->heartbeat_period_ms), [this] {
        if (conn_) conn_->Send(net::Message(Msg::kHeartbeat));
      });
      return Status::Ok();
    }
    case Msg::kLeaseGranted: {
      auto g = net::LeaseGranted::FromJson(m);
      if (!g.ok()) return g.status();
      w_->leases.Add(g->lease, {g->secret_hash, g->devices});
      return Status::Ok();
    }
    case Msg::kDropLease: {
      auto d = net::DropLease::FromJson(m);
      if (!d.ok()) return d.status();
      w_->leases.Drop(d->lease);
      return Status::Ok();
    }
    case Msg::kError: {
      auto e = net::ErrorReply::FromJson(m);
      if (!e.ok()) return e.status();
      spdlog::error("scheduler: {}", e->message);
      // A heartbeat refused: the scheduler declared this node dead; register again.
      if (e->request == net::MsgName(Msg::kHeartbeat)) {
        return Status::FailedPrecondition("re-registering");
      }
      return Status::Ok();
    }
    default:
      spdlog::warn("scheduler sent '{}', which a worker does not expect; ignored",
                   net::MsgName(*type));
      return Status::Ok();
  }
}

}  // namespace moreh::worker
