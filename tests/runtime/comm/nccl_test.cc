// NCCL behind the Collectives interface: one rank on one GPU, two on two. Skips (with the reason)
// where no GPU is present; the build machines compile and link it, the GPU check runs it.
#include <cuda_runtime.h>
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <string>
#include <thread>
#include <vector>

#include "runtime/comm/nccl_collectives.h"
#include "tests/cuda/gpu_test_skip.h"

namespace moreh::comm {
namespace {

// The CUDA devices of this process (0 where CUDA finds none); the tests of two ranks need two.
int CudaDevices() {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess ? n : 0;
}
constexpr char kNeedsTwoGpus[] =
    "needs two CUDA devices (NCCL refuses two ranks on one GPU); found ";

// Poisoned device buffer of n floats.
float* Poisoned(int64_t n) {
  float* p = nullptr;
  if (cudaMalloc(&p, n * sizeof(float)) != cudaSuccess) return nullptr;
  cudaMemset(p, 0xff, n * sizeof(float));
  return p;
}

std::vector<float> Download(const float* dev, int64_t n) {
  std::vector<float> back(n);
  EXPECT_EQ(cudaMemcpy(back.data(), dev, n * sizeof(float), cudaMemcpyDeviceToHost), cudaSuccess);
  return back;
}

// One rank: every collective is the identity, so each runs out of place into a poisoned buffer
// (an implementation that returns Ok without moving data fails).
TEST(NcclCollectives, OneRankAllReduceGatherBroadcast) {
  MOREH_SKIP_WITHOUT_GPU("the NCCL path is");
  auto id = NcclUniqueId();
  ASSERT_TRUE(id.ok()) << id.status().ToString();
  auto c = NcclCollectives::Create(id.value(), 0, 1, 0, std::chrono::seconds(30));
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  const int64_t n = 1001;
  std::vector<float> host(n);
  for (int64_t i = 0; i < n; ++i) host[i] = static_cast<float>(i % 13);
  float* dev = nullptr;
  ASSERT_EQ(cudaMalloc(&dev, n * sizeof(float)), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(dev, host.data(), n * sizeof(float), cudaMemcpyHostToDevice), cudaSuccess);
  Collectives& coll = *c.value();
  for (ReduceOp op : {ReduceOp::kSum, ReduceOp::kAvg}) {
    float* out = Poisoned(n);
    ASSERT_NE(out, nullptr);
    ASSERT_TRUE(coll.AllReduce(dev, out, n, DType::kF32, op).ok());
    EXPECT_EQ(Download(out, n), host) << "all-reduce out of place";
    cudaMemset(out, 0xff, n * sizeof(float));
    ASSERT_TRUE(coll.ReduceScatter(dev, out, n, DType::kF32, op).ok());
    EXPECT_EQ(Download(out, n), host) << "reduce-scatter";
    cudaFree(out);
  }
  float* gathered = Poisoned(n);
  ASSERT_NE(gathered, nullptr);
  ASSERT_TRUE(coll.AllGather(dev, gathered, n, DType::kF32).ok());
  EXPECT_EQ(Download(gathered, n), host) << "all-gather";
  cudaFree(gathered);
  ASSERT_TRUE(coll.AllReduce(dev, dev, n, DType::kF32, ReduceOp::kSum).ok());  // in place
  ASSERT_TRUE(coll.Broadcast(dev, n, DType::kF32, 0).ok());
  ASSERT_TRUE(coll.Barrier().ok());
  EXPECT_EQ(Download(dev, n), host);
  EXPECT_FALSE(coll.AllReduce(dev, dev, n, DType::kI64, ReduceOp::kSum).ok());
  EXPECT_FALSE(NcclCollectives::Create("short", 0, 1, 0, std::chrono::seconds(1)).ok());
  cudaFree(dev);
}

// The overlapped all-reduce (queued behind the compute stream, waited for later), one rank.
// (One rank moves no data: this checks that queued collectives complete and leave the data intact,
// not their ordering against the compute stream, which needs two ranks.)
TEST(NcclCollectives, StartedAllReduceCompletesOnWait) {
  MOREH_SKIP_WITHOUT_GPU("the NCCL path is");
  auto id = NcclUniqueId();
  ASSERT_TRUE(id.ok()) << id.status().ToString();
  auto c = NcclCollectives::Create(id.value(), 0, 1, 0, std::chrono::seconds(30));
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  const int64_t n = 1 << 20;
  std::vector<float> host(n, 3.0f);
  float* dev = nullptr;
  ASSERT_EQ(cudaMalloc(&dev, n * sizeof(float)), cudaSuccess);
  // Written on the compute (legacy default) stream without a host wait: the all-reduce must see it.
  ASSERT_EQ(cudaMemcpyAsync(dev, host.data(), n * sizeof(float), cudaMemcpyHostToDevice,
                            cudaStreamLegacy),
            cudaSuccess);
  ASSERT_TRUE(c.value()->StartAllReduce(dev, n / 2, DType::kF32).ok());
  ASSERT_TRUE(c.value()->StartAllReduce(dev + n / 2, n / 2, DType::kF32).ok());
  ASSERT_TRUE(c.value()->WaitStarted().ok());
  std::vector<float> back(n);
  ASSERT_EQ(cudaMemcpy(back.data(), dev, n * sizeof(float), cudaMemcpyDeviceToHost), cudaSuccess);
  EXPECT_EQ(back, host);
  cudaFree(dev);
}

// A pipeline link between two GPUs (two ranks of one process, as two stages on one node).
TEST(NcclPeerLink, SendsReachTheOtherGpuInOrder) {
  if (CudaDevices() < 2) GTEST_SKIP() << kNeedsTwoGpus << CudaDevices();
  auto id = NcclUniqueId();
  ASSERT_TRUE(id.ok()) << id.status().ToString();
  std::unique_ptr<NcclPeerLink> out, in;
  std::thread t([&] {  // init waits for both ranks
    auto l = NcclPeerLink::Create(id.value(), false, 1, std::chrono::seconds(30));
    if (l.ok()) in = std::move(l.value());
  });
  auto l = NcclPeerLink::Create(id.value(), true, 0, std::chrono::seconds(30));
  t.join();
  ASSERT_TRUE(l.ok()) << l.status().ToString();
  ASSERT_NE(in, nullptr);
  out = std::move(l.value());
  const int64_t n = 3 << 20;
  std::vector<std::vector<uint8_t>> sent(3, std::vector<uint8_t>(n));
  std::vector<void*> src(3), dst(3);
  for (int k = 0; k < 3; ++k) {
    for (int64_t i = 0; i < n; ++i) sent[k][i] = static_cast<uint8_t>(i * (k + 1));
    ASSERT_EQ(cudaSetDevice(0), cudaSuccess);
    ASSERT_EQ(cudaMalloc(&src[k], n), cudaSuccess);
    ASSERT_EQ(cudaMemcpy(src[k], sent[k].data(), n, cudaMemcpyHostToDevice), cudaSuccess);
    ASSERT_EQ(cudaSetDevice(1), cudaSuccess);
    ASSERT_EQ(cudaMalloc(&dst[k], n), cudaSuccess);
  }
  std::vector<int64_t> tickets;
  for (int k = 0; k < 3; ++k) {
    auto ticket = out->Send(src[k], n);
    ASSERT_TRUE(ticket.ok()) << ticket.status().ToString();
    tickets.push_back(ticket.value());
  }
  EXPECT_FALSE(in->Send(dst[0], n).ok());  // a receiving link does not send
  for (int k = 0; k < 3; ++k) ASSERT_TRUE(in->Recv(dst[k], n).ok());
  ASSERT_TRUE(out->WaitSends().ok());
  for (int64_t ticket : tickets) EXPECT_TRUE(out->SendDone(ticket));
  for (int k = 0; k < 3; ++k) {
    std::vector<uint8_t> back(n);
    ASSERT_EQ(cudaMemcpy(back.data(), dst[k], n, cudaMemcpyDeviceToHost), cudaSuccess);
    EXPECT_EQ(back, sent[k]) << "message " << k;
    cudaFree(src[k]);
    cudaFree(dst[k]);
  }
}

// Two ranks on two GPUs (two threads of one process, as a worker's two stages): every collective's
// values, in f32 and bf16, out of place into poisoned buffers and in place.
TEST(NcclCollectives, TwoRanksComputeEachCollective) {
  if (CudaDevices() < 2) GTEST_SKIP() << kNeedsTwoGpus << CudaDevices();
  auto id = NcclUniqueId();
  ASSERT_TRUE(id.ok()) << id.status().ToString();
  const int64_t n = 4099;  // odd: no chunk of a ring lines up with it
  // Rank r's input: x_r[i] = (i % 17) * (r + 1) + r, exact in bf16 (small integers).
  auto input = [](int r, int64_t i) { return static_cast<float>((i % 17) * (r + 1) + r); };
  std::vector<std::string> failures(2);
  auto rank = [&](int r) {
    std::string& f = failures[r];
    auto fail = [&](const std::string& what) {
      if (f.empty()) f = "rank " + std::to_string(r) + ": " + what;
    };
    if (cudaSetDevice(r) != cudaSuccess) return fail("cudaSetDevice");
    auto made = NcclCollectives::Create(id.value(), r, 2, r, std::chrono::seconds(60));
    if (!made.ok()) return fail(made.status().ToString());
    Collectives& c = *made.value();
    for (DType dt : {DType::kF32, DType::kBF16}) {
      const size_t es = DTypeSize(dt);
      std::vector<float> host(2 * n);
      for (int64_t i = 0; i < 2 * n; ++i) host[i] = input(r, i);
      std::vector<char> packed(2 * n * es);
      ConvertElements(host.data(), DType::kF32, packed.data(), dt, 2 * n);
      void *in = nullptr, *out = nullptr;
      cudaMalloc(&in, 2 * n * es);
      cudaMalloc(&out, 2 * n * es);
      cudaMemcpy(in, packed.data(), 2 * n * es, cudaMemcpyHostToDevice);
      auto result = [&](const void* dev, int64_t count) {
        std::vector<char> raw(count * es);
        cudaMemcpy(raw.data(), dev, count * es, cudaMemcpyDeviceToHost);
        std::vector<float> v(count);
        ConvertElements(raw.data(), dt, v.data(), DType::kF32, count);
        return v;
      };
      auto expect = [&](const char* what, const std::vector<float>& got, auto want) {
        for (size_t i = 0; i < got.size(); ++i) {
          if (got[i] != want(static_cast<int64_t>(i))) {
            return fail(fmt::format("{} {}: element {} is {}, expected {}", what, DTypeName(dt), i,
                                    got[i], want(static_cast<int64_t>(i))));
          }
        }
      };
      auto sum = [&](int64_t i) { return input(0, i) + input(1, i); };
      cudaMemset(out, 0xff, 2 * n * es);
      if (!c.AllReduce(in, out, n, dt, ReduceOp::kSum).ok()) return fail("all_reduce");
      expect("all_reduce sum", result(out, n), sum);
      if (!c.AllReduce(in, out, n, dt, ReduceOp::kAvg).ok()) return fail("all_reduce avg");
      expect("all_reduce avg", result(out, n), [&](int64_t i) { return sum(i) / 2; });
      cudaMemset(out, 0xff, 2 * n * es);
      if (!c.ReduceScatter(in, out, n, dt, ReduceOp::kSum).ok()) return fail("reduce_scatter");
      expect("reduce_scatter", result(out, n), [&](int64_t i) { return sum(r * n + i); });
      cudaMemset(out, 0xff, 2 * n * es);
      if (!c.AllGather(in, out, n, dt).ok()) return fail("all_gather");
      expect("all_gather", result(out, 2 * n),
             [&](int64_t i) { return input(static_cast<int>(i / n), i % n); });
      if (!c.Broadcast(in, n, dt, 1).ok()) return fail("broadcast");
      expect("broadcast from rank 1", result(in, n), [&](int64_t i) { return input(1, i); });
      // Overlapped, in place, as the data-parallel gradient buckets: now both hold x_1.
      if (!c.StartAllReduce(in, n / 2, dt).ok() ||
          !c.StartAllReduce(static_cast<char*>(in) + n / 2 * es, n - n / 2, dt).ok() ||
          !c.WaitStarted().ok()) {
        return fail("started all_reduce");
      }
      expect("started all_reduce", result(in, n), [&](int64_t i) { return 2 * input(1, i); });
      cudaFree(in);
      cudaFree(out);
    }
    if (!c.Barrier().ok()) fail("barrier");
  };
  std::thread other(rank, 1);
  rank(0);
  other.join();
  EXPECT_EQ(failures[0], "");
  EXPECT_EQ(failures[1], "");
}

// What a worker with several GPUs reports as its links' bandwidth.
TEST(NcclBusBandwidth, OfSeveralGpus) {
  EXPECT_FALSE(MeasureNcclBusBandwidth(1).ok());  // one GPU has no links
  const int gpus = CudaDevices();
  if (gpus < 2) GTEST_SKIP() << kNeedsTwoGpus << gpus;
  auto bw = MeasureNcclBusBandwidth(gpus);
  ASSERT_TRUE(bw.ok()) << bw.status().ToString();
  std::printf("NCCL all-reduce bus bandwidth over %d GPUs: %.1f GB/s\n", gpus, bw.value() / 1e9);
#ifndef MOREH_CUDA_SIMT
  EXPECT_GT(bw.value(), 1e9);  // slower than 1 GB/s between GPUs of one node is not a link
#else
  EXPECT_GT(bw.value(), 0.0);  // the emulated devices' link is a socket on 127.0.0.1
#endif
}

}  // namespace
}  // namespace moreh::comm
