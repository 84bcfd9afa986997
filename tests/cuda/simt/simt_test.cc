// The SIMT emulator's own behaviour, on small CUDA kernels written here: what it must compute as a
// GPU would, and the mistakes it must catch (a missing barrier, a barrier not every thread
// reaches, a launch a GPU refuses, an access past a buffer).
#include <gtest/gtest.h>
#include <nccl.h>

#include <chrono>
#include <cstring>
#include <future>
#include <numeric>
#include <string>
#include <thread>
#include <vector>

#include "kernels/cuda/common.cuh"
#include "runtime/core/error.h"

namespace moreh::kernels::cuda {
namespace {

__global__ void WarpSumKernel(float* out, const float* in) {
  out[threadIdx.x] = WarpSum(in[threadIdx.x]);
}

__global__ void BlockSumKernel(float* out, const float* in) {
  const unsigned i = blockIdx.x * blockDim.x + threadIdx.x;
  out[i] = BlockSum(in[i]);
}

// Each thread writes its slot and reads its neighbour's, with or without the barrier between.
__global__ void NeighbourKernel(int* out, int salt, bool barrier) {
  __shared__ int slot[64];
  slot[threadIdx.x] = static_cast<int>(threadIdx.x) + salt;
  if (barrier) __syncthreads();
  out[threadIdx.x] = slot[(threadIdx.x + 1) % blockDim.x];
}

// Wrong: half of warp 0 waits at the block barrier, the other half at a shuffle that needs the
// whole warp.
__global__ void DivergentBarrierKernel(int* out) {
  int v = static_cast<int>(threadIdx.x);
  if (threadIdx.x < 16) {
    __syncthreads();
  } else {
    v = __shfl_xor_sync(0xffffffffu, v, 1);
  }
  out[threadIdx.x] = v;
}

// Threads that return early do not hold a barrier up (as on the GPU).
__global__ void EarlyExitKernel(int* out) {
  if (threadIdx.x >= 40) return;
  __syncthreads();
  out[threadIdx.x] = 1;
}

__global__ void VoteKernel(int* out) {
  const int all = __syncthreads_and(threadIdx.x < 1000);
  const int any = __syncthreads_or(threadIdx.x == 17);
  const int none = __syncthreads_or(0);
  out[threadIdx.x] = all * 100 + any * 10 + none;
}

// Tag: a distinct kernel per test (the shared memory allowance is the kernel's for the process).
template <int Tag>
__global__ void DynamicSmemKernel(float* out) {
  float* s = DynamicShared<float>();
  s[threadIdx.x] = static_cast<float>(threadIdx.x);
  __syncthreads();
  out[threadIdx.x] = s[blockDim.x - 1 - threadIdx.x];
}

__global__ void ThrowingKernel(int* out) {
  if (threadIdx.x == 5) throw Error("thread 5 gave up");
  out[threadIdx.x] = 1;
}

__global__ void ReadPastEndKernel(float* out, const float* in, int n) {
  out[threadIdx.x] = in[threadIdx.x + 1];  // the last thread reads in[n]
}

template <typename T>
std::vector<T> Output(int n, const std::function<void(T*)>& launch) {
  T* d = nullptr;
  EXPECT_EQ(cudaMalloc(reinterpret_cast<void**>(&d), n * sizeof(T)), cudaSuccess);
  launch(d);
  std::vector<T> h(n);
  EXPECT_EQ(cudaMemcpy(h.data(), d, n * sizeof(T), cudaMemcpyDeviceToHost), cudaSuccess);
  cudaFree(d);
  return h;
}

class Simt : public ::testing::TestWithParam<bool> {
 protected:
  void SetUp() override { simt::SetReverseOrder(GetParam()); }
  void TearDown() override { simt::SetReverseOrder(false); }
};

TEST_P(Simt, ShufflesAndBlockSumsGiveEveryThreadTheTotal) {
  std::vector<float> in(256);
  std::iota(in.begin(), in.end(), 1.0f);
  float* din = nullptr;
  ASSERT_EQ(cudaMalloc(reinterpret_cast<void**>(&din), in.size() * 4), cudaSuccess);
  cudaMemcpy(din, in.data(), in.size() * 4, cudaMemcpyHostToDevice);
  const auto warp = Output<float>(64, [&](float* out) {
    MOREH_CUDA_LAUNCH(1, 64, 0, nullptr, WarpSumKernel)(out, din);
  });
  for (int t = 0; t < 64; ++t) EXPECT_EQ(warp[t], t < 32 ? 528.0f : 1552.0f) << t;  // 1..32, 33..64
  const auto block = Output<float>(128, [&](float* out) {
    MOREH_CUDA_LAUNCH(2, 64, 0, nullptr, BlockSumKernel)(out, din);
  });
  for (int t = 0; t < 128; ++t) EXPECT_EQ(block[t], t < 64 ? 2080.0f : 6176.0f) << t;
  cudaFree(din);
}

TEST_P(Simt, AMissingBarrierReadsStaleSharedMemory) {
  const auto good = Output<int>(64, [](int* out) {
    MOREH_CUDA_LAUNCH(1, 64, 0, nullptr, NeighbourKernel)(out, 0, true);
  });
  for (int t = 0; t < 64; ++t) EXPECT_EQ(good[t], (t + 1) % 64);
  // Without the barrier: in thread order each thread reads a slot its neighbour has not written
  // yet; in reverse order the wrap-around read (thread 63 reads slot 0) is the stale one, left by
  // the launch before.
  const auto racy = Output<int>(64, [](int* out) {
    MOREH_CUDA_LAUNCH(1, 64, 0, nullptr, NeighbourKernel)(out, 1000, false);
  });
  int wrong = 0;
  for (int t = 0; t < 64; ++t) wrong += racy[t] != (t + 1) % 64 + 1000;
  EXPECT_GT(wrong, 0) << "the race must change the result in either order";
}

TEST_P(Simt, ABarrierNotEveryThreadReachesIsADeadlock) {
  int* out = nullptr;
  ASSERT_EQ(cudaMalloc(reinterpret_cast<void**>(&out), 64 * 4), cudaSuccess);
  try {
    MOREH_CUDA_LAUNCH(1, 64, 0, nullptr, DivergentBarrierKernel)(out);
    cudaDeviceSynchronize();  // the grid ran on the stream: the wait rethrows its failure
    FAIL() << "no deadlock reported";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("deadlock"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("DivergentBarrierKernel"), std::string::npos) << e.what();
  }
  cudaFree(out);
}

TEST_P(Simt, ReturnedThreadsDoNotHoldABarrier) {
  const auto out = Output<int>(64, [](int* o) {
    cudaMemset(o, 0, 64 * 4);
    MOREH_CUDA_LAUNCH(1, 64, 0, nullptr, EarlyExitKernel)(o);
  });
  for (int t = 0; t < 64; ++t) EXPECT_EQ(out[t], t < 40 ? 1 : 0);
}

TEST_P(Simt, BarrierVotes) {
  const auto out = Output<int>(96, [](int* o) {
    MOREH_CUDA_LAUNCH(1, 96, 0, nullptr, VoteKernel)
    (o);
  });
  for (int t = 0; t < 96; ++t) EXPECT_EQ(out[t], 110) << t;
}

TEST_P(Simt, DynamicSharedMemory) {
  const auto out = Output<float>(256, [](float* o) {
    MOREH_CUDA_LAUNCH(1, 256, 256 * sizeof(float), nullptr, DynamicSmemKernel<0>)(o);
  });
  for (int t = 0; t < 256; ++t) EXPECT_EQ(out[t], 255.0f - t);
}

// Above 48 KiB a launch fails unless the kernel was allowed more, as on the GPU.
TEST(SimtLimits, DynamicSharedMemoryAbove48KiBTakesTheAttribute) {
  float* o = nullptr;
  ASSERT_EQ(cudaMalloc(reinterpret_cast<void**>(&o), 256 * 4), cudaSuccess);
  MOREH_CUDA_LAUNCH(1, 256, 64 << 10, nullptr, DynamicSmemKernel<1>)(o);
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidValue);
  ASSERT_EQ(cudaFuncSetAttribute(DynamicSmemKernel<1>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                 64 << 10),
            cudaSuccess);
  MOREH_CUDA_LAUNCH(1, 256, 64 << 10, nullptr, DynamicSmemKernel<1>)(o);
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
  // More than the GPU has is refused at the attribute.
  EXPECT_EQ(cudaFuncSetAttribute(DynamicSmemKernel<1>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                 228 << 10),
            cudaErrorInvalidValue);
  cudaGetLastError();
  cudaFree(o);
}

TEST_P(Simt, LaunchesAGpuRefusesFail) {
  int* o = nullptr;
  ASSERT_EQ(cudaMalloc(reinterpret_cast<void**>(&o), 4096 * 4), cudaSuccess);
  MOREH_CUDA_LAUNCH(1, 2048, 0, nullptr, EarlyExitKernel)(o);  // more than 1024 threads
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidConfiguration);
  MOREH_CUDA_LAUNCH(dim3(1, 70000), 32, 0, nullptr, EarlyExitKernel)(o);  // grid.y > 65535
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidConfiguration);
  MOREH_CUDA_LAUNCH(1, 32, 0, nullptr, EarlyExitKernel)(o);
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
  cudaFree(o);
}

