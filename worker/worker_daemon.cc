#include "worker/worker_daemon.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#ifdef MOREH_WITH_CUDA
#include "kernels/cuda/device_allocator.h"
#include "kernels/cuda/device_info.h"
#include "runtime/comm/nccl_collectives.h"
#endif
#include "runtime/comm/ucx_transport.h"
#include "runtime/net/protocol.h"
#include "worker/client_session.h"
#include "worker/profile.h"
#include "worker/scheduler_link.h"
#include "worker/worker_context.h"

namespace moreh::worker {
namespace asio = boost::asio;
using asio::ip::tcp;
using json = nlohmann::json;

net::ConnectionLimits WorkerConfig::DefaultLimits() {
  net::ConnectionLimits l;
  l.idle_timeout = std::chrono::milliseconds(300000);
  return l;
}

Status WorkerConfig::Validate() const {
  if (node_name.empty()) return Status::InvalidArgument("a node name is required");
  if (scheduler_port <= 0 || scheduler_port > 65535) {
    return Status::InvalidArgument(fmt::format("scheduler port {} out of range", scheduler_port));
  }
  if (listen_port < 0 || listen_port > 65535) {
    return Status::InvalidArgument(fmt::format("listen port {} out of range", listen_port));
  }
  if (cluster_key.empty()) return Status::InvalidArgument("a cluster key is required");
  if (devices.count < 1) return Status::InvalidArgument("no devices");
  return limits.Validate();
}

namespace {
// A client connection as its session sees it.
class ConnectionLink : public SessionLink {
 public:
  explicit ConnectionLink(std::weak_ptr<net::JsonConnection> c) : c_(std::move(c)) {}
  void Send(const json& m) override {
    if (auto c = c_.lock()) c->Send(m);
  }
  void Authenticated() override {
    if (auto c = c_.lock()) c->Authenticated();
  }
  void Hold() override {
    if (auto c = c_.lock()) c->Hold();
  }
  void Unhold() override {
    if (auto c = c_.lock()) c->Unhold();
  }

 private:
  std::weak_ptr<net::JsonConnection> c_;
};
}  // namespace

struct WorkerDaemon::Impl {
  WorkerConfig config;
  net::WorkerProfile profile;
  asio::io_context io;
  asio::signal_set signals{io, SIGINT, SIGTERM};
  tcp::acceptor acceptor{io};
  WorkerContext context{io};
  std::unique_ptr<net::ConnectionSet> clients;
  std::unique_ptr<SchedulerLink> scheduler;

