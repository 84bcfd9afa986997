// NCCL behind the Collectives interface, one rank on one GPU. Skips (with the reason) where no GPU
// is present; the build machines compile and link it, the GPU check runs it.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include "runtime/comm/nccl_collectives.h"

namespace moreh::comm {
namespace {

bool HaveGpu() {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
}

TEST(NcclCollectives, OneRankAllReduceGatherBroadcast) {
  if (!HaveGpu()) GTEST_SKIP() << "no CUDA device on this machine: the NCCL path is built, not run";
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
  ASSERT_TRUE(c.value()->AllReduce(dev, dev, n, DType::kF32, ReduceOp::kSum).ok());
  ASSERT_TRUE(c.value()->AllReduce(dev, dev, n, DType::kF32, ReduceOp::kAvg).ok());
  ASSERT_TRUE(c.value()->Broadcast(dev, n, DType::kF32, 0).ok());
  ASSERT_TRUE(c.value()->Barrier().ok());
  std::vector<float> back(n);
  ASSERT_EQ(cudaMemcpy(back.data(), dev, n * sizeof(float), cudaMemcpyDeviceToHost), cudaSuccess);
  EXPECT_EQ(back, host);  // one rank: sum and average are the identity
  EXPECT_FALSE(c.value()->AllReduce(dev, dev, n, DType::kI64, ReduceOp::kSum).ok());
  EXPECT_FALSE(NcclCollectives::Create("short", 0, 1, 0, std::chrono::seconds(1)).ok());
  cudaFree(dev);
}

}  // namespace
}  // namespace moreh::comm
