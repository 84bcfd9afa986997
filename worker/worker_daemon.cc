#include "worker/worker_daemon.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <boost/asio.hpp>
#include <chrono>
#include <cstring>
#include <deque>
#include <functional>
#include <vector>

#include "kernels/cpu/cpu_kernels.h"
#include "runtime/net/framing.h"

namespace moreh::worker {
namespace asio = boost::asio;
using asio::ip::tcp;
using json = nlohmann::json;

StatusOr<DeviceSpec> ParseDevices(const std::string& spec) {
  DeviceSpec d;
  const size_t a = spec.find(':'), b = spec.find(':', a == std::string::npos ? a : a + 1);
  if (a == std::string::npos || b == std::string::npos) {
    return Status::InvalidArgument("--devices '" + spec + "' must be cpu:COUNT:MEMORY");
  }
  d.kind = spec.substr(0, a);
  if (d.kind != "cpu") {
    return Status::InvalidArgument("--devices kind '" + d.kind + "' is not supported here (cpu)");
  }
  try {
    d.count = std::stoi(spec.substr(a + 1, b - a - 1));
    size_t used = 0;
    const std::string mem = spec.substr(b + 1);
    double v = std::stod(mem, &used);
    const std::string unit = mem.substr(used);
    if (unit == "K" || unit == "k")
      v *= 1 << 10;
    else if (unit == "M" || unit == "m")
      v *= 1 << 20;
    else if (unit == "G" || unit == "g")
      v *= 1 << 30;
    else if (!unit.empty())
      return Status::InvalidArgument("--devices memory unit '" + unit + "'");
    d.memory_bytes = static_cast<int64_t>(v);
  } catch (const std::exception&) {
    return Status::InvalidArgument("--devices '" + spec + "' must be cpu:COUNT:MEMORY");
  }
  if (d.count < 1 || d.memory_bytes <= 0) {
    return Status::InvalidArgument("--devices '" + spec + "': count and memory must be positive");
  }
  return d;
}

Status WorkerConfig::Validate() const {
  if (node_name.empty()) return Status::InvalidArgument("a node name is required");
  if (scheduler_port <= 0 || scheduler_port > 65535) {
    return Status::InvalidArgument(fmt::format("scheduler port {} out of range", scheduler_port));
  }
  if (cluster_key.empty()) return Status::InvalidArgument("a cluster key is required");
  if (devices.count < 1) return Status::InvalidArgument("no devices");
  return Status::Ok();
}

json MeasureProfile() {
  using clk = std::chrono::steady_clock;
  const int64_t n = 384;
  std::vector<float> a(n * n, 1.0f), b(n * n, 0.5f), c(n * n);
  kernels::cpu::Gemm(false, false, n, n, n, 1.0f, a.data(), n, b.data(), n, 0.0f, c.data(), n);
  auto t0 = clk::now();
  const int reps = 5;
  for (int i = 0; i < reps; ++i) {
    kernels::cpu::Gemm(false, false, n, n, n, 1.0f, a.data(), n, b.data(), n, 0.0f, c.data(), n);
  }
  const double gemm_s = std::chrono::duration<double>(clk::now() - t0).count();
  std::vector<char> src(32 << 20, 1), dst(32 << 20);
  std::memcpy(dst.data(), src.data(), src.size());
  t0 = clk::now();
  for (int i = 0; i < 4; ++i) std::memcpy(dst.data(), src.data(), src.size());
  const double copy_s = std::chrono::duration<double>(clk::now() - t0).count();
  return {{"gemm_flops_f32", 2.0 * n * n * n * reps / gemm_s},
          {"memory_bandwidth", 2.0 * 4 * static_cast<double>(src.size()) / copy_s}};
}

struct WorkerDaemon::Impl {
  WorkerConfig config;
  json profile;
  asio::io_context io;
  asio::signal_set signals{io, SIGINT, SIGTERM};
  tcp::acceptor acceptor{io};
  tcp::socket sched{io};
  asio::steady_timer timer{io};
  net::FrameDecoder decoder;
  std::array<char, 8192> buf;
  std::deque<std::string> out;
  std::chrono::milliseconds heartbeat{1000};
  int backoff_ms = 100;
  bool stopping = false;

