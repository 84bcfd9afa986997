#include "runtime/comm/nccl_collectives.h"

#include <cuda_runtime.h>
#include <fmt/format.h>
#include <nccl.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <thread>
#include <vector>

namespace moreh::comm {

// Queues an NCCL operation on impl_'s communicator; the call still being queued is waited for.
#define MOREH_NCCL_QUEUE(what, stmt)                   \
  do {                                                 \
    const Status s_ = impl_->Enqueued((stmt), (what)); \
    if (!s_.ok()) return s_;                           \
  } while (0)
#define MOREH_CUDA_STATUS(stmt)                                                                   \
  do {                                                                                            \
    const cudaError_t e_ = (stmt);                                                                \
    if (e_ != cudaSuccess) {                                                                      \
      return Status(StatusCode::kInternal, fmt::format("{} failed at {}:{}: {}", #stmt, __FILE__, \
                                                       __LINE__, cudaGetErrorString(e_)));        \
    }                                                                                             \
  } while (0)
#define MOREH_NCCL_STATUS(stmt)                                                      \
  do {                                                                               \
    const ncclResult_t r_ = (stmt);                                                  \
    if (r_ != ncclSuccess) {                                                         \
      return Status(StatusCode::kUnavailable,                                        \
                    fmt::format("{} failed at {}:{}: {}", #stmt, __FILE__, __LINE__, \
                                ncclGetErrorString(r_)));                            \
    }                                                                                \
  } while (0)

// What both kinds of communicator hold: the NCCL communicator, its own stream, and an event for
// ordering it after the compute (legacy default) stream.
//
// The communicator is non-blocking (NCCL's `blocking = 0`): its creation, and any call that is
// still being queued when it returns (ncclInProgress), is waited for here with the deadline and
// the job's abort flag, so a peer that dies before joining cannot hold job_connect forever.
struct Endpoint {
  ncclComm_t comm = nullptr;  // null once aborted
  cudaStream_t stream = nullptr;
  int device = 0;
  cudaEvent_t computed = nullptr;  // the compute stream's work queued before an operation
  std::chrono::milliseconds timeout{0};
  const std::atomic<bool>* abort = nullptr;  // the job's: set, every wait gives up at once

