// One rank of the multi-process collectives tests (driven by check_collectives.py): exchanges UCX
// worker addresses through files in --dir, then runs --test and prints "PASS name" / "FAIL name:
// why" lines. Exit 0 when everything passed, 1 on a failed check, 3 when a collective returned an
// error (printed as "ERROR ...").
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "runtime/comm/collectives.h"
#include "runtime/comm/grid.h"

namespace {
using namespace moreh;
using namespace moreh::comm;
namespace fs = std::filesystem;

int g_failed = 0;
void Check(bool ok, const std::string& name, const std::string& why = "") {
  std::printf("%s %s%s\n", ok ? "PASS" : "FAIL", name.c_str(), ok ? "" : (": " + why).c_str());
  g_failed += !ok;
}

[[noreturn]] void Die(const Status& s) {
  std::printf("ERROR %s\n", s.ToString().c_str());
  std::fflush(stdout);
  std::_Exit(3);
}

std::vector<float> Pattern(int rank, int64_t n) {
  std::vector<float> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) v[i] = static_cast<float>((rank + 1) * (i % 7 + 1));
  return v;
}

void TestAllReduce(RingCollectives& c, int world) {
  const float tri = world * (world + 1) / 2.0f;
  for (int64_t n : {int64_t{0}, int64_t{1}, int64_t{1001}, int64_t{16} << 20}) {
    for (DType dt : {DType::kF32, DType::kBF16, DType::kF16}) {
      if (dt != DType::kF32 && n > 100000) continue;
      const std::vector<float> mine = Pattern(c.rank(), n);
      std::vector<uint16_t> raw(static_cast<size_t>(n) * 2);
      ConvertElements(mine.data(), DType::kF32, raw.data(), dt, n);
      Status s = c.AllReduce(raw.data(), raw.data(), n, dt, ReduceOp::kSum);  // in place
      if (!s.ok()) Die(s);
      std::vector<float> got(static_cast<size_t>(n));
      ConvertElements(raw.data(), dt, got.data(), DType::kF32, n);
      bool ok = true;
      for (int64_t i = 0; i < n && ok; ++i) ok = got[i] == tri * static_cast<float>(i % 7 + 1);
      Check(ok, "all_reduce sum " + std::string(DTypeName(dt)) + " n=" + std::to_string(n));
    }
  }
  const std::vector<float> mine = Pattern(c.rank(), 999);
  std::vector<float> out(999);
  Status s = c.AllReduce(mine.data(), out.data(), 999, DType::kF32, ReduceOp::kAvg);
  if (!s.ok()) Die(s);
  bool ok = true;
  for (int i = 0; i < 999 && ok; ++i) {
    ok = std::fabs(out[i] - tri / world * (i % 7 + 1)) <= 1e-6f * out[i];
  }
  Check(ok, "all_reduce avg out of place");
}

void TestOthers(RingCollectives& c, int world) {
  const int64_t n = 4099;
  std::vector<float> in(static_cast<size_t>(n * world));
  for (int64_t i = 0; i < n * world; ++i) in[i] = static_cast<float>((c.rank() + 1) * (i % 5));
  std::vector<float> out(static_cast<size_t>(n));
  Status s = c.ReduceScatter(in.data(), out.data(), n, DType::kF32, ReduceOp::kSum);
  if (!s.ok()) Die(s);
  bool ok = true;
  const float tri = world * (world + 1) / 2.0f;
  for (int64_t i = 0; i < n && ok; ++i) ok = out[i] == tri * ((c.rank() * n + i) % 5);
  Check(ok, "reduce_scatter");
  std::vector<float> mine(static_cast<size_t>(n), static_cast<float>(c.rank() * 10));
  std::vector<float> all(static_cast<size_t>(n * world));
  s = c.AllGather(mine.data(), all.data(), n, DType::kF32);
  if (!s.ok()) Die(s);
  ok = true;
  for (int64_t i = 0; i < n * world && ok; ++i) ok = all[i] == static_cast<float>(i / n * 10);
  Check(ok, "all_gather");
  std::vector<float> b(777, c.rank() == 1 ? 42.0f : -1.0f);
  s = c.Broadcast(b.data(), 777, DType::kF32, 1 % world);
  if (!s.ok()) Die(s);
  Check(std::all_of(b.begin(), b.end(), [&](float x) { return x == (world > 1 ? 42.0f : -1.0f); }),
        "broadcast");
  s = c.Barrier();
  Check(s.ok(), "barrier", s.ToString());
}
}  // namespace