TEST_P(Simt, AnExceptionInAThreadReachesTheLauncher) {
  int* o = nullptr;
  ASSERT_EQ(cudaMalloc(reinterpret_cast<void**>(&o), 64 * 4), cudaSuccess);
  // The grid runs on the stream: the next wait rethrows (sync streams: the launch itself).
  EXPECT_THROW(
      {
        MOREH_CUDA_LAUNCH(1, 64, 0, nullptr, ThrowingKernel)(o);
        cudaDeviceSynchronize();
      },
      Error);
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);  // thrown once
  // The emulator is usable afterwards.
  MOREH_CUDA_LAUNCH(1, 32, 0, nullptr, EarlyExitKernel)(o);
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
  cudaFree(o);
}

// Events time the host between their records (work in between has finished); one created
// without timing, or never recorded, is refused as CUDA refuses it.
TEST(SimtEvents, ElapsedTimeBetweenRecords) {
  cudaEvent_t a = nullptr, b = nullptr, untimed = nullptr;
  ASSERT_EQ(cudaEventCreate(&a), cudaSuccess);
  ASSERT_EQ(cudaEventCreate(&b), cudaSuccess);
  ASSERT_EQ(cudaEventCreateWithFlags(&untimed, cudaEventDisableTiming), cudaSuccess);
  float ms = -1;
  EXPECT_EQ(cudaEventElapsedTime(&ms, a, b), cudaErrorInvalidResourceHandle);  // not recorded
  cudaGetLastError();
  ASSERT_EQ(cudaEventRecord(a, nullptr), cudaSuccess);
  ASSERT_EQ(cudaEventSynchronize(a), cudaSuccess);  // its stream's delay is not the host's sleep
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  ASSERT_EQ(cudaEventRecord(b, nullptr), cudaSuccess);
  ASSERT_EQ(cudaEventSynchronize(b), cudaSuccess);  // before, it may not be reached yet
  ASSERT_EQ(cudaEventElapsedTime(&ms, a, b), cudaSuccess);
  EXPECT_GE(ms, 19.0f);
  EXPECT_LT(ms, 5000.0f);
  ASSERT_EQ(cudaEventRecord(untimed, nullptr), cudaSuccess);
  EXPECT_EQ(cudaEventElapsedTime(&ms, a, untimed), cudaErrorInvalidResourceHandle);
  cudaGetLastError();
  for (cudaEvent_t e : {a, b, untimed}) cudaEventDestroy(e);
}

