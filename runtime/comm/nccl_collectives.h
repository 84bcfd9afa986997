// NcclCollectives: the Collectives interface over NCCL, for groups in which every rank owns a GPU.
// Buffers are device pointers; each call is enqueued on the communicator's stream and waited for
// with a deadline: a peer that dies or stalls makes the call abort the communicator and return
// DeadlineExceeded/Unavailable instead of hanging. The unique id is made by group rank 0
// (NcclUniqueId) and handed to the others through the same out-of-band channel as UCX addresses.
// Built only with MOREH_ENABLE_CUDA (target moreh_comm_nccl). Not thread-safe.
#pragma once

#include <atomic>
#include <chrono>
#include <memory>
#include <string>

#include "runtime/comm/collectives.h"

namespace moreh::comm {

inline constexpr size_t kNcclUniqueIdBytes = 128;  // NCCL_UNIQUE_ID_BYTES
StatusOr<std::string> NcclUniqueId();

// The bus bandwidth (nccl-tests' definition: 2 (n - 1) / n x bytes / time) of a 256 MiB f32
// all-reduce over GPUs 0..devices-1 of this process, the best of 5 after a warm-up: what a worker
// with several GPUs reports as the bandwidth of its links (NVLink, PCIe), since its stages talk
// over NCCL. Needs devices >= 2; takes about a second (communicator set-up included).
StatusOr<double> MeasureNcclBusBandwidth(int devices);

class NcclCollectives : public Collectives {
 public:
  // `device`: the CUDA device of this rank.
  // `timeout`: for joining the group and for each operation; `abort` (may be null): while set,
  // every wait gives up at once and the communicator is aborted (the job was ended).
  static StatusOr<std::unique_ptr<NcclCollectives>> Create(
      const std::string& unique_id, int rank, int size, int device,
      std::chrono::milliseconds timeout, const std::atomic<bool>* abort = nullptr);
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
  bool overlaps_compute() const override { return true; }

 private:
  struct Impl;
  NcclCollectives() = default;
  Status Finish(const char* what);
  Status AfterCompute();
  int rank_ = 0, size_ = 1;
  std::unique_ptr<Impl> impl_;
};

// One direction of a point-to-point link between two GPUs over NCCL (a communicator of two ranks:
// the sender is rank 0): the pipeline's activations go one way on one link, gradients the other way
// on another, so neither direction's queue can hold up the other's. Send queues the transfer on the
// link's stream behind the compute stream's work so far and returns; the buffer must stay
// untouched until SendDone says so. Recv waits for the data (with the deadline). Not thread-safe.
class NcclPeerLink {
 public:
  static StatusOr<std::unique_ptr<NcclPeerLink>> Create(const std::string& unique_id, bool sender,
                                                        int device,
                                                        std::chrono::milliseconds timeout,
                                                        const std::atomic<bool>* abort = nullptr);
  ~NcclPeerLink();
  // A ticket per send: SendDone(ticket) is true once the buffer may be reused.
  StatusOr<int64_t> Send(const void* buf, int64_t bytes);
  bool SendDone(int64_t ticket);
  Status WaitSends();  // every queued send complete (deadline), or the link aborted
  Status Recv(void* buf, int64_t bytes);

 private:
  struct Impl;
  NcclPeerLink() = default;
  bool sender_ = false;
  std::unique_ptr<Impl> impl_;
};

}  // namespace moreh::comm
