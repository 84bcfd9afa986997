// Collectives behind one interface: all_reduce (sum, avg), reduce_scatter, all_gather, broadcast,
// barrier on f32, bf16 and f16 buffers (16-bit values are accumulated in f32), in place or out of
// place.
// Implementations: RingCollectives (a bandwidth-optimal ring over UcxTransport, chunked and
// pipelined) here; NCCL with the [cuda] issue. A failing or silent peer makes the call return
// Unavailable / DeadlineExceeded naming it, within the group's timeout. Not thread-safe.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <vector>

#include "runtime/comm/ucx_transport.h"
#include "runtime/core/allocator.h"
#include "runtime/core/dtype.h"
#include "runtime/core/status.h"

namespace moreh::comm {

enum class ReduceOp { kSum, kAvg };

class Collectives {
 public:
  virtual ~Collectives() = default;
  virtual int size() const = 0;
  virtual int rank() const = 0;  // index in the group
  // out may equal in. count elements of dtype (f32 or bf16).
  virtual Status AllReduce(const void* in, void* out, int64_t count, DType dtype, ReduceOp op) = 0;
  // in: size() * count elements; out: count elements (the reduced block of this rank).
  virtual Status ReduceScatter(const void* in, void* out, int64_t count, DType dtype,
                               ReduceOp op) = 0;
  // in: count elements; out: size() * count elements, block i from group rank i.
  virtual Status AllGather(const void* in, void* out, int64_t count, DType dtype) = 0;
  virtual Status Broadcast(void* buf, int64_t count, DType dtype, int root) = 0;
  virtual Status Barrier() = 0;

  // An in-place sum all-reduce that may still be running on return; WaitStarted() completes every
  // one started since the last wait. The group's ranks start the same sequence. Implementations
  // that can overlap communication with compute (NCCL: queued on the communicator's stream behind
  // the compute stream's work so far, the host returns at once) override both; the default runs
  // the all-reduce now.
  virtual Status StartAllReduce(void* buf, int64_t count, DType dtype) {
    return AllReduce(buf, buf, count, dtype, ReduceOp::kSum);
  }
  virtual Status WaitStarted() { return Status::Ok(); }
  // Whether a started all-reduce runs alongside the caller's compute (it does not where the
  // calling thread itself moves the data, as the ring over UCX does).
  virtual bool overlaps_compute() const { return false; }
};

class RingCollectives : public Collectives {
 public:
  // `ranks`: the group's global ranks in ring order (each connected through `transport`);
  // `channel` separates this group's traffic from other groups'.
  RingCollectives(UcxTransport* transport, std::vector<int> ranks, uint32_t channel,
                  std::chrono::milliseconds timeout);

  int size() const override { return static_cast<int>(ranks_.size()); }
  int rank() const override { return me_; }
  Status AllReduce(const void* in, void* out, int64_t count, DType dtype, ReduceOp op) override;
  Status ReduceScatter(const void* in, void* out, int64_t count, DType dtype, ReduceOp op) override;
  Status AllGather(const void* in, void* out, int64_t count, DType dtype) override;
  Status Broadcast(void* buf, int64_t count, DType dtype, int root) override;
  Status Barrier() override;

 private:
  // Reduce-scatter over n blocks of `work` (f32; block i = [off[i], off[i+1])): afterwards block
  // me_ holds the sum over the group. Then (all-gather) every block everywhere.
  Status RingReduceScatter(float* work, const std::vector<int64_t>& off, uint32_t op);
  Status RingAllGather(char* buf, const std::vector<int64_t>& off, int64_t elem, uint32_t op);
  Status Exchange(const char* send, int64_t send_bytes, char* recv, int64_t recv_bytes,
                  uint32_t seq_base, float* reduce_into);
  int Left() const { return ranks_[(me_ + size() - 1) % size()]; }
  int Right() const { return ranks_[(me_ + 1) % size()]; }

  UcxTransport* t_;
  std::vector<int> ranks_;
  int me_ = -1;
  uint32_t channel_;
  std::chrono::milliseconds timeout_;
  uint32_t op_seq_ = 0;
  std::vector<float> scratch_;
};

// Collectives on buffers in device memory (a GPU's) run by `inner` on host copies: each call moves
// its input to the host through `device` (runtime::MemorySource), runs, and moves the result back.
// Correct wherever `inner` is (a ring over UCX between GPU workers without NCCL); NCCL is the fast
// path between GPUs (nccl_collectives.h).
class HostStagedCollectives : public Collectives {
 public:
  HostStagedCollectives(std::unique_ptr<Collectives> inner, runtime::MemorySource* device)
      : inner_(std::move(inner)), device_(device) {}
  int size() const override { return inner_->size(); }
  int rank() const override { return inner_->rank(); }
  Status AllReduce(const void* in, void* out, int64_t count, DType dtype, ReduceOp op) override;
  Status ReduceScatter(const void* in, void* out, int64_t count, DType dtype, ReduceOp op) override;
  Status AllGather(const void* in, void* out, int64_t count, DType dtype) override;
  Status Broadcast(void* buf, int64_t count, DType dtype, int root) override;
  Status Barrier() override { return inner_->Barrier(); }

 private:
  // Host staging buffers, kept between calls (a step repeats the same sizes).
  char* In(int64_t bytes);
  char* Out(int64_t bytes);
  std::unique_ptr<Collectives> inner_;
  runtime::MemorySource* device_;
  std::vector<char> in_, out_;
};

}  // namespace moreh::comm