// Streams run their work later than the calls that queue it, each in its order: a stream that
// waits for an event runs after the work recorded before it; one made with cudaStreamNonBlocking
// and no wait runs regardless of the legacy stream; one made without the flag (blocking) waits
// for the legacy stream's earlier work; the host waits for a copy into its memory. The legacy
// stream is held at a gate opened by the test.
TEST(SimtStreams, EachStreamRunsInOrderAndWaitsOnlyWhereTold) {
  if (simt::SynchronousStreams()) GTEST_SKIP() << "MOREH_SIMT_STREAMS=sync: no queues to check";
  constexpr size_t kBytes = 256;
  unsigned char *buf = nullptr, *waited = nullptr, *unordered = nullptr, *blocked = nullptr;
  for (unsigned char** p : {&buf, &waited, &unordered, &blocked}) {
    ASSERT_EQ(cudaMalloc(reinterpret_cast<void**>(p), kBytes), cudaSuccess);
    ASSERT_EQ(cudaMemset(*p, 0, kBytes), cudaSuccess);
  }
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  cudaStream_t waits = nullptr, independent = nullptr, blocking = nullptr;
  ASSERT_EQ(cudaStreamCreateWithFlags(&waits, cudaStreamNonBlocking), cudaSuccess);
  ASSERT_EQ(cudaStreamCreateWithFlags(&independent, cudaStreamNonBlocking), cudaSuccess);
  ASSERT_EQ(cudaStreamCreate(&blocking), cudaSuccess);
  cudaEvent_t written = nullptr;
  ASSERT_EQ(cudaEventCreateWithFlags(&written, cudaEventDisableTiming), cudaSuccess);

  std::promise<void> gate;
  std::shared_future<void> opened = gate.get_future().share();
  simt::Enqueue(cudaStreamLegacy, [opened] { opened.wait(); });
  ASSERT_EQ(cudaMemsetAsync(buf, 7, kBytes, cudaStreamLegacy), cudaSuccess);
  ASSERT_EQ(cudaEventRecord(written, cudaStreamLegacy), cudaSuccess);
  ASSERT_EQ(cudaStreamWaitEvent(waits, written, 0), cudaSuccess);
  std::promise<void> second_gate;  // holds `waits` after the event, until the end
  std::shared_future<void> second_opened = second_gate.get_future().share();
  simt::Enqueue(waits, [second_opened] { second_opened.wait(); });
  ASSERT_EQ(cudaMemcpyAsync(waited, buf, kBytes, cudaMemcpyDeviceToDevice, waits), cudaSuccess);
  ASSERT_EQ(cudaMemcpyAsync(unordered, buf, kBytes, cudaMemcpyDeviceToDevice, independent),
            cudaSuccess);
  ASSERT_EQ(cudaMemcpyAsync(blocked, buf, kBytes, cudaMemcpyDeviceToDevice, blocking), cudaSuccess);

  // The gate is shut: only the independent stream can run.
  ASSERT_EQ(cudaStreamSynchronize(independent), cudaSuccess);
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  EXPECT_EQ(cudaEventQuery(written), cudaErrorNotReady);
  EXPECT_EQ(cudaStreamQuery(waits), cudaErrorNotReady);
  EXPECT_EQ(cudaStreamQuery(blocking), cudaErrorNotReady);
  EXPECT_EQ(cudaStreamQuery(cudaStreamLegacy), cudaErrorNotReady);
  // Destroyed with its copy still queued: the copy runs all the same, and the device's
  // synchronization below waits for it.
  EXPECT_EQ(cudaStreamDestroy(waits), cudaSuccess);

  // The host's copy waits for the legacy stream, which another thread opens later; the device's
  // synchronization waits for the destroyed stream, opened later still.
  const auto open_later = [](std::promise<void>* p) {
    return std::thread([p] {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      p->set_value();
    });
  };
  std::thread opener = open_later(&gate);
  auto start = std::chrono::steady_clock::now();
  std::vector<unsigned char> host(kBytes), got(kBytes);
  ASSERT_EQ(cudaMemcpy(host.data(), buf, kBytes, cudaMemcpyDeviceToHost), cudaSuccess);
  EXPECT_GE(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(40));
  opener.join();
  EXPECT_EQ(host, std::vector<unsigned char>(kBytes, 7));
  opener = open_later(&second_gate);
  start = std::chrono::steady_clock::now();
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  EXPECT_GE(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(40));
  opener.join();
  for (auto [p, want] : {std::pair{waited, 7}, {unordered, 0}, {blocked, 7}}) {
    ASSERT_EQ(cudaMemcpy(got.data(), p, kBytes, cudaMemcpyDeviceToHost), cudaSuccess);
    EXPECT_EQ(got, std::vector<unsigned char>(kBytes, want));
  }
  for (cudaStream_t t : {independent, blocking}) EXPECT_EQ(cudaStreamDestroy(t), cudaSuccess);
  EXPECT_EQ(cudaEventDestroy(written), cudaSuccess);
  for (unsigned char* p : {buf, waited, unordered, blocked}) EXPECT_EQ(cudaFree(p), cudaSuccess);
}