int main(int argc, char** argv) {
  int rank = -1, world = 0, timeout_ms = 10000, iters = 20;
  int64_t size = 1 << 20;
  std::string dir, test;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string k = argv[i], v = argv[i + 1];
    if (k == "--rank") rank = std::stoi(v);
    if (k == "--world") world = std::stoi(v);
    if (k == "--dir") dir = v;
    if (k == "--test") test = v;
    if (k == "--timeout-ms") timeout_ms = std::stoi(v);
    if (k == "--size") size = std::stoll(v);
    if (k == "--iters") iters = std::stoi(v);
  }
  if (rank < 0 || world < 1 || dir.empty() || test.empty()) {
    std::fprintf(stderr, "usage: moreh_comm_rank --rank R --world N --dir D --test T\n");
    return 2;
  }
  auto t = UcxTransport::Create(rank);
  if (!t.ok()) Die(t.status());
  UcxTransport& tr = *t.value();
  {
    const fs::path tmp = fs::path(dir) / ("addr." + std::to_string(rank) + ".tmp");
    std::ofstream(tmp, std::ios::binary) << tr.address();
    fs::rename(tmp, fs::path(dir) / ("addr." + std::to_string(rank)));
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  for (int p = 0; p < world; ++p) {
    const fs::path f = fs::path(dir) / ("addr." + std::to_string(p));
    while (!fs::exists(f)) {
      if (std::chrono::steady_clock::now() > deadline)
        Die(Status::Internal("address exchange timed out"));
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    std::ifstream in(f, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    Status s = tr.Connect(p, ss.str(), test == "die_detect");
    if (!s.ok()) Die(s);
  }
  std::vector<int> all(world);
  for (int i = 0; i < world; ++i) all[i] = i;
  const auto timeout = std::chrono::milliseconds(timeout_ms);
  if (test == "collectives") {
    RingCollectives c(&tr, all, 1, timeout);
    TestAllReduce(c, world);
    TestOthers(c, world);
  } else if (test == "grid") {  // 8 ranks: a 2 x 2 x 2 grid, all-reduce in every group
    const CommGrid g = CommGrid::Create(2, 2, 2, "tp-dp-pp").value();
    uint32_t channel = 10;
    for (Dim d : {Dim::kTp, Dim::kDp, Dim::kPp}) {
      const std::vector<int> grp = g.Group(d, rank);
      RingCollectives c(&tr, grp, channel++, timeout);
      float x = static_cast<float>(rank), expect = 0;
      for (int r : grp) expect += static_cast<float>(r);
      Status s = c.AllReduce(&x, &x, 1, DType::kF32, ReduceOp::kSum);
      if (!s.ok()) Die(s);
      Check(x == expect, "group all_reduce dim " + std::to_string(static_cast<int>(d)));
    }
  } else if (test == "bench_p2p") {  // rank 0 streams `iters` messages of `size` bytes to rank 1
    std::vector<char> buf(static_cast<size_t>(size), 1);
    constexpr int kWindow = 16;
    auto run = [&](int n, uint32_t base) {
      for (int i = 0; i < n; i += kWindow) {
        std::vector<Request> reqs;
        for (int j = i; j < std::min(n, i + kWindow); ++j) {
          auto r = rank == 0 ? tr.Send(1, buf.data(), buf.size(), 3, base + j)
                             : tr.Recv(0, buf.data(), buf.size(), 3, base + j);
          if (!r.ok()) Die(r.status());
          reqs.push_back(r.value());
        }
        Status s = tr.WaitAll(reqs, timeout);
        if (!s.ok()) Die(s);
      }
    };
    run(std::max(2, iters / 10), 0);  // warm-up
    RingCollectives sync(&tr, all, 4, timeout);
    if (Status s = sync.Barrier(); !s.ok()) Die(s);
    const auto t0 = std::chrono::steady_clock::now();
    run(iters, 1 << 20);
    if (Status s = sync.Barrier(); !s.ok()) Die(s);
    const double secs =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (rank == 1) {
      std::printf("{\"bytes\": %lld, \"iters\": %d, \"mb_per_s\": %.1f}\n",
                  static_cast<long long>(size), iters,
                  static_cast<double>(size) * iters / (1 << 20) / secs);
    }
  } else if (test == "bench_lat") {  // ping-pong of `size` bytes; prints the one-way latency
    std::vector<char> buf(static_cast<size_t>(std::max<int64_t>(size, 1)));
    auto pingpong = [&](int n, uint32_t base) {
      for (int i = 0; i < n; ++i) {
        const uint32_t seq = base + static_cast<uint32_t>(i);
        if (rank == 0) {
          auto s1 = tr.Send(1, buf.data(), static_cast<size_t>(size), 6, seq);
          auto r1 = tr.Recv(1, buf.data(), static_cast<size_t>(size), 6, seq);
          if (!s1.ok() || !r1.ok()) Die(s1.ok() ? r1.status() : s1.status());
          if (Status s = tr.WaitAll({s1.value(), r1.value()}, timeout); !s.ok()) Die(s);
        } else {
          auto r1 = tr.Recv(0, buf.data(), static_cast<size_t>(size), 6, seq);
          if (!r1.ok()) Die(r1.status());
          if (Status s = tr.Wait(r1.value(), timeout); !s.ok()) Die(s);
          auto s1 = tr.Send(0, buf.data(), static_cast<size_t>(size), 6, seq);
          if (!s1.ok()) Die(s1.status());
          if (Status s = tr.Wait(s1.value(), timeout); !s.ok()) Die(s);
        }
      }
    };
    pingpong(1000, 0);
    const auto t0 = std::chrono::steady_clock::now();
    pingpong(iters, 1 << 20);
    const double secs =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (rank == 0) std::printf("{\"latency_us\": %.3f}\n", 1e6 * secs / iters / 2);
  } else if (test == "bench_allreduce") {
    RingCollectives c(&tr, all, 5, timeout);
    std::vector<float> buf(static_cast<size_t>(size / 4), 1.0f);
    for (int i = 0; i < 2; ++i) {
      if (Status s = c.AllReduce(buf.data(), buf.data(), size / 4, DType::kF32, ReduceOp::kSum);
          !s.ok())
        Die(s);
    }
    if (Status s = c.Barrier(); !s.ok()) Die(s);
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < iters; ++i) {
      if (Status s = c.AllReduce(buf.data(), buf.data(), size / 4, DType::kF32, ReduceOp::kSum);
          !s.ok())
        Die(s);
    }
    const double secs =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / iters;
    if (rank == 0) {
      std::printf("{\"bytes\": %lld, \"seconds\": %.5f, \"busbw_gb_per_s\": %.3f}\n",
                  static_cast<long long>(size), secs,
                  2.0 * (world - 1) / world * static_cast<double>(size) / secs / 1e9);
    }
  } else if (test == "die" ||
             test == "die_detect") {  // the last rank leaves in the middle of a 64 MiB all-reduce
    RingCollectives c(&tr, all, 2, timeout);
    std::vector<float> big(16 << 20, 1.0f);
    if (rank == world - 1) {
      std::this_thread::sleep_for(std::chrono::milliseconds(300));
      std::_Exit(9);
    }
    const auto t0 = std::chrono::steady_clock::now();
    Status s = c.AllReduce(big.data(), big.data(), 16 << 20, DType::kF32, ReduceOp::kSum);
    const double secs =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("%s after %.2f s\n", s.ok() ? "NOERROR" : ("ERROR " + s.ToString()).c_str(), secs);
    if (s.ok()) return 0;
    // The group is torn down and rebuilt without the dead rank; it works again.
    std::vector<int> alive(all.begin(), all.end() - 1);
    RingCollectives again(&tr, alive, 7, timeout);
    float x = 1;
    const Status r = again.AllReduce(&x, &x, 1, DType::kF32, ReduceOp::kSum);
    std::printf("REBUILT %s\n", r.ok() && x == static_cast<float>(alive.size()) ? "ok" : "failed");
    std::fflush(stdout);
    return 3;
  }
  std::fflush(stdout);
  return g_failed ? 1 : 0;
}