  json Registration() const;
};

json WorkerDaemon::Impl::Registration() const {
  net::RegisterWorker r;
  r.node = config.node_name;
  r.address = fmt::format("{}:{}", config.listen_host, acceptor.local_endpoint().port());
  for (int i = 0; i < config.devices.count; ++i) {
    net::DeviceInfo d;
    d.id = i;
    d.kind = config.devices.kind;
    d.name = fmt::format("{}:{}", config.devices.kind, i);
    d.memory_bytes = config.devices.memory_bytes;
#ifdef MOREH_WITH_CUDA
    if (config.devices.kind == "cuda") {  // each GPU as the driver reports it
      d.name = kernels::cuda::DeviceName(i);
      d.memory_bytes = context.allocators.at(static_cast<size_t>(i))->capacity();
    }
#endif
    r.devices.push_back(std::move(d));
  }
  r.profile = profile;
  return r.ToJson();
}

WorkerDaemon::WorkerDaemon(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
WorkerDaemon::~WorkerDaemon() = default;

StatusOr<std::unique_ptr<WorkerDaemon>> WorkerDaemon::Create(WorkerConfig config) {
  MOREH_RETURN_IF_ERROR(config.Validate());
  auto impl = std::make_unique<Impl>();
  impl->config = std::move(config);
  const WorkerConfig& c = impl->config;
  boost::system::error_code ec;
  const tcp::endpoint ep(asio::ip::make_address(c.listen_host, ec), c.listen_port);
  if (ec)
    return Status::InvalidArgument("--listen-host '" + c.listen_host + "' is not an IP address");
  impl->acceptor.open(ep.protocol(), ec);
  if (!ec) impl->acceptor.bind(ep, ec);
  if (!ec) impl->acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    return Status::Unavailable(
        fmt::format("cannot listen on {}:{}: {}", c.listen_host, c.listen_port, ec.message()));
  }
  // Jobs' UCX traffic stays on the network the worker was told to use.
  auto net_device = comm::NetDeviceForAddress(c.listen_host);
  if (!net_device.ok()) return net_device.status();
  impl->context.net_device = net_device.value();
  impl->context.cluster_key = c.cluster_key;
  if (c.measure_profile) impl->profile = MeasureProfile();
#ifdef MOREH_WITH_CUDA
  // GPUs: the GEMM and memory speed of the first (the node's GPUs are one model).
  if (c.measure_profile && c.devices.kind == "cuda") {
    kernels::cuda::GpuProfile gpu;
    try {
      gpu = kernels::cuda::MeasureGpu(0);
    } catch (const std::exception& e) {  // a GPU that fails this would fail every job
      return Status::Unavailable(fmt::format("cuda:0 ({}) failed its start-up profile: {}",
                                             kernels::cuda::DeviceName(0), e.what()));
    }
    impl->profile.gemm_flops_bf16 = gpu.gemm_flops_bf16;
    impl->profile.gpu_memory_bandwidth = gpu.memory_bandwidth;
    spdlog::info("moreh-worker: {}: bf16 GEMM {:.4g} TFLOP/s, memory {:.4g} GB/s",
                 kernels::cuda::DeviceName(0), gpu.gemm_flops_bf16 / 1e12,
                 gpu.memory_bandwidth / 1e9);
    // The stages on this node's GPUs talk over NCCL (NVLink or PCIe), not the host's UCX links
    // measured above: their all-reduce bus bandwidth is the links' bandwidth for the planner.
    if (c.devices.count >= 2) {
      auto bus = comm::MeasureNcclBusBandwidth(c.devices.count);
      if (bus.ok()) {
        impl->profile.link_bandwidth = bus.value();
        spdlog::info("moreh-worker: NCCL all-reduce over {} GPUs: {:.0f} GB/s bus bandwidth",
                     c.devices.count, bus.value() / 1e9);
      } else {
        spdlog::warn(
            "moreh-worker: measuring NCCL between the GPUs failed ({}); the planner gets "
            "the host links' bandwidth",
            bus.status().message());
      }
    }
  }
#endif
  WorkerContext& w = impl->context;
  for (int d = 0; d < c.devices.count; ++d) {
    w.device_threads.push_back(std::make_unique<asio::thread_pool>(1));
#ifdef MOREH_WITH_CUDA
    if (c.devices.kind == "cuda") {
      // GPU d: its job thread computes there (the current device is per thread), in its memory.
      asio::post(*w.device_threads.back(), [d] {
        try {
          kernels::cuda::SetDevice(d);
        } catch (const std::exception& e) {  // its jobs then fail with CUDA's error, named
          spdlog::error("moreh-worker: cuda:{}: {}", d, e.what());
        }
      });
      w.allocators.push_back(kernels::cuda::CudaAllocator(d));
      continue;
    }
#endif
    w.owned_allocators.push_back(std::make_unique<runtime::Allocator>(
        fmt::format("{}:{}:{}", c.node_name, c.devices.kind, d), c.devices.memory_bytes));
    w.allocators.push_back(w.owned_allocators.back().get());
  }
  impl->clients = std::make_unique<net::ConnectionSet>(impl->io, c.limits);
  Impl* i = impl.get();
  impl->scheduler = std::make_unique<SchedulerLink>(
      &w, c.scheduler_host, c.scheduler_port, c.cluster_key, [i] { return i->Registration(); });
  return std::unique_ptr<WorkerDaemon>(new WorkerDaemon(std::move(impl)));
}

void WorkerDaemon::Run() {
  Impl& i = *impl_;
  net::RaiseFileLimit();
  i.signals.async_wait([&i](boost::system::error_code, int) {
    boost::system::error_code ec;
    i.acceptor.close(ec);
    i.scheduler->Stop();
    i.clients->CloseAll();
    for (auto& t : i.context.device_threads) t->stop();
  });
  i.clients->AcceptOn(i.acceptor, [&i](std::shared_ptr<net::JsonConnection> c) {
    auto session = std::make_shared<ClientSession>(&i.context, std::make_unique<ConnectionLink>(c));
    c->Start([session](const json& m) { return session->Handle(m); },
             [session] { session->Closed(); });
  });
  i.scheduler->Start();
  spdlog::info("moreh-worker '{}' serving {} x {} on {}:{} (UCX on {})", i.config.node_name,
               i.config.devices.count, i.config.devices.kind, i.config.listen_host,
               i.acceptor.local_endpoint().port(),
               i.context.net_device.empty() ? "any interface" : i.context.net_device);
  i.io.run();
}

}  // namespace moreh::worker
