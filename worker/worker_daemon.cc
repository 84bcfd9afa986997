#include "worker/worker_daemon.h"

#include <fmt/format.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <boost/asio.hpp>
#include <chrono>
#include <cstring>
#include <ctime>
#include <deque>
#include <functional>
#include <map>
#include <thread>
#include <vector>

#include "kernels/cpu/cpu_kernels.h"
#ifdef MOREH_WITH_CUDA
#include "kernels/cuda/device_allocator.h"
#include "kernels/cuda/device_info.h"
#include "runtime/comm/nccl_collectives.h"
#endif
#include "runtime/comm/ucx_transport.h"
#include "runtime/core/error.h"
#include "runtime/core/parallel.h"
#include "runtime/executor.h"
#include "runtime/net/base64.h"
#include "runtime/net/framing.h"
#include "runtime/net/tensor_codec.h"
#include "runtime/parallel/stage_job.h"
#include "scheduler/registry.h"

namespace moreh::worker {
namespace asio = boost::asio;
using asio::ip::tcp;
using json = nlohmann::json;

StatusOr<DeviceSpec> ParseDevices(const std::string& spec) {
  DeviceSpec d;
  if (spec == "cuda:all") {
#ifdef MOREH_WITH_CUDA
    d.kind = "cuda";
    d.count = kernels::cuda::DeviceCount();
    if (d.count < 1) {
      return Status::InvalidArgument("--devices cuda:all: no CUDA device is visible on this node");
    }
    d.memory_bytes = kernels::cuda::DeviceMemoryBytes(0);
    return d;
#else
    return Status::InvalidArgument(
        "--devices cuda:all: this moreh-worker was built without CUDA (MOREH_ENABLE_CUDA)");
#endif
  }
  const size_t a = spec.find(':'), b = spec.find(':', a == std::string::npos ? a : a + 1);
  if (a == std::string::npos || b == std::string::npos) {
    return Status::InvalidArgument("--devices '" + spec + "' must be cpu:COUNT:MEMORY");
  }
  d.kind = spec.substr(0, a);
  if (d.kind != "cpu") {
    return Status::InvalidArgument("--devices kind '" + d.kind +
                                   "' is not supported (cpu:COUNT:MEMORY or cuda:all)");
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

// Seconds of CPU time this process has used.
double ProcessCpuSeconds() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

// The links between devices of this host, over UCX between two threads of this process: the
// one-way latency while every core of the host is busy (host_cores spinning threads; what a message
// between devices that share a host's cores waits mid-step, when its receiver competes for a core;
// the median of 200 round trips) and the bandwidth of 8 MiB messages (the best of 4, cores idle).
// Zeros when UCX cannot run here.
struct LinkProfile {
  double loaded_latency_s = 0, bandwidth = 0;
};
LinkProfile MeasureLinks(int host_cores) {
  auto a = comm::UcxTransport::Create(0);
  auto b = comm::UcxTransport::Create(1);
  if (!a.ok() || !b.ok()) return {};
  comm::UcxTransport& ta = *a.value();
  comm::UcxTransport& tb = *b.value();
  if (!ta.Connect(1, tb.address()).ok() || !tb.Connect(0, ta.address()).ok()) return {};
  std::atomic<bool> stop{false};
  std::vector<std::thread> load;
  for (int i = 0; i < host_cores; ++i) {
    load.emplace_back([&stop] {
      volatile double x = 1;
      while (!stop.load(std::memory_order_relaxed)) x = x * 1.0000001 + 1e-9;
    });
  }
  const int rounds = 200;
  const std::chrono::milliseconds timeout(2000);
  std::thread echo([&] {
    int64_t v = 0;
    for (int i = 0; i < rounds; ++i) {
      auto r = tb.Recv(0, &v, sizeof v, 7, static_cast<uint32_t>(i));
      if (!r.ok() || !tb.Wait(r.value(), timeout).ok()) return;
      auto s = tb.Send(0, &v, sizeof v, 7, static_cast<uint32_t>(i));
      if (!s.ok() || !tb.Wait(s.value(), timeout).ok()) return;
    }
  });
  std::vector<double> rtt;
  int64_t v = 0;
  for (int i = 0; i < rounds; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    auto s = ta.Send(1, &v, sizeof v, 7, static_cast<uint32_t>(i));
    if (!s.ok() || !ta.Wait(s.value(), timeout).ok()) break;
    auto r = ta.Recv(1, &v, sizeof v, 7, static_cast<uint32_t>(i));
    if (!r.ok() || !ta.Wait(r.value(), timeout).ok()) break;
    rtt.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  echo.join();
  stop = true;
  for (auto& t : load) t.join();
  if (rtt.size() < static_cast<size_t>(rounds)) return {};
  std::nth_element(rtt.begin(), rtt.begin() + rounds / 2, rtt.end());
  LinkProfile out;
  out.loaded_latency_s = rtt[rounds / 2] / 2;
  std::vector<char> src(8 << 20, 1), dst(8 << 20);
  double best = 1e9;
  for (int i = 0; i < 4; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    auto r = tb.Recv(0, dst.data(), dst.size(), 8, static_cast<uint32_t>(i));
    auto s = ta.Send(1, src.data(), src.size(), 8, static_cast<uint32_t>(i));
    if (!r.ok() || !s.ok()) return out;
    // Both sides progress from this thread (each needs the other's progress), for up to 2 s.
    bool sent = false, received = false;
    while (!(sent && received)) {
      sent = sent || ta.Completed(s.value());
      received = received || tb.Completed(r.value());
      if (std::chrono::steady_clock::now() - t0 > timeout) return out;
    }
    best = std::min(best,
                    std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  out.bandwidth = static_cast<double>(src.size()) / best;
  return out;
}

// What one device achieves alone. GEMM throughput is counted per CPU second (times the threads
// the device runs, at most the host's cores), so that daemons starting together on one host
// (which contend for its cores while they measure) still report the speed of a device running on
// its own; the planner shares a host's cores among the devices that compute on it at once.
json MeasureProfile() {
  using clk = std::chrono::steady_clock;
  const int64_t n = 512;
  const int host_cores = std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
  std::vector<float> a(n * n, 1.0f), b(n * n, 0.5f), c(n * n);
  double gemm_s = 1e9, gemm_cpu_s = 1e9;
  for (int i = 0; i < 8; ++i) {
    const auto t0 = clk::now();
    const double c0 = ProcessCpuSeconds();
    kernels::cpu::Gemm(false, false, n, n, n, 1.0f, a.data(), n, b.data(), n, 0.0f, c.data(), n);
    gemm_cpu_s = std::min(gemm_cpu_s, ProcessCpuSeconds() - c0);
    gemm_s = std::min(gemm_s, std::chrono::duration<double>(clk::now() - t0).count());
  }
  const double flops = 2.0 * n * n * n;
  const int threads = std::min(NumThreads(), host_cores);
  const double gemm_flops = std::max(flops / gemm_s, flops / gemm_cpu_s * threads);
  std::vector<char> src(32 << 20, 1), dst(32 << 20);
  double copy_s = 1e9;
  for (int i = 0; i < 4; ++i) {
    const auto t0 = clk::now();
    // With the device's threads, as its kernels run.
    ParallelFor(static_cast<int64_t>(src.size()), 1 << 20, [&](int64_t lo, int64_t hi) {
      std::memcpy(dst.data() + lo, src.data() + lo, static_cast<size_t>(hi - lo));
    });
    copy_s = std::min(copy_s, std::chrono::duration<double>(clk::now() - t0).count());
  }
  const LinkProfile links = MeasureLinks(host_cores);
  return {{"gemm_flops_f32", gemm_flops},
          {"memory_bandwidth", 2.0 * static_cast<double>(src.size()) / copy_s},
          {"threads", NumThreads()},
          {"host_cores", host_cores},
          {"loaded_latency_s", links.loaded_latency_s},
          {"link_bandwidth", links.bandwidth}};
}

class ClientConnection;

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
  struct Grant {
    std::string secret;
    std::vector<int> devices;
  };
  std::map<uint64_t, Grant> leases;  // pushed by the scheduler
  // Connections admitted under each lease, so that a dropped lease (expired, released, or its
  // client declared dead by the scheduler) ends their jobs. Event loop only.
  std::multimap<uint64_t, std::weak_ptr<ClientConnection>> lease_connections;
  void EndLeaseJobs(uint64_t lease);
  // One per device, its capacity: CPU devices' owned here, GPUs' the process's (CudaAllocator).
  std::vector<runtime::Allocator*> allocators;
  std::vector<std::unique_ptr<runtime::Allocator>> owned_allocators;
  // One job thread per device: graphs and pipeline stages run there, so heartbeats never wait on
  // a job and the stages of one job on two devices of this node run side by side.
  std::vector<std::unique_ptr<asio::thread_pool>> device_threads;

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
      std::string name = fmt::format("{}:{}", config.devices.kind, i);
      int64_t memory = config.devices.memory_bytes;
#ifdef MOREH_WITH_CUDA
      if (config.devices.kind == "cuda") {  // each GPU as the driver reports it
        name = kernels::cuda::DeviceName(i);
        memory = allocators.at(static_cast<size_t>(i))->capacity();  // what jobs may allocate
      }
#endif
      devices.push_back(
          {{"id", i}, {"kind", config.devices.kind}, {"name", name}, {"memory_bytes", memory}});
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
  } else if (type == "lease_granted") {
    Grant g;
    g.secret = m.value("secret", std::string());
    for (const auto& d : m.value("devices", json::array())) g.devices.push_back(d.get<int>());
    leases[m.value("lease", uint64_t{0})] = std::move(g);
  } else if (type == "drop_lease") {
    const uint64_t lease = m.value("lease", uint64_t{0});
    leases.erase(lease);
    EndLeaseJobs(lease);
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

// Clients holding a lease connect here: hello with the lease and its secret (pushed by the
// scheduler), then ping or run_graph on a device of the lease. A graph runs on the job thread
// against the device's allocator, so an out-of-memory comes back as an error and the daemon serves
// on; frames are checked as everywhere.
class ClientConnection : public std::enable_shared_from_this<ClientConnection> {
 public:
  ClientConnection(tcp::socket s, WorkerDaemon::Impl* w) : socket_(std::move(s)), w_(w) {}
  void Start() { Read(); }
  // The client is gone, or its lease: its jobs stop (a stage blocked on a peer fails at once) and
  // are dropped.
  void EndJobs() {
    for (auto& [d, job] : jobs_) job->Abort();
    jobs_.clear();
  }

 private:
  void Read() {
    socket_.async_read_some(
        asio::buffer(buf_), [self = shared_from_this()](boost::system::error_code ec, size_t n) {
          if (ec) return self->EndJobs();
          Status s = self->decoder_.Feed(std::string_view(self->buf_.data(), n));
          while (s.ok() && self->decoder_.HasMessage()) s = self->Handle(self->decoder_.Pop());
          if (!s.ok()) {
            self->EndJobs();
            self->closing_ = true;
            self->Send({{"type", "error"}, {"message", s.message()}});
            return;
          }
          self->Read();
        });
  }
  void Send(const json& m) {
    out_.push_back(net::EncodeFrame(m));
    if (out_.size() == 1) Write();
  }
  void Write() {
    asio::async_write(socket_, asio::buffer(out_.front()),
                      [self = shared_from_this()](boost::system::error_code ec, size_t) {
                        if (ec) return;
                        self->out_.pop_front();
                        if (!self->out_.empty()) return self->Write();
                        if (self->closing_) {
                          boost::system::error_code ignored;
                          self->socket_.close(ignored);
                        }
                      });
  }
  Status Handle(const json& m);
  Status HandleJob(const std::string& type, const json& m, int device);

  void Reply(json m) {
    asio::post(socket_.get_executor(),
               [self = shared_from_this(), m = std::move(m)] { self->Send(m); });
  }

  tcp::socket socket_;
  WorkerDaemon::Impl* w_;
  net::FrameDecoder decoder_;
  std::array<char, 65536> buf_;
  std::deque<std::string> out_;
  bool closing_ = false;
  uint64_t lease_ = 0;
  std::map<int, std::shared_ptr<parallel::StageJob>> jobs_;  // by device; event loop only
};

namespace {
// The error reply to a request that failed on a job thread; out of device memory carries
// code OUT_OF_MEMORY (the client turns it into the reference platform's error).
json FailureReply(const std::string& request, const std::exception& e) {
  json r = {{"type", "error"}, {"request", request}, {"message", e.what()}};
  if (dynamic_cast<const OutOfMemoryError*>(&e) != nullptr) r["code"] = "OUT_OF_MEMORY";
  return r;
}
}  // namespace

using net::DecodeTensor;
using net::EncodeTensor;

Status ClientConnection::Handle(const json& m) {
  const std::string type = m["type"];
  if (lease_ == 0) {
    if (type != "hello") return Status::InvalidArgument("the first message must be 'hello'");
    const uint64_t lease = m.value("lease", uint64_t{0});
    const std::string secret = m.value("secret", std::string());
    auto it = w_->leases.find(lease);
    if (m.value("version", 0) != 1 || it == w_->leases.end() ||
        !scheduler::SecretsEqual(it->second.secret, secret)) {
      return Status::InvalidArgument("no valid lease presented");
    }
    lease_ = lease;
    w_->lease_connections.emplace(lease, weak_from_this());
    Send({{"type", "hello_ok"}});
    return Status::Ok();
  }
  if (type == "ping") {
    Send({{"type", "ping_ok"}});
    return Status::Ok();
  }
  const bool job = type.rfind("job_", 0) == 0;
  if (type != "run_graph" && !job) {
    return Status::InvalidArgument("unknown message type '" + type + "'");
  }
  auto it = w_->leases.find(lease_);
  if (it == w_->leases.end()) {
    Send({{"type", "error"}, {"request", type}, {"message", "the lease was dropped"}});
    return Status::Ok();
  }
  const int device = m.value("device", -1);
  if (std::find(it->second.devices.begin(), it->second.devices.end(), device) ==
      it->second.devices.end()) {
    Send({{"type", "error"},
          {"request", type},
          {"message", fmt::format("device {} is not part of lease {}", device, lease_)}});
    return Status::Ok();
  }
  if (job) return HandleJob(type, m, device);
  runtime::Allocator* alloc = w_->allocators.at(static_cast<size_t>(device));
  // Decode and run on the job thread; the reply is posted back to the event loop.
  asio::post(
      *w_->device_threads.at(static_cast<size_t>(device)), [self = shared_from_this(), m, alloc] {
        json reply;
        try {
          auto graph = Graph::FromJson(m.at("graph").dump());
          graph.status().ThrowIfError();
          std::vector<runtime::Tensor> inputs;
          for (const json& t : m.value("inputs", json::array())) {
            auto x = DecodeTensor(t, alloc);
            x.status().ThrowIfError();
            inputs.push_back(std::move(x.value()));
          }
          auto compiled = runtime::Compile(std::move(graph.value()));
          runtime::Executor ex(alloc);
          alloc->ResetPeak();
          const auto outs = ex.Run(*compiled, std::move(inputs));
          json jo = json::array();
          for (const auto& o : outs) jo.push_back(EncodeTensor(o));
          reply = {{"type", "run_graph_ok"}, {"outputs", jo}, {"peak_bytes", alloc->peak_bytes()}};
        } catch (const std::exception& e) {
          reply = FailureReply("run_graph", e);
        }
        asio::post(self->socket_.get_executor(), [self, reply] { self->Send(reply); });
      });
  return Status::Ok();
}

namespace {
// HMAC-SHA256 of a UCX worker address under the cluster key, hex: workers vouch for the addresses
// they hand out through clients, which do not hold the key.
std::string AddressMac(const std::string& key, const std::string& address) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
       reinterpret_cast<const unsigned char*>(address.data()), address.size(), md, &len);
  std::string hex;
  for (unsigned int i = 0; i < len; ++i) hex += fmt::format("{:02x}", md[i]);
  return hex;
}
}  // namespace

// Pipeline jobs (runtime/parallel/stage_job.h): job_setup builds the stage on the device's job
// thread; job_connect / job_step / job_update / job_save run there too; job_end drops it. Replies
// are "<type>_ok" or an error naming the problem (code OUT_OF_MEMORY when the stage does not fit).
Status ClientConnection::HandleJob(const std::string& type, const json& m, int device) {
  auto error = [&](const std::string& msg) {
    Send({{"type", "error"}, {"request", type}, {"message", msg}});
    return Status::Ok();
  };
  asio::thread_pool& thread = *w_->device_threads.at(static_cast<size_t>(device));
  runtime::Allocator* alloc = w_->allocators.at(static_cast<size_t>(device));
  if (type == "job_setup") {
    if (jobs_.count(device)) return error(fmt::format("device {} already runs a job", device));
    auto a = parallel::StageAssignment::FromJson(m.value("assignment", json()));
    if (!a.ok()) return error(a.status().message());
    asio::post(thread, [self = shared_from_this(), a = std::move(a.value()), alloc, device] {
      try {
        std::shared_ptr<parallel::StageJob> job = parallel::StageJob::Create(a, alloc);
        const json reply = {
            {"type", "job_setup_ok"},
            {"address", net::Base64Encode(job->address())},
            {"address_mac", AddressMac(self->w_->config.cluster_key, job->address())},
            {"peak_bytes", alloc->peak_bytes()},
            {"live_bytes", alloc->live_bytes()}};
        asio::post(self->socket_.get_executor(), [self, job, device, reply] {
          self->jobs_[device] = job;
          self->Send(reply);
        });
      } catch (const std::exception& e) {
        self->Reply(FailureReply("job_setup", e));
      }
    });
    return Status::Ok();
  }
  auto it = jobs_.find(device);
  if (type == "job_end") {
    if (it != jobs_.end()) {
      it->second->Abort();
      jobs_.erase(it);
    }
    Send({{"type", "job_end_ok"}});
    return Status::Ok();
  }
  if (it == jobs_.end()) return error(fmt::format("no job on device {}; send job_setup", device));
  if (type != "job_connect" && type != "job_step" && type != "job_update" && type != "job_save") {
    return error("unknown message type '" + type + "'");
  }
  asio::post(thread, [self = shared_from_this(), job = it->second, type, m] {
    json reply;
    try {
      if (type == "job_connect") {
        const std::string& key = self->w_->config.cluster_key;
        job->Connect(m.value("peers", json()),
                     [&key](const std::string& addr, const std::string& mac) {
                       return scheduler::SecretsEqual(AddressMac(key, addr), mac);
                     });
      } else if (type == "job_step") {
        reply = job->Step(m);
      } else if (type == "job_update") {
        reply = job->Update(m);
      } else {
        reply = job->Save(m);
      }
      reply["type"] = type + "_ok";
    } catch (const std::exception& e) {
      reply = FailureReply(type, e);
    }
    self->Reply(std::move(reply));
  });
  return Status::Ok();
}

void WorkerDaemon::Impl::EndLeaseJobs(uint64_t lease) {
  auto [begin, end] = lease_connections.equal_range(lease);
  for (auto it = begin; it != end; ++it) {
    if (auto c = it->second.lock()) c->EndJobs();
  }
  lease_connections.erase(begin, end);
  // Forget connections that are gone.
  for (auto it = lease_connections.begin(); it != lease_connections.end();) {
    it = it->second.expired() ? lease_connections.erase(it) : std::next(it);
  }
}

void WorkerDaemon::Impl::AcceptClients() {
  acceptor.async_accept([this](boost::system::error_code ec, tcp::socket s) {
    if (!acceptor.is_open()) return;
    if (!ec) std::make_shared<ClientConnection>(std::move(s), this)->Start();
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
#ifdef MOREH_WITH_CUDA
  // GPUs: the GEMM and memory speed of the first (the node's GPUs are one model).
  if (impl->config.measure_profile && impl->config.devices.kind == "cuda") {
    kernels::cuda::GpuProfile gpu;
    try {
      gpu = kernels::cuda::MeasureGpu(0);
    } catch (const std::exception& e) {  // a GPU that fails this would fail every job
      return Status(StatusCode::kUnavailable,
                    fmt::format("cuda:0 ({}) failed its start-up profile: {}",
                                kernels::cuda::DeviceName(0), e.what()));
    }
    impl->profile["gemm_flops_bf16"] = gpu.gemm_flops_bf16;
    impl->profile["gpu_memory_bandwidth"] = gpu.memory_bandwidth;
    spdlog::info("moreh-worker: {}: bf16 GEMM {:.4g} TFLOP/s, memory {:.4g} GB/s",
                 kernels::cuda::DeviceName(0), gpu.gemm_flops_bf16 / 1e12,
                 gpu.memory_bandwidth / 1e9);
    // The stages on this node's GPUs talk over NCCL (NVLink or PCIe), not the host's UCX links
    // measured above: their all-reduce bus bandwidth is the links' bandwidth for the planner.
    if (impl->config.devices.count >= 2) {
      auto bus = comm::MeasureNcclBusBandwidth(impl->config.devices.count);
      if (bus.ok()) {
        impl->profile["link_bandwidth"] = bus.value();
        spdlog::info("moreh-worker: NCCL all-reduce over {} GPUs: {:.0f} GB/s bus bandwidth",
                     impl->config.devices.count, bus.value() / 1e9);
      } else {
        spdlog::warn(
            "moreh-worker: measuring NCCL between the GPUs failed ({}); the planner gets "
            "the host links' bandwidth",
            bus.status().message());
      }
    }
  }
#endif
  for (int d = 0; d < impl->config.devices.count; ++d) {
    impl->device_threads.push_back(std::make_unique<asio::thread_pool>(1));
#ifdef MOREH_WITH_CUDA
    if (impl->config.devices.kind == "cuda") {
      // GPU d: its job thread computes there (the current device is per thread), in its memory.
      asio::post(*impl->device_threads.back(), [d] {
        try {
          kernels::cuda::SetDevice(d);
        } catch (const std::exception& e) {  // its jobs then fail with CUDA's error, named
          spdlog::error("moreh-worker: cuda:{}: {}", d, e.what());
        }
      });
      impl->allocators.push_back(kernels::cuda::CudaAllocator(d));
      continue;
    }
#endif
    impl->owned_allocators.push_back(std::make_unique<runtime::Allocator>(
        fmt::format("{}:{}:{}", impl->config.node_name, impl->config.devices.kind, d),
        impl->config.devices.memory_bytes));
    impl->allocators.push_back(impl->owned_allocators.back().get());
  }
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
    for (auto& t : i.device_threads) t->stop();
  });
  i.AcceptClients();
  i.Connect();
  i.io.run();
}

}  // namespace moreh::worker