  // Makes the stream and the event on `dev`, then joins the communicator (waits for every rank).
  Status Init(const std::string& unique_id, int rank, int size, int dev) {
    ncclUniqueId id;
    if (unique_id.size() != sizeof(id.internal)) {
      return Status::InvalidArgument(fmt::format("NCCL unique id of {} bytes (expected {})",
                                                 unique_id.size(), sizeof(id.internal)));
    }
    std::memcpy(id.internal, unique_id.data(), sizeof(id.internal));
    device = dev;
    MOREH_CUDA_STATUS(cudaSetDevice(device));
    MOREH_CUDA_STATUS(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
    MOREH_CUDA_STATUS(cudaEventCreateWithFlags(&computed, cudaEventDisableTiming));
    ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
    config.blocking = 0;
    return Enqueued(ncclCommInitRankConfig(&comm, size, id, rank, &config),
                    fmt::format("joining an NCCL group of {} as rank {}", size, rank));
  }
  // The result of an NCCL call: in progress is waited for (deadline, abort flag); an error, or a
  // wait given up, aborts the communicator and is named.
  Status Enqueued(ncclResult_t r, const std::string& what) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (r == ncclInProgress && comm != nullptr) {
      if ((abort != nullptr && abort->load()) || std::chrono::steady_clock::now() > deadline) {
        const bool ended = abort != nullptr && abort->load();
        Abort();
        return ended ? Status(StatusCode::kUnavailable, what + ": the job was ended")
                     : Status(StatusCode::kDeadlineExceeded,
                              fmt::format("{}: no answer within {} ms", what, timeout.count()));
      }
      std::this_thread::sleep_for(std::chrono::microseconds(200));
      if (ncclCommGetAsyncError(comm, &r) != ncclSuccess) r = ncclInternalError;
    }
    if (r == ncclSuccess) return Status::Ok();
    Abort();
    return Status(StatusCode::kUnavailable, fmt::format("{}: {}", what, ncclGetErrorString(r)));
  }
  // Waits until `done` (an event behind an operation) completes, with the deadline; a stall, an
  // asynchronous NCCL error or the abort flag aborts the communicator and names the operation.
  Status Wait(cudaEvent_t done, const std::string& what) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (true) {
      const cudaError_t q = cudaEventQuery(done);
      if (q == cudaSuccess) return Status::Ok();
      if (q != cudaErrorNotReady) {
        return Status(StatusCode::kInternal, fmt::format("{}: {}", what, cudaGetErrorString(q)));
      }
      if (comm == nullptr) {
        return Status(StatusCode::kFailedPrecondition, what + ": the communicator was aborted");
      }
      ncclResult_t async = ncclSuccess;
      ncclCommGetAsyncError(comm, &async);
      const bool failed = async != ncclSuccess && async != ncclInProgress;
      const bool ended = abort != nullptr && abort->load();
      if (failed || ended || std::chrono::steady_clock::now() > deadline) {
        Abort();
        if (ended) return Status(StatusCode::kUnavailable, what + ": the job was ended");
        if (failed) {
          return Status(StatusCode::kUnavailable,
                        fmt::format("{}: {}", what, ncclGetErrorString(async)));
        }
        return Status(
            StatusCode::kDeadlineExceeded,
            fmt::format("{}: the peer did not respond within {} ms", what, timeout.count()));
      }
      std::this_thread::sleep_for(std::chrono::microseconds(20));
    }
  }
  void Abort() {
    if (comm != nullptr) ncclCommAbort(comm);
    comm = nullptr;
  }
  // The runtime's kernels run on the legacy default stream, and this stream does not wait for it
  // by itself (non-blocking): each operation first waits for the work queued there, so it reads
  // the buffers those kernels wrote (and a received buffer is not still being written by them).
  Status AfterCompute() {
    MOREH_CUDA_STATUS(cudaSetDevice(device));
    MOREH_CUDA_STATUS(cudaEventRecord(computed, cudaStreamLegacy));
    MOREH_CUDA_STATUS(cudaStreamWaitEvent(stream, computed, 0));
    return Status::Ok();
  }
  // Ends the communicator: destroyed when its stream is idle, else (work still waiting for a peer,
  // e.g. after a failed step) or when the job was ended, aborted, which does not wait. The owner
  // calls it before freeing anything that work may use.
  void Close() {
    if (comm == nullptr) return;  // never made, or aborted already
    const bool busy = stream != nullptr && cudaStreamQuery(stream) != cudaSuccess;
    if (busy || (abort != nullptr && abort->load())) {
      ncclCommAbort(comm);
    } else {
      ncclCommDestroy(comm);
    }
    comm = nullptr;
    cudaGetLastError();
  }
  ~Endpoint() {
    Close();
    if (computed) cudaEventDestroy(computed);
    if (stream) cudaStreamDestroy(stream);
  }
};

struct NcclCollectives::Impl : Endpoint {
  void* scratch = nullptr;     // one float for Barrier
  cudaEvent_t done = nullptr;  // behind the collectives queued so far
  ~Impl() {
    if (scratch) cudaFree(scratch);
    if (done) cudaEventDestroy(done);
  }
};

namespace {
StatusOr<ncclDataType_t> Type(DType d) {
  if (d == DType::kF32) return ncclFloat;
  if (d == DType::kBF16) return ncclBfloat16;
  if (d == DType::kF16) return ncclHalf;
  return Status::InvalidArgument(
      fmt::format("NCCL collectives: unsupported dtype {}", DTypeName(d)));
}
}  // namespace

StatusOr<std::string> NcclUniqueId() {
  ncclUniqueId id;
  MOREH_NCCL_STATUS(ncclGetUniqueId(&id));
  return std::string(id.internal, sizeof(id.internal));
}

