#include "runtime/client/client.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <boost/asio.hpp>
#include <cstdlib>
#include <optional>
#include <random>
#include <thread>

#include "runtime/client/channel.h"
#include "runtime/client/lease_keeper.h"
#include "runtime/client/worker_watch.h"
#include "runtime/log.h"
#include "runtime/net/auth.h"
#include "runtime/net/protocol.h"

namespace moreh::client {
namespace asio = boost::asio;
using asio::ip::tcp;
using json = nlohmann::json;

struct Client::Impl {
  asio::io_context io;
  std::vector<std::unique_ptr<Channel>> workers;
  std::string secret, token;
  std::unique_ptr<LeaseKeeper> keeper;
  std::unique_ptr<WorkerWatch> watch;
};

Client::Client() : impl_(std::make_unique<Impl>()) {}

namespace {
StatusOr<std::chrono::milliseconds> WaitTimeoutFromEnv(std::chrono::milliseconds fallback) {
  const char* v = std::getenv("MOREH_WAIT_TIMEOUT");
  if (!v || !*v) return fallback;
  char* end = nullptr;
  const double secs = std::strtod(v, &end);
  if (end == v || *end != '\0' || !(secs > 0) || secs > 1e7) {
    return Status::InvalidArgument(
        fmt::format("MOREH_WAIT_TIMEOUT='{}' must be a number of seconds greater than 0", v));
  }
  return std::chrono::milliseconds(static_cast<int64_t>(secs * 1000));
}
}  // namespace

StatusOr<std::unique_ptr<Client>> Client::Connect(ClientOptions o) {
  InitLogging();
  std::unique_ptr<Client> c(new Client());
  if (const char* t = std::getenv("MOREH_TOKEN")) o.token = t;
  if (o.scheduler.empty()) {
    if (const char* s = std::getenv("MOREH_SCHEDULER")) o.scheduler = s;
  }
  auto wait = WaitTimeoutFromEnv(o.wait_for_devices);
  if (!wait.ok()) return wait.status();
  o.wait_for_devices = wait.value();
  if (o.scheduler.empty()) o.scheduler = RecordedLocalScheduler();  // moreh-run cluster up
  spdlog::info("Requesting resources for MoAI Accelerator from the server...");
  if (o.scheduler.empty()) {
    // The embedded cluster has no users yet: its size comes from the options (or Small).
    if (o.device_size.empty()) o.device_size = "Small";
    const int num_devices = net::DeviceSizeCount(o.device_size);
    if (num_devices < 1)
      return Status::InvalidArgument("unknown device size '" + o.device_size + "'");
    LocalClusterConfig lc = o.local;
    lc.num_workers =
        std::max(lc.num_workers, (num_devices + lc.devices_per_worker - 1) / lc.devices_per_worker);
    auto cluster = LocalCluster::Start(lc);
    if (!cluster.ok()) return cluster.status();
    c->local_ = std::move(cluster.value());
    o.scheduler = c->local_->scheduler_address();
  }
  c->scheduler_ = o.scheduler;
  Impl& im = *c->impl_;
  im.token = o.token;
  auto sched = ConnectScheduler(im.io, o.scheduler, o.token);
  if (!sched.ok()) return sched.status();
  std::unique_ptr<Channel> scheduler = std::move(sched.value());
  // The request id makes a retried allocation idempotent (not a secret); workers may still be
  // registering.
  std::random_device rd;
  const std::string request_id = fmt::format("{:08x}{:08x}", rd(), rd());
  const auto started = std::chrono::steady_clock::now();
  const auto deadline = started + o.wait_for_devices;
  const std::string what = o.device_size.empty() ? "the virtual device" : o.device_size;
  const double wait_s = std::chrono::duration<double>(o.wait_for_devices).count();
  std::optional<net::AllocateOk> grant;
  bool announced_busy = false;
  int64_t announced_free = -1;
  std::string last_error;
  while (!grant) {
    net::AllocateRequest req;
    req.request_id = request_id;
    req.pid = getpid();
    req.device_size = o.device_size;  // empty: the virtual device
    auto r = scheduler->Call(req.ToJson());
    if (!r.ok()) return r.status();
    auto type = net::TypeOf(r.value());
    if (!type.ok()) return type.status();
    if (*type == net::Msg::kAllocateOk) {
      auto ok = net::AllocateOk::FromJson(r.value());
      if (!ok.ok()) return ok.status();
      grant = std::move(ok.value());
      break;
    }
    if (*type == net::Msg::kBusy) {
      auto b = net::Busy::FromJson(r.value());
      if (!b.ok()) return b.status();
      if (!announced_busy) {
        spdlog::info(
            "The virtual device is in use by process {}; this process will resume "
            "automatically after process {} terminates.",
            b->pid, b->pid);
        announced_busy = true;
      }
      last_error = fmt::format("the virtual device is in use by process {}", b->pid);
    } else if (*type == net::Msg::kError) {
      auto e = net::ErrorReply::FromJson(r.value());
      if (!e.ok()) return e.status();
      if (e->code != net::kNotEnoughDevices) return Status::InvalidArgument(e->message);
      // Say what it waits for, once the wait is more than workers registering (longer for the
      // cluster this client has just started), and again whenever it changes.
      const auto quiet = std::min<std::chrono::milliseconds>(
          c->local_ ? std::chrono::milliseconds(15000) : std::chrono::milliseconds(2000),
          o.wait_for_devices / 2);
      if (e->free != announced_free && std::chrono::steady_clock::now() - started >= quiet) {
        spdlog::info(
            "{} of {} devices{} are available ({} alive in the cluster); waiting (at most "
            "{:g} s: --wait-timeout, MOREH_WAIT_TIMEOUT)",
            e->free, e->needed, o.device_size.empty() ? "" : " of size " + o.device_size, e->alive,
            wait_s);
        announced_free = e->free;
      }
      last_error = fmt::format("{} of {} devices are available ({} alive in the cluster)", e->free,
                               e->needed, e->alive);
    } else {
      return Status::InvalidArgument("the scheduler answered allocate with '" +
                                     std::string(net::MsgName(*type)) + "'");
    }
    if (std::chrono::steady_clock::now() > deadline) {
      return Status::DeadlineExceeded(
          fmt::format("the server could not grant {} within {:g} s: {}", what, wait_s, last_error));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  c->lease_ = grant->lease;
  im.secret = grant->secret;
  spdlog::info("Initializing the worker daemon for MoAI Accelerator");
  std::vector<WorkerWatch::Target> addresses;
  for (const net::GrantedDeviceInfo& d : grant->devices) {
    GrantedDevice g;
    g.node = d.node;
    g.address = d.address;
    g.device = static_cast<int>(d.device);
    g.kind = d.kind;
    g.name = d.name;
    g.memory_bytes = d.memory_bytes;
    // A GPU is planned from its own measured bf16 GEMM and memory speed, a CPU from the host's.
    const net::WorkerProfile& p = d.profile;
    const bool gpu = g.kind == "cuda" && p.gemm_flops_bf16 > 0;
    g.gemm_flops = gpu ? p.gemm_flops_bf16 : p.gemm_flops_f32;
    g.memory_bandwidth = gpu ? p.gpu_memory_bandwidth : p.memory_bandwidth;
    g.threads = static_cast<int>(p.threads);
    g.host_cores = static_cast<int>(p.host_cores);
    g.loaded_latency = p.loaded_latency_s;
    g.link_bandwidth = p.link_bandwidth;
    c->devices_.push_back(std::move(g));
    if (std::none_of(addresses.begin(), addresses.end(),
                     [&](const auto& a) { return a.address == d.address; })) {
      addresses.push_back({d.node, d.address});
    }
  }
  for (size_t i = 0; i < addresses.size(); ++i) {
    const std::string& address = addresses[i].address;
    spdlog::info("[{}/{}] Connecting to resources on the server ({})...", i + 1, addresses.size(),
                 address);
    // The grant reaches the worker through the scheduler, usually within a millisecond of the
    // reply: retry hello with a backoff from 1 ms, for up to 2 s.
    StatusOr<std::unique_ptr<Channel>> ch = Status::Internal("not tried");
    const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(2);
    for (int wait_ms = 1;; wait_ms = std::min(wait_ms * 2, 50)) {
      ch = c->OpenWorker(address);
      if (ch.ok() || std::chrono::steady_clock::now() > give_up) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(wait_ms));
    }
    if (!ch.ok()) return ch.status();
    im.workers.push_back(std::move(ch.value()));
  }
  spdlog::info("Establishing links to the resources...");
  for (auto& w : im.workers) {
    Status s = ReplyError(w->Call(net::Message(net::Msg::kPing)), "worker");
    if (!s.ok()) return s;
  }
  im.keeper = std::make_unique<LeaseKeeper>(std::move(scheduler), o.scheduler, o.token, c->lease_,
                                            im.secret, std::chrono::milliseconds(grant->ttl_ms));
  im.watch = std::make_unique<WorkerWatch>(addresses, c->lease_, im.secret);
  spdlog::info("MoAI Accelerator is ready to use.");
  return c;
}

StatusOr<std::unique_ptr<Channel>> Client::OpenWorker(const std::string& address) const {
  auto ch = std::make_unique<Channel>(impl_->io);
  Status s = ch->Open(address);
  if (s.ok()) {
    net::WorkerHello hello;
    hello.lease = lease_;
    hello.secret = impl_->secret;
    s = ReplyError(ch->Call(hello.ToJson()), address);
  }
  if (!s.ok()) return s;
  return ch;
}

Status Client::Health() const {
  if (impl_->watch) {
    Status s = impl_->watch->Health();
    if (!s.ok()) return s;
  }
  if (impl_->keeper) return impl_->keeper->Health();
  return Status::Ok();
}

std::string Client::FailedWorker() const {
  return impl_->watch ? impl_->watch->failed_address() : std::string();
}

Client::~Client() {
  Impl& im = *impl_;
  im.watch.reset();
  im.keeper.reset();  // releases the lease
  for (auto& w : im.workers) w->Close();
  if (local_) local_->Stop();
}

}  // namespace moreh::client