  void Connect();
  void Retry(const std::string& why);
  void Send(const json& m);
  void Write();
  void Read();
  void OnMessage(const json& m);
  void Beat();
  void AcceptClients();
};

void WorkerDaemon::Impl::Retry(const std::string& why) {
  if (stopping) return;
  spdlog::warn("scheduler connection: {}; retrying in {} ms", why, backoff_ms);
  boost::system::error_code ec;
  sched.close(ec);
  out.clear();
  decoder = net::FrameDecoder();
  timer.expires_after(std::chrono::milliseconds(backoff_ms));
  backoff_ms = std::min(backoff_ms * 2, 2000);
  timer.async_wait([this](boost::system::error_code ec) {
    if (!ec) Connect();
  });
}

void WorkerDaemon::Impl::Connect() {
  const tcp::endpoint ep(asio::ip::make_address(config.scheduler_host), config.scheduler_port);
  sched = tcp::socket(io);
  sched.async_connect(ep, [this](boost::system::error_code ec) {
    if (ec) return Retry(ec.message());
    Read();
    Send({{"type", "hello"}, {"version", 1}, {"role", "worker"}, {"key", config.cluster_key}});
    json devices = json::array();
    for (int i = 0; i < config.devices.count; ++i) {
      devices.push_back({{"id", i},
                         {"kind", config.devices.kind},
                         {"name", fmt::format("{}:{}", config.devices.kind, i)},
                         {"memory_bytes", config.devices.memory_bytes}});
    }
    Send({{"type", "register_worker"},
          {"node", config.node_name},
          {"address", fmt::format("{}:{}", config.listen_host, acceptor.local_endpoint().port())},
          {"devices", devices},
          {"profile", profile}});
  });
}

void WorkerDaemon::Impl::Send(const json& m) {
  out.push_back(net::EncodeFrame(m));
  if (out.size() == 1) Write();
}

void WorkerDaemon::Impl::Write() {
  asio::async_write(sched, asio::buffer(out.front()), [this](boost::system::error_code ec, size_t) {
    if (ec) return;  // the read side reports the failure and reconnects
    out.pop_front();
    if (!out.empty()) Write();
  });
}

void WorkerDaemon::Impl::Read() {
  sched.async_read_some(asio::buffer(buf), [this](boost::system::error_code ec, size_t n) {
    if (ec) return Retry(ec.message());
    Status s = decoder.Feed(std::string_view(buf.data(), n));
    while (s.ok() && decoder.HasMessage()) OnMessage(decoder.Pop());
    if (!s.ok()) return Retry(s.message());
    Read();
  });
}

void WorkerDaemon::Impl::OnMessage(const json& m) {
  const std::string type = m["type"];
  if (type == "register_ok") {
    backoff_ms = 100;
    heartbeat = std::chrono::milliseconds(m.value("heartbeat_period_ms", 1000));
    spdlog::info("registered with the scheduler as '{}' ({} x {} of {} bytes)", config.node_name,
                 config.devices.count, config.devices.kind, config.devices.memory_bytes);
    Beat();
  } else if (type == "error") {
    spdlog::error("scheduler: {}", m.value("message", std::string("?")));
    if (m.value("request", std::string()) == "heartbeat") Retry("re-registering");
  }
}

void WorkerDaemon::Impl::Beat() {
  timer.expires_after(heartbeat);
  timer.async_wait([this](boost::system::error_code ec) {
    if (ec || !sched.is_open()) return;
    Send({{"type", "heartbeat"}});
    Beat();
  });
}

// Clients holding a lease connect here; today the endpoint answers hello and ping (the
// reference's "Connecting to resources" step), frames checked as everywhere.
void WorkerDaemon::Impl::AcceptClients() {
  acceptor.async_accept([this](boost::system::error_code ec, tcp::socket s) {
    if (!acceptor.is_open()) return;
    if (!ec) {
      auto sock = std::make_shared<tcp::socket>(std::move(s));
      auto dec = std::make_shared<net::FrameDecoder>();
      auto rbuf = std::make_shared<std::array<char, 4096>>();
      auto loop = std::make_shared<std::function<void()>>();
      *loop = [sock, dec, rbuf, loop]() {
        sock->async_read_some(asio::buffer(*rbuf), [sock, dec, rbuf, loop](
                                                       boost::system::error_code ec, size_t n) {
          if (ec) return;
          Status st = dec->Feed(std::string_view(rbuf->data(), n));
          std::string reply;
          while (st.ok() && dec->HasMessage()) {
            const json m = dec->Pop();
            const std::string t = m["type"];
            reply += net::EncodeFrame(
                t == "hello" || t == "ping"
                    ? json{{"type", t + "_ok"}}
                    : json{{"type", "error"}, {"message", "unknown message type '" + t + "'"}});
          }
          if (!st.ok()) reply += net::EncodeFrame({{"type", "error"}, {"message", st.message()}});
          auto data = std::make_shared<std::string>(std::move(reply));
          asio::async_write(*sock, asio::buffer(*data),
                            [sock, data, loop, ok = st.ok()](boost::system::error_code ec, size_t) {
                              if (ec || !ok) {
                                boost::system::error_code ignored;
                                sock->close(ignored);
                                *loop = nullptr;  // break the cycle
                                return;
                              }
                              (*loop)();
                            });
        });
      };
      (*loop)();
    }
    AcceptClients();
  });
}

WorkerDaemon::WorkerDaemon(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
WorkerDaemon::~WorkerDaemon() = default;

StatusOr<std::unique_ptr<WorkerDaemon>> WorkerDaemon::Create(WorkerConfig config) {
  Status s = config.Validate();
  if (!s.ok()) return s;
  auto impl = std::make_unique<Impl>();
  impl->config = std::move(config);
  boost::system::error_code ec;
  const tcp::endpoint ep(asio::ip::make_address(impl->config.listen_host, ec), 0);
  if (ec) return Status::InvalidArgument("listen address '" + impl->config.listen_host + "'");
  impl->acceptor.open(ep.protocol(), ec);
  if (!ec) impl->acceptor.bind(ep, ec);
  if (!ec) impl->acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) return Status(StatusCode::kUnavailable, "cannot listen: " + ec.message());
  impl->profile = impl->config.measure_profile ? MeasureProfile() : json::object();
  return std::unique_ptr<WorkerDaemon>(new WorkerDaemon(std::move(impl)));
}

void WorkerDaemon::Run() {
  Impl& i = *impl_;
  i.signals.async_wait([&i](boost::system::error_code, int) {
    i.stopping = true;
    boost::system::error_code ec;
    i.timer.cancel();
    i.acceptor.close(ec);
    i.sched.close(ec);
  });
  i.AcceptClients();
  i.Connect();
  i.io.run();
}

}  // namespace moreh::worker