// A buffer freed in stream order is freed when the stream gets there: work queued before the free
// still reads it, and the copy afterwards is the freed stream's last use (under the address
// sanitizer an access after it would stop the run).
TEST(SimtStreams, FreeAsyncWaitsForTheStream) {
  float* a = nullptr;
  std::vector<float> host(64, 3.0f), back(64, 0.0f);
  ASSERT_EQ(cudaMallocAsync(reinterpret_cast<void**>(&a), 64 * 4, cudaStreamLegacy), cudaSuccess);
  ASSERT_EQ(cudaMemcpyAsync(a, host.data(), 64 * 4, cudaMemcpyHostToDevice, cudaStreamLegacy),
            cudaSuccess);
  ASSERT_EQ(cudaMemcpyAsync(back.data(), a, 64 * 4, cudaMemcpyDeviceToHost, cudaStreamLegacy),
            cudaSuccess);  // pageable host memory: done on return
  EXPECT_EQ(back, host);
  float* b = nullptr;
  ASSERT_EQ(cudaMalloc(reinterpret_cast<void**>(&b), 64 * 4), cudaSuccess);
  ASSERT_EQ(cudaMemcpyAsync(b, a, 64 * 4, cudaMemcpyDeviceToDevice, cudaStreamLegacy), cudaSuccess);
  ASSERT_EQ(cudaFreeAsync(a, cudaStreamLegacy), cudaSuccess);  // returns before the copy ran
  ASSERT_EQ(cudaMemcpy(back.data(), b, 64 * 4, cudaMemcpyDeviceToHost), cudaSuccess);
  EXPECT_EQ(back, host);
  EXPECT_EQ(cudaFree(b), cudaSuccess);
}

