#include "runtime/comm/nccl_collectives.h"

#include <cuda_runtime.h>
#include <fmt/format.h>
#include <nccl.h>

#include <cstring>
#include <thread>

namespace moreh::comm {

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

struct NcclCollectives::Impl {
  ncclComm_t comm = nullptr;
  cudaStream_t stream = nullptr;
  int device = 0;
  bool aborted = false;
  void* scratch = nullptr;         // one float for Barrier
  cudaEvent_t computed = nullptr;  // the compute stream's work queued before a collective
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

StatusOr<std::unique_ptr<NcclCollectives>> NcclCollectives::Create(
    const std::string& unique_id, int rank, int size, int device,
    std::chrono::milliseconds timeout) {
  ncclUniqueId id;
  if (unique_id.size() != sizeof(id.internal)) {
    return Status::InvalidArgument(fmt::format("NCCL unique id of {} bytes (expected {})",
                                               unique_id.size(), sizeof(id.internal)));
  }
  std::memcpy(id.internal, unique_id.data(), sizeof(id.internal));
  std::unique_ptr<NcclCollectives> c(new NcclCollectives());
  c->rank_ = rank;
  c->size_ = size;
  c->timeout_ = timeout;
  c->impl_ = std::make_unique<Impl>();
  c->impl_->device = device;
  MOREH_CUDA_STATUS(cudaSetDevice(device));
  MOREH_CUDA_STATUS(cudaStreamCreateWithFlags(&c->impl_->stream, cudaStreamNonBlocking));
  MOREH_CUDA_STATUS(cudaMalloc(&c->impl_->scratch, sizeof(float)));
  MOREH_CUDA_STATUS(cudaEventCreateWithFlags(&c->impl_->computed, cudaEventDisableTiming));
  MOREH_NCCL_STATUS(ncclCommInitRank(&c->impl_->comm, size, id, rank));
  return c;
}

NcclCollectives::~NcclCollectives() {
  if (!impl_) return;
  if (impl_->comm) {
    if (impl_->aborted) {
      ncclCommAbort(impl_->comm);
    } else {
      ncclCommDestroy(impl_->comm);
    }
  }
  if (impl_->scratch) cudaFree(impl_->scratch);
  if (impl_->computed) cudaEventDestroy(impl_->computed);
  if (impl_->stream) cudaStreamDestroy(impl_->stream);
}

// The runtime's kernels run on the legacy default stream, and the communicator's stream does not
// wait for it by itself (non-blocking): each collective first waits for the work queued there, so
// it reads the buffers those kernels wrote.
Status NcclCollectives::AfterCompute() {
  MOREH_CUDA_STATUS(cudaSetDevice(impl_->device));
  MOREH_CUDA_STATUS(cudaEventRecord(impl_->computed, cudaStreamLegacy));
  MOREH_CUDA_STATUS(cudaStreamWaitEvent(impl_->stream, impl_->computed, 0));
  return Status::Ok();
}

// Waits for the stream with a deadline; a stall or an asynchronous NCCL error aborts the
// communicator (it cannot be used again; build a new group) and names the operation.
Status NcclCollectives::Finish(const char* what) {
  const auto deadline = std::chrono::steady_clock::now() + timeout_;
  while (true) {
    const cudaError_t q = cudaStreamQuery(impl_->stream);
    if (q == cudaSuccess) return Status::Ok();
    if (q != cudaErrorNotReady) {
      return Status(StatusCode::kInternal, fmt::format("{}: {}", what, cudaGetErrorString(q)));
    }
    ncclResult_t async = ncclSuccess;
    ncclCommGetAsyncError(impl_->comm, &async);
    if (async != ncclSuccess || std::chrono::steady_clock::now() > deadline) {
      ncclCommAbort(impl_->comm);
      impl_->comm = nullptr;
      impl_->aborted = true;
      if (async != ncclSuccess) {
        return Status(StatusCode::kUnavailable,
                      fmt::format("{} on rank {}: {}", what, rank_, ncclGetErrorString(async)));
      }
      return Status(StatusCode::kDeadlineExceeded,
                    fmt::format("{} on rank {}: a peer did not respond within {} ms", what, rank_,
                                timeout_.count()));
    }
    std::this_thread::sleep_for(std::chrono::microseconds(50));
  }
}

Status NcclCollectives::AllReduce(const void* in, void* out, int64_t count, DType dt, ReduceOp op) {
  auto t = Type(dt);
  if (!t.ok()) return t.status();
  if (!impl_->comm) return Status(StatusCode::kFailedPrecondition, "NCCL communicator was aborted");
  if (Status s = AfterCompute(); !s.ok()) return s;
  MOREH_NCCL_STATUS(ncclAllReduce(in, out, static_cast<size_t>(count), t.value(),
                                  op == ReduceOp::kAvg ? ncclAvg : ncclSum, impl_->comm,
                                  impl_->stream));
  return Finish("all_reduce");
}

Status NcclCollectives::StartAllReduce(void* buf, int64_t count, DType dt) {
  auto t = Type(dt);
  if (!t.ok()) return t.status();
  if (!impl_->comm) return Status(StatusCode::kFailedPrecondition, "NCCL communicator was aborted");
  if (Status s = AfterCompute(); !s.ok()) return s;
  MOREH_NCCL_STATUS(ncclAllReduce(buf, buf, static_cast<size_t>(count), t.value(), ncclSum,
                                  impl_->comm, impl_->stream));
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
  MOREH_NCCL_STATUS(ncclReduceScatter(in, out, static_cast<size_t>(count), t.value(),
                                      op == ReduceOp::kAvg ? ncclAvg : ncclSum, impl_->comm,
                                      impl_->stream));
  return Finish("reduce_scatter");
}

Status NcclCollectives::AllGather(const void* in, void* out, int64_t count, DType dt) {
  auto t = Type(dt);
  if (!t.ok()) return t.status();
  if (!impl_->comm) return Status(StatusCode::kFailedPrecondition, "NCCL communicator was aborted");
  if (Status s = AfterCompute(); !s.ok()) return s;
  MOREH_NCCL_STATUS(
      ncclAllGather(in, out, static_cast<size_t>(count), t.value(), impl_->comm, impl_->stream));
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
  MOREH_NCCL_STATUS(ncclBroadcast(buf, buf, static_cast<size_t>(count), t.value(), root,
                                  impl_->comm, impl_->stream));
  return Finish("broadcast");
}

Status NcclCollectives::Barrier() {
  return AllReduce(impl_->scratch, impl_->scratch, 1, DType::kF32, ReduceOp::kSum);
}

}  // namespace moreh::comm
