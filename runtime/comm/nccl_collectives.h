// NcclCollectives: the Collectives interface over NCCL, for groups in which every rank owns a GPU.
// Buffers are device pointers; each call is enqueued on the communicator's stream and waited for
// with a deadline: a peer that dies or stalls makes the call abort the communicator and return
// DeadlineExceeded/Unavailable instead of hanging. The unique id is made by group rank 0
// (NcclUniqueId) and handed to the others through the same out-of-band channel as UCX addresses.
// Built only with MOREH_ENABLE_CUDA (target moreh_comm_nccl). Not thread-safe.
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "runtime/comm/collectives.h"

namespace moreh::comm {

inline constexpr size_t kNcclUniqueIdBytes = 128;  // NCCL_UNIQUE_ID_BYTES
StatusOr<std::string> NcclUniqueId();

class NcclCollectives : public Collectives {
 public:
  // `device`: the CUDA device of this rank.
  static StatusOr<std::unique_ptr<NcclCollectives>> Create(const std::string& unique_id, int rank,
                                                           int size, int device,
                                                           std::chrono::milliseconds timeout);
  ~NcclCollectives() override;

  int size() const override { return size_; }
  int rank() const override { return rank_; }
  Status AllReduce(const void* in, void* out, int64_t count, DType dtype, ReduceOp op) override;
  Status ReduceScatter(const void* in, void* out, int64_t count, DType dtype, ReduceOp op) override;
  Status AllGather(const void* in, void* out, int64_t count, DType dtype) override;
  Status Broadcast(void* buf, int64_t count, DType dtype, int root) override;
  Status Barrier() override;
  // Queued on the communicator's stream after the compute stream's work so far; the host returns
  // at once, and compute queued later runs alongside. WaitStarted waits (with the deadline).
  Status StartAllReduce(void* buf, int64_t count, DType dtype) override;
  Status WaitStarted() override;

 private:
  struct Impl;
  NcclCollectives() = default;
  Status Finish(const char* what);
  Status AfterCompute();
  int rank_ = 0, size_ = 1;
  std::chrono::milliseconds timeout_{0};
  std::unique_ptr<Impl> impl_;
};

}  // namespace moreh::comm