// The emulated NCCL refuses what NCCL would not deliver: a message of another size than the
// receive's, and a receive from a rank that is gone (its communicator aborted) fails at once with
// the communicator's error, instead of hanging.
// Two ranks of one process on a fresh group.
void TwoRanks(ncclComm_t comms[2]) {
  ncclUniqueId id;
  ASSERT_EQ(ncclGetUniqueId(&id), ncclSuccess);
  std::thread other([&] { ncclCommInitRank(&comms[1], 2, id, 1); });
  ASSERT_EQ(ncclCommInitRank(&comms[0], 2, id, 0), ncclSuccess);
  other.join();
  ASSERT_NE(comms[1], nullptr);
}

// What makes a missing wait visible: an operation runs when its stream reaches it and reads its
// buffer then. Two ranks sum buffers that the legacy stream (held at a gate) fills: with every rank
// ordered after the writer (an event), the sum has both values; with rank 1 not ordered, it sends
// its buffer before the writer ran, and rank 0's sum lacks its value -- as on a GPU.
float SumAfterTheWriter(bool rank1_waits) {  // rank 0's sum
  ncclComm_t comms[2] = {nullptr, nullptr};
  TwoRanks(comms);
  float* buf[2] = {nullptr, nullptr};
  float* out[2] = {nullptr, nullptr};
  cudaStream_t streams[2] = {nullptr, nullptr};
  for (int r = 0; r < 2; ++r) {
    cudaMalloc(reinterpret_cast<void**>(&buf[r]), 64 * sizeof(float));
    cudaMalloc(reinterpret_cast<void**>(&out[r]), 64 * sizeof(float));
    cudaMemset(buf[r], 0, 64 * sizeof(float));
    cudaStreamCreateWithFlags(&streams[r], cudaStreamNonBlocking);
  }
  cudaDeviceSynchronize();
  cudaEvent_t written = nullptr;
  cudaEventCreateWithFlags(&written, cudaEventDisableTiming);
  std::promise<void> gate;
  std::shared_future<void> opened = gate.get_future().share();
  simt::Enqueue(cudaStreamLegacy, [opened] { opened.wait(); });
  for (float* b : buf) cudaMemsetAsync(b, 0x3f, 64 * sizeof(float), cudaStreamLegacy);
  cudaEventRecord(written, cudaStreamLegacy);
  for (int r = 0; r < 2; ++r) {
    if (r == 0 || rank1_waits) cudaStreamWaitEvent(streams[r], written, 0);
    EXPECT_EQ(ncclAllReduce(buf[r], out[r], 64, ncclFloat, ncclSum, comms[r], streams[r]),
              ncclSuccess);
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(300));  // rank 1 runs ahead if it may
  gate.set_value();
  for (cudaStream_t s : streams) cudaStreamSynchronize(s);
  float sum[2] = {0, 0};
  for (int r = 0; r < 2; ++r) cudaMemcpy(&sum[r], out[r], sizeof(float), cudaMemcpyDeviceToHost);
  if (rank1_waits) EXPECT_EQ(sum[0], sum[1]);  // racing, the ranks need not even agree
  for (int r = 0; r < 2; ++r) {
    ncclCommDestroy(comms[r]);
    cudaStreamDestroy(streams[r]);
    cudaFree(buf[r]);
    cudaFree(out[r]);
  }
  cudaEventDestroy(written);
  return sum[0];
}

