#include "runtime/client/client.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <boost/asio.hpp>
#include <cstdlib>
#include <mutex>
#include <random>

#include "runtime/client/channel.h"
#include "runtime/log.h"
#include "runtime/net/framing.h"
#include "runtime/planner/cluster.h"

namespace moreh::client {
namespace asio = boost::asio;
using asio::ip::tcp;
using json = nlohmann::json;

namespace {}  // namespace

struct Client::Impl {
  asio::io_context io;
  std::unique_ptr<Channel> scheduler;
  std::vector<std::unique_ptr<Channel>> workers;
  std::string secret;
  std::mutex mu;  // guards the scheduler channel between the renew thread and the destructor
  std::atomic<bool> stop{false};
  std::thread renewer;
};

Client::Client() : impl_(std::make_unique<Impl>()) {}

StatusOr<std::unique_ptr<Client>> Client::Connect(ClientOptions o) {
  InitLogging();
  std::unique_ptr<Client> c(new Client());
  if (const char* t = std::getenv("MOREH_TOKEN")) o.token = t;
  if (o.scheduler.empty()) {
    if (const char* s = std::getenv("MOREH_SCHEDULER")) o.scheduler = s;
  }
  if (o.scheduler.empty()) o.scheduler = RecordedLocalScheduler();  // moreh-run cluster up
  spdlog::info("Requesting resources for MoAI Accelerator from the server...");
  if (o.scheduler.empty()) {
    // The embedded cluster has no users yet: its size comes from the options (or Small).
    if (o.device_size.empty()) o.device_size = "Small";
    const int num_devices = planner::DeviceSizeCount(o.device_size);
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
  im.scheduler = std::make_unique<Channel>(im.io);
  Status s = im.scheduler->Open(o.scheduler);
  if (!s.ok()) return s;
  s = ReplyError(im.scheduler->Call(
                     {{"type", "hello"}, {"version", 1}, {"role", "client"}, {"token", o.token}}),
                 "scheduler");
  if (!s.ok()) return s;
  // The request id makes a retried allocation idempotent; workers may still be registering.
  std::random_device rd;
  const std::string request_id = fmt::format("{:08x}{:08x}", rd(), rd());
  const auto deadline = std::chrono::steady_clock::now() + o.wait_for_devices;
  json grant;
  bool announced_wait = false;
  std::string last_error;
  while (true) {
    json req = {
        {"type", "allocate"}, {"request_id", request_id}, {"pid", static_cast<int64_t>(getpid())}};
    if (!o.device_size.empty()) req["device_size"] = o.device_size;  // else: the virtual device
    auto r = im.scheduler->Call(req);
    if (!r.ok()) return r.status();
    const std::string type = r.value().value("type", std::string());
    if (type == "allocate_ok") {
      grant = r.value();
      break;
    }
    if (type == "busy") {
      if (!announced_wait) {
        const int64_t pid = r.value().value("pid", int64_t{0});
        spdlog::info(
            "The virtual device is in use by process {}; this process will resume "
            "automatically after process {} terminates.",
            pid, pid);
        announced_wait = true;
      }
      last_error = "the virtual device is busy";
    } else {
      last_error = r.value().value("message", std::string("?"));
      if (last_error.find("unknown device size") != std::string::npos) {
        return Status::InvalidArgument(last_error);
      }
    }
    if (std::chrono::steady_clock::now() > deadline) {
      return Status(StatusCode::kDeadlineExceeded,
                    fmt::format("the server could not grant {} within {} ms: {}",
                                o.device_size.empty() ? "the virtual device" : o.device_size,
                                o.wait_for_devices.count(), last_error));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  c->lease_ = grant["lease"].get<uint64_t>();
  im.secret = grant["secret"].get<std::string>();
  spdlog::info("Initializing the worker daemon for MoAI Accelerator");
  std::vector<std::string> addresses;
  for (const json& d : grant["devices"]) {
    GrantedDevice g{d["node"], d["address"], d["device"]};
    g.kind = d.value("kind", std::string("cpu"));
    g.name = d.value("name", std::string());
    g.memory_bytes = d.value("memory_bytes", int64_t{0});
    const json profile = d.value("profile", json::object());
    if (profile.is_object()) {  // what a worker reports: numbers, or 0 (unknown)
      auto num = [&](const char* key) {
        const auto it = profile.find(key);
        return it != profile.end() && it->is_number() ? it->get<double>() : 0.0;
      };
      // A GPU is planned from its own measured bf16 GEMM and memory speed, a CPU from the host's.
      const bool gpu = g.kind == "cuda" && num("gemm_flops_bf16") > 0;
      g.gemm_flops = num(gpu ? "gemm_flops_bf16" : "gemm_flops_f32");
      g.memory_bandwidth = num(gpu ? "gpu_memory_bandwidth" : "memory_bandwidth");
      g.threads = static_cast<int>(num("threads"));
      g.host_cores = static_cast<int>(num("host_cores"));
      g.loaded_latency = num("loaded_latency_s");
      g.link_bandwidth = num("link_bandwidth");
    }
    c->devices_.push_back(std::move(g));
    if (std::find(addresses.begin(), addresses.end(), d["address"].get<std::string>()) ==
        addresses.end()) {
      addresses.push_back(d["address"]);
    }
  }
  for (size_t i = 0; i < addresses.size(); ++i) {
    spdlog::info("[{}/{}] Connecting to resources on the server ({})...", i + 1, addresses.size(),
                 addresses[i]);
    // The grant reaches the worker through the scheduler: retry hello briefly.
    Status hs;
    for (int attempt = 0; attempt < 50; ++attempt) {
      auto ch = std::make_unique<Channel>(im.io);
      hs = ch->Open(addresses[i]);
      if (hs.ok()) {
        hs = ReplyError(
            ch->Call(
                {{"type", "hello"}, {"version", 1}, {"lease", c->lease_}, {"secret", im.secret}}),
            addresses[i]);
      }
      if (hs.ok()) {
        im.workers.push_back(std::move(ch));
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    if (!hs.ok()) return hs;
  }
  spdlog::info("Establishing links to the resources...");
  for (auto& w : im.workers) {
    s = ReplyError(w->Call({{"type", "ping"}}), "worker");
    if (!s.ok()) return s;
  }
  const int64_t ttl_ms = grant.value("ttl_ms", int64_t{30000});
  im.renewer = std::thread([&im, lease = c->lease_, ttl_ms] {
    while (!im.stop) {
      for (int64_t t = 0; t < ttl_ms / 3 && !im.stop; t += 20) {
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
      }
      if (im.stop) break;
      std::lock_guard<std::mutex> lock(im.mu);
      auto r = im.scheduler->Call({{"type", "renew"}, {"lease", lease}, {"secret", im.secret}});
      if (!r.ok()) spdlog::warn("renewing the lease: {}", r.status().message());
    }
  });
  spdlog::info("MoAI Accelerator is ready to use.");
  return c;
}

StatusOr<std::unique_ptr<Channel>> Client::OpenWorker(const std::string& address) const {
  auto ch = std::make_unique<Channel>(impl_->io);
  Status s = ch->Open(address);
  if (s.ok()) {
    s = ReplyError(
        ch->Call({{"type", "hello"}, {"version", 1}, {"lease", lease_}, {"secret", impl_->secret}}),
        address);
  }
  if (!s.ok()) return s;
  return ch;
}

Client::~Client() {
  Impl& im = *impl_;
  im.stop = true;
  if (im.renewer.joinable()) im.renewer.join();
  if (lease_ && im.scheduler) {
    std::lock_guard<std::mutex> lock(im.mu);
    auto r = im.scheduler->Call({{"type", "release"}, {"lease", lease_}, {"secret", im.secret}});
    (void)r;
  }
  for (auto& w : im.workers) w->Close();
  if (im.scheduler) im.scheduler->Close();
  if (local_) local_->Stop();
}

}  // namespace moreh::client