StatusOr<double> MeasureNcclBusBandwidth(int devices) {
  if (devices < 2) return Status::InvalidArgument("a bus bandwidth needs two GPUs or more");
  const size_t count = 64ull << 20;  // f32 elements: 256 MiB
  std::vector<ncclComm_t> comms(devices, nullptr);
  std::vector<float*> bufs(devices, nullptr);
  std::vector<cudaStream_t> streams(devices, nullptr);
  auto release = [&] {
    for (int d = 0; d < devices; ++d) {
      cudaSetDevice(d);
      if (comms[d]) ncclCommDestroy(comms[d]);
      if (bufs[d]) cudaFree(bufs[d]);
      if (streams[d]) cudaStreamDestroy(streams[d]);
    }
    cudaGetLastError();
  };
  auto measure = [&]() -> StatusOr<double> {
    MOREH_NCCL_STATUS(ncclCommInitAll(comms.data(), devices, nullptr));
    for (int d = 0; d < devices; ++d) {
      MOREH_CUDA_STATUS(cudaSetDevice(d));
      MOREH_CUDA_STATUS(cudaMalloc(&bufs[d], count * sizeof(float)));
      MOREH_CUDA_STATUS(cudaMemset(bufs[d], 0, count * sizeof(float)));
      MOREH_CUDA_STATUS(cudaStreamCreateWithFlags(&streams[d], cudaStreamNonBlocking));
    }
    double best = 1e30;
    for (int round = 0; round < 6; ++round) {
      for (int d = 0; d < devices; ++d) {
        MOREH_CUDA_STATUS(cudaSetDevice(d));
        MOREH_CUDA_STATUS(cudaDeviceSynchronize());
      }
      const auto t0 = std::chrono::steady_clock::now();
      MOREH_NCCL_STATUS(ncclGroupStart());
      for (int d = 0; d < devices; ++d) {
        MOREH_NCCL_STATUS(
            ncclAllReduce(bufs[d], bufs[d], count, ncclFloat, ncclSum, comms[d], streams[d]));
      }
      MOREH_NCCL_STATUS(ncclGroupEnd());
      for (int d = 0; d < devices; ++d) {
        MOREH_CUDA_STATUS(cudaSetDevice(d));
        MOREH_CUDA_STATUS(cudaStreamSynchronize(streams[d]));
      }
      const double t = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      if (round > 0) best = std::min(best, t);  // the first warms up
    }
    return 2.0 * (devices - 1) / devices * static_cast<double>(count * sizeof(float)) / best;
  };
  int previous = 0;
  cudaGetDevice(&previous);
  StatusOr<double> r = measure();
  release();
  cudaSetDevice(previous);
  return r;
}

StatusOr<std::unique_ptr<NcclCollectives>> NcclCollectives::Create(
    const std::string& unique_id, int rank, int size, int device, std::chrono::milliseconds timeout,
    const std::atomic<bool>* abort) {
  std::unique_ptr<NcclCollectives> c(new NcclCollectives());
  c->rank_ = rank;
  c->size_ = size;
  c->impl_ = std::make_unique<Impl>();
  c->impl_->timeout = timeout;
  c->impl_->abort = abort;
  if (Status s = c->impl_->Init(unique_id, rank, size, device); !s.ok()) return s;
  MOREH_CUDA_STATUS(cudaMalloc(&c->impl_->scratch, sizeof(float)));
  MOREH_CUDA_STATUS(cudaEventCreateWithFlags(&c->impl_->done, cudaEventDisableTiming));
  return c;
}

NcclCollectives::~NcclCollectives() {
  if (impl_) impl_->Close();  // before the scratch its work may use is freed
}

Status NcclCollectives::AfterCompute() { return impl_->AfterCompute(); }

// Waits for the stream's work with a deadline; a stall or an asynchronous NCCL error aborts the
// communicator (it cannot be used again; build a new group) and names the operation.
Status NcclCollectives::Finish(const char* what) {
  MOREH_CUDA_STATUS(cudaEventRecord(impl_->done, impl_->stream));
  return impl_->Wait(impl_->done, fmt::format("{} on rank {}", what, rank_));
}

