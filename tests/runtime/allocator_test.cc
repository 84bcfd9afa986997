#include "runtime/core/allocator.h"

#include <gtest/gtest.h>

#include "runtime/core/error.h"
#include "runtime/core/tensor.h"
#include "runtime/device.h"

namespace moreh::runtime {
namespace {

TEST(Allocator, TracksLiveAndPeak) {
  Allocator a("cpu:7", 1 << 20);
  {
    auto b1 = a.Allocate(1000);  // rounded to 64 bytes
    EXPECT_EQ(a.live_bytes(), 1024);
    auto b2 = a.Allocate(4096);
    EXPECT_EQ(a.live_bytes(), 1024 + 4096);
    b1.reset();
    EXPECT_EQ(a.live_bytes(), 4096);
    EXPECT_EQ(a.peak_bytes(), 1024 + 4096);
  }
  EXPECT_EQ(a.live_bytes(), 0);
  a.ResetPeak();
  EXPECT_EQ(a.peak_bytes(), 0);
}

TEST(Allocator, OutOfMemoryNamesDeviceBytesAndRemedies) {
  Allocator a("cpu:3", 10000);
  auto keep = a.Allocate(6400);
  try {
    a.Allocate(5000);
    FAIL() << "expected OutOfMemoryError";
  } catch (const OutOfMemoryError& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("OUT_OF_MEMORY"), std::string::npos) << m;
    EXPECT_NE(m.find("cpu:3"), std::string::npos) << m;
    EXPECT_NE(m.find("Memory requested : 5056 bytes"), std::string::npos) << m;
    EXPECT_NE(m.find("Memory available : 3600 bytes"), std::string::npos) << m;
    EXPECT_NE(m.find("moreh-switch-model"), std::string::npos) << m;
    EXPECT_NE(m.find("batch size"), std::string::npos) << m;
    EXPECT_EQ(e.requested(), 5056);
    EXPECT_EQ(e.available(), 3600);
    EXPECT_EQ(e.device(), "cpu:3");
  }
  // The failed allocation took nothing.
  EXPECT_EQ(a.live_bytes(), 6400);
  EXPECT_EQ(a.peak_bytes(), 6400);
  auto fits = a.Allocate(3584);
  EXPECT_EQ(a.live_bytes(), 9984);
}

TEST(Allocator, TensorsReturnMemoryAndOomIsCatchable) {
  Allocator a("cpu:1", 4096);
  {
    Tensor t = Tensor::Zeros({16, 16}, DType::kF32, &a);
    Tensor v = t.View({256});  // views share the buffer
    EXPECT_EQ(a.live_bytes(), 1024);
    EXPECT_THROW(Tensor::Empty({64, 64}, DType::kF32, &a), OutOfMemoryError);
    EXPECT_EQ(a.live_bytes(), 1024);
  }
  EXPECT_EQ(a.live_bytes(), 0);
}

TEST(Allocator, CachesFreedBlocksWithinCapacity) {
  constexpr int64_t kMiB = 1 << 20;
  Allocator a("cpu:2", 3 * kMiB);
  void* first;
  {
    auto b = a.Allocate(2 * kMiB);
    first = b->data();
  }
  EXPECT_EQ(a.live_bytes(), 0);
  EXPECT_EQ(a.cached_bytes(), 2 * kMiB);
  {
    auto b = a.Allocate(2 * kMiB);  // the same size comes back from the cache
    EXPECT_EQ(b->data(), first);
    EXPECT_EQ(a.cached_bytes(), 0);
    EXPECT_EQ(a.live_bytes(), 2 * kMiB);
  }
  // A different size that would push live + cached past the capacity releases the cache first.
  auto c = a.Allocate(2 * kMiB + 64);
  EXPECT_EQ(a.cached_bytes(), 0);
  EXPECT_EQ(a.live_bytes(), 2 * kMiB + 64);
  // Cached memory never makes an allocation fail that fits the capacity.
  c.reset();
  EXPECT_EQ(a.cached_bytes(), 2 * kMiB + 64);
  auto d = a.Allocate(3 * kMiB);
  EXPECT_EQ(a.live_bytes(), 3 * kMiB);
  d.reset();
  a.ReleaseCache();
  EXPECT_EQ(a.cached_bytes(), 0);
}

TEST(Allocator, CapacityDefaultsToMachineMemory) {
  Allocator a("cpu:0", 0);
  EXPECT_EQ(a.capacity(), PhysicalMemoryBytes());
  EXPECT_GT(a.capacity(), 0);
  a.set_capacity(123456);
  EXPECT_EQ(a.capacity(), 123456);
}

}  // namespace
}  // namespace moreh::runtime

namespace moreh::runtime {
namespace {

// MOREH_DEVICE's values: the CPU by name or by default; anything else is named in the error.
TEST(Device, SpecsResolveAndBadOnesAreNamed) {
  EXPECT_EQ(DeviceAllocator(""), CpuAllocator());
  EXPECT_EQ(DeviceAllocator("cpu"), CpuAllocator());
  EXPECT_EQ(DeviceAllocator("cpu:0"), CpuAllocator());
  for (const char* bad : {"gpu:0", "cuda:", "cuda:x", "cuda:-1", "cpu:1", "cuda:99"}) {
    try {
      DeviceAllocator(bad);
      ADD_FAILURE() << bad << " was accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(std::string(bad).substr(0, 4)), std::string::npos)
          << e.what();
    }
  }
}

}  // namespace
}  // namespace moreh::runtime