TEST(SimtNccl, AnOperationNotOrderedAfterTheWriterReadsStaleData) {
  if (simt::SynchronousStreams()) GTEST_SKIP() << "MOREH_SIMT_STREAMS=sync: nothing runs late";
  float v = 0;
  const uint32_t bytes = 0x3f3f3f3fu;
  std::memcpy(&v, &bytes, sizeof v);
  EXPECT_FLOAT_EQ(SumAfterTheWriter(true), 2 * v);
  EXPECT_FLOAT_EQ(SumAfterTheWriter(false), v);  // rank 1 sent its zeros
}

TEST(SimtNccl, WrongSizesAndLostPeersFail) {
  std::vector<float> a(8, 1.0f), b(16, 0.0f);
  ncclComm_t comms[2] = {nullptr, nullptr};
  ASSERT_NO_FATAL_FAILURE(TwoRanks(comms));
  // Queued on the stream, as NCCL's operations are: the failure is the communicator's, seen once
  // the stream has run it, and every call on it returns it from then on.
  const auto failure = [](ncclComm_t c) {
    EXPECT_EQ(cudaStreamSynchronize(nullptr), cudaSuccess);
    ncclResult_t state = ncclSuccess;
    EXPECT_EQ(ncclCommGetAsyncError(c, &state), ncclSuccess);
    return state;
  };
  ASSERT_EQ(ncclSend(a.data(), 8, ncclFloat, 0, comms[1], nullptr), ncclSuccess);
  ASSERT_EQ(ncclRecv(b.data(), 16, ncclFloat, 1, comms[0], nullptr), ncclSuccess);
  EXPECT_EQ(failure(comms[0]), ncclInvalidUsage);
  EXPECT_EQ(ncclSend(a.data(), 8, ncclFloat, 1, comms[0], nullptr), ncclInvalidUsage);
  for (ncclComm_t c : comms) ASSERT_EQ(ncclCommAbort(c), ncclSuccess);

  ASSERT_NO_FATAL_FAILURE(TwoRanks(comms));
  ASSERT_EQ(ncclCommAbort(comms[1]), ncclSuccess);
  ASSERT_EQ(ncclRecv(b.data(), 8, ncclFloat, 1, comms[0], nullptr), ncclSuccess);
  EXPECT_EQ(failure(comms[0]), ncclRemoteError);
  ASSERT_EQ(ncclCommAbort(comms[0]), ncclSuccess);

  ncclUniqueId foreign{};  // not made by ncclGetUniqueId
  ncclComm_t c = nullptr;
  EXPECT_EQ(ncclCommInitRank(&c, 1, foreign, 0), ncclInvalidArgument);
}

INSTANTIATE_TEST_SUITE_P(Order, Simt, ::testing::Values(false, true),
                         [](const auto& info) { return info.param ? "reverse" : "forward"; });

#if defined(__SANITIZE_ADDRESS__)
// Device buffers are host allocations of the exact size: an index one past the end stops the run
// with the address sanitizer's report.
void ReadPastEnd() {
  float* in = nullptr;
  float* out = nullptr;
  cudaMalloc(reinterpret_cast<void**>(&in), 64 * sizeof(float));
  cudaMalloc(reinterpret_cast<void**>(&out), 64 * sizeof(float));
  MOREH_CUDA_LAUNCH(1, 64, 0, nullptr, ReadPastEndKernel)(out, in, 64);
  cudaDeviceSynchronize();
}

TEST(SimtDeathTest, AReadPastABufferIsReported) {
  EXPECT_DEATH(ReadPastEnd(), "heap-buffer-overflow");
}
#endif

}  // namespace
}  // namespace moreh::kernels::cuda