Status NcclCollectives::AllReduce(const void* in, void* out, int64_t count, DType dt, ReduceOp op) {
  auto t = Type(dt);
  if (!t.ok()) return t.status();
  if (!impl_->comm) return Status(StatusCode::kFailedPrecondition, "NCCL communicator was aborted");
  if (Status s = AfterCompute(); !s.ok()) return s;
  MOREH_NCCL_QUEUE("all_reduce", ncclAllReduce(in, out, static_cast<size_t>(count), t.value(),
                                               op == ReduceOp::kAvg ? ncclAvg : ncclSum,
                                               impl_->comm, impl_->stream));
  return Finish("all_reduce");
}

Status NcclCollectives::StartAllReduce(void* buf, int64_t count, DType dt) {
  auto t = Type(dt);
  if (!t.ok()) return t.status();
  if (!impl_->comm) return Status(StatusCode::kFailedPrecondition, "NCCL communicator was aborted");
  if (Status s = AfterCompute(); !s.ok()) return s;
  MOREH_NCCL_QUEUE("all_reduce", ncclAllReduce(buf, buf, static_cast<size_t>(count), t.value(),
                                               ncclSum, impl_->comm, impl_->stream));
  return Status::Ok();
}

Status NcclCollectives::WaitStarted() {
  if (!impl_->comm) return Status(StatusCode::kFailedPrecondition, "NCCL communicator was aborted");
  return Finish("all_reduce (overlapped with compute)");
}

Status NcclCollectives::ReduceScatter(const void* in, void* out, int64_t count, DType dt,
                                      ReduceOp op) {
  auto t = Type(dt);
  if (!t.ok()) return t.status();
  if (!impl_->comm) return Status(StatusCode::kFailedPrecondition, "NCCL communicator was aborted");
  if (Status s = AfterCompute(); !s.ok()) return s;
  MOREH_NCCL_QUEUE(
      "reduce_scatter",
      ncclReduceScatter(in, out, static_cast<size_t>(count), t.value(),
                        op == ReduceOp::kAvg ? ncclAvg : ncclSum, impl_->comm, impl_->stream));
  return Finish("reduce_scatter");
}

Status NcclCollectives::AllGather(const void* in, void* out, int64_t count, DType dt) {
  auto t = Type(dt);
  if (!t.ok()) return t.status();
  if (!impl_->comm) return Status(StatusCode::kFailedPrecondition, "NCCL communicator was aborted");
  if (Status s = AfterCompute(); !s.ok()) return s;
  MOREH_NCCL_QUEUE("all_gather", ncclAllGather(in, out, static_cast<size_t>(count), t.value(),
                                               impl_->comm, impl_->stream));
  return Finish("all_gather");
}

Status NcclCollectives::Broadcast(void* buf, int64_t count, DType dt, int root) {
  auto t = Type(dt);
  if (!t.ok()) return t.status();
  if (root < 0 || root >= size_) {
    return Status::InvalidArgument(
        fmt::format("broadcast root {} outside the group of {}", root, size_));
  }
  if (!impl_->comm) return Status(StatusCode::kFailedPrecondition, "NCCL communicator was aborted");
  if (Status s = AfterCompute(); !s.ok()) return s;
  MOREH_NCCL_QUEUE("broadcast", ncclBroadcast(buf, buf, static_cast<size_t>(count), t.value(), root,
                                              impl_->comm, impl_->stream));
  return Finish("broadcast");
}

Status NcclCollectives::Barrier() {
  return AllReduce(impl_->scratch, impl_->scratch, 1, DType::kF32, ReduceOp::kSum);
}

struct NcclPeerLink::Impl : Endpoint {
  std::vector<cudaEvent_t> sent;     // per ticket (recycled once done)
  std::vector<int64_t> sent_ticket;  // the ticket each event of `sent` belongs to
  int64_t next_ticket = 0;
  cudaEvent_t received = nullptr;
  ~Impl() {
    for (cudaEvent_t e : sent) cudaEventDestroy(e);
    if (received) cudaEventDestroy(received);
  }
};

