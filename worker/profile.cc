#include "worker/profile.h"

#include <time.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <thread>
#include <vector>

#include "kernels/cpu/cpu_kernels.h"
#include "runtime/comm/ucx_transport.h"
#include "runtime/core/parallel.h"

namespace moreh::worker {

namespace {
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

}  // namespace

// What one device achieves alone. GEMM throughput is counted per CPU second (times the threads
// the device runs, at most the host's cores), so that daemons starting together on one host
// (which contend for its cores while they measure) still report the speed of a device running on
// its own; the planner shares a host's cores among the devices that compute on it at once.
net::WorkerProfile MeasureProfile() {
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
  net::WorkerProfile p;
  p.gemm_flops_f32 = gemm_flops;
  p.memory_bandwidth = 2.0 * static_cast<double>(src.size()) / copy_s;
  p.threads = NumThreads();
  p.host_cores = host_cores;
  p.loaded_latency_s = links.loaded_latency_s;
  p.link_bandwidth = links.bandwidth;
  return p;
}

}  // namespace moreh::worker
