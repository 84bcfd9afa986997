// HostStagedCollectives (how GPU workers run the ring over UCX): every call moves its input to
// host buffers through the device's MemorySource, runs the inner collective there, and moves the
// result back. A one-rank inner group and a counting "device" show the data path.
#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "runtime/comm/collectives.h"

namespace moreh::comm {
namespace {

// One rank: every collective is a copy. Records the buffers it was given.
class Solo : public Collectives {
 public:
  int size() const override { return 1; }
  int rank() const override { return 0; }
  Status AllReduce(const void* in, void* out, int64_t count, DType dtype, ReduceOp) override {
    return Copy(in, out, count * DTypeSize(dtype));
  }
  Status ReduceScatter(const void* in, void* out, int64_t count, DType dtype, ReduceOp) override {
    return Copy(in, out, count * DTypeSize(dtype));
  }
  Status AllGather(const void* in, void* out, int64_t count, DType dtype) override {
    return Copy(in, out, count * DTypeSize(dtype));
  }
  Status Broadcast(void* buf, int64_t, DType, int) override {
    seen.push_back(buf);
    return Status::Ok();
  }
  Status Barrier() override { return Status::Ok(); }
  std::vector<const void*> seen;

 private:
  Status Copy(const void* in, void* out, int64_t bytes) {
    seen.push_back(in);
    seen.push_back(out);
    if (in != out) std::memcpy(out, in, static_cast<size_t>(bytes));
    return Status::Ok();
  }
};

// "Device" memory that is host memory underneath, counting the copies through it.
class CountingDevice : public runtime::MemorySource {
 public:
  void* Allocate(int64_t bytes) override { return std::malloc(static_cast<size_t>(bytes)); }
  void Free(void* p) override { std::free(p); }
  bool host_accessible() const override { return false; }
  void CopyBytes(void* dst, const void* src, int64_t bytes) override {
    ++copies;
    std::memcpy(dst, src, static_cast<size_t>(bytes));
  }
  int copies = 0;
};

TEST(HostStagedCollectives, RunsTheInnerGroupOnHostCopies) {
  auto solo = std::make_unique<Solo>();
  Solo* inner = solo.get();
  CountingDevice dev;
  HostStagedCollectives c(std::move(solo), &dev);
  EXPECT_EQ(c.size(), 1);
  std::vector<float> in{1, 2, 3, 4, 5}, out(5, 0.0f);
  ASSERT_TRUE(c.AllReduce(in.data(), out.data(), 5, DType::kF32, ReduceOp::kSum).ok());
  EXPECT_EQ(out, in);
  EXPECT_EQ(dev.copies, 2);  // to the host and back
  // The one inner call's in and out (the same staging buffer): else the loop checks nothing.
  ASSERT_EQ(inner->seen.size(), 2u);
  for (const void* p : inner->seen) {
    EXPECT_NE(p, in.data());
    EXPECT_NE(p, out.data());  // the inner group saw only host staging buffers
  }
  std::fill(out.begin(), out.end(), 0.0f);
  ASSERT_TRUE(c.ReduceScatter(in.data(), out.data(), 5, DType::kF32, ReduceOp::kSum).ok());
  EXPECT_EQ(out, in);
  std::fill(out.begin(), out.end(), 0.0f);
  ASSERT_TRUE(c.AllGather(in.data(), out.data(), 5, DType::kF32).ok());
  EXPECT_EQ(out, in);
  ASSERT_TRUE(c.Broadcast(in.data(), 5, DType::kF32, 0).ok());
  EXPECT_EQ(in, (std::vector<float>{1, 2, 3, 4, 5}));
  EXPECT_EQ(dev.copies, 8);
  EXPECT_TRUE(c.Barrier().ok());
}

}  // namespace
}  // namespace moreh::comm