StatusOr<std::unique_ptr<NcclPeerLink>> NcclPeerLink::Create(const std::string& unique_id,
                                                             bool sender, int device,
                                                             std::chrono::milliseconds timeout,
                                                             const std::atomic<bool>* abort) {
  std::unique_ptr<NcclPeerLink> l(new NcclPeerLink());
  l->sender_ = sender;
  l->impl_ = std::make_unique<Impl>();
  l->impl_->timeout = timeout;
  l->impl_->abort = abort;
  if (Status s = l->impl_->Init(unique_id, sender ? 0 : 1, 2, device); !s.ok()) return s;
  MOREH_CUDA_STATUS(cudaEventCreateWithFlags(&l->impl_->received, cudaEventDisableTiming));
  return l;
}

NcclPeerLink::~NcclPeerLink() {
  if (impl_) impl_->Close();
}

StatusOr<int64_t> NcclPeerLink::Send(const void* buf, int64_t bytes) {
  if (!sender_) return Status(StatusCode::kFailedPrecondition, "send on a receiving NCCL link");
  if (!impl_->comm) return Status(StatusCode::kFailedPrecondition, "NCCL link was aborted");
  if (Status s = impl_->AfterCompute(); !s.ok()) return s;
  MOREH_NCCL_QUEUE("pipeline send", ncclSend(buf, static_cast<size_t>(bytes), ncclUint8, 1,
                                             impl_->comm, impl_->stream));
  // An event behind it: a finished ticket's event is recycled.
  size_t slot = impl_->sent.size();
  for (size_t i = 0; i < impl_->sent.size(); ++i) {
    if (impl_->sent_ticket[i] < 0) {
      slot = i;
      break;
    }
  }
  if (slot == impl_->sent.size()) {
    cudaEvent_t e;
    MOREH_CUDA_STATUS(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
    impl_->sent.push_back(e);
    impl_->sent_ticket.push_back(-1);
  }
  MOREH_CUDA_STATUS(cudaEventRecord(impl_->sent[slot], impl_->stream));
  impl_->sent_ticket[slot] = impl_->next_ticket;
  return impl_->next_ticket++;
}

bool NcclPeerLink::SendDone(int64_t ticket) {
  for (size_t i = 0; i < impl_->sent.size(); ++i) {
    if (impl_->sent_ticket[i] != ticket) continue;
    if (cudaEventQuery(impl_->sent[i]) != cudaSuccess) return false;
    impl_->sent_ticket[i] = -1;
    return true;
  }
  return true;  // an unknown ticket was already reported done
}

Status NcclPeerLink::WaitSends() {
  for (size_t i = 0; i < impl_->sent.size(); ++i) {
    if (impl_->sent_ticket[i] < 0) continue;
    if (!impl_->comm) return Status(StatusCode::kFailedPrecondition, "NCCL link was aborted");
    Status s = impl_->Wait(impl_->sent[i], "pipeline send over NCCL");
    if (!s.ok()) return s;
    impl_->sent_ticket[i] = -1;
  }
  return Status::Ok();
}

Status NcclPeerLink::Recv(void* buf, int64_t bytes) {
  if (sender_) return Status(StatusCode::kFailedPrecondition, "receive on a sending NCCL link");
  if (!impl_->comm) return Status(StatusCode::kFailedPrecondition, "NCCL link was aborted");
  if (Status s = impl_->AfterCompute(); !s.ok()) return s;
  MOREH_NCCL_QUEUE("pipeline receive", ncclRecv(buf, static_cast<size_t>(bytes), ncclUint8, 0,
                                                impl_->comm, impl_->stream));
  MOREH_CUDA_STATUS(cudaEventRecord(impl_->received, impl_->stream));
  return impl_->Wait(impl_->received, "pipeline receive over NCCL");
}

}  // namespace moreh::comm
