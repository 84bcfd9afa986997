// UcxTransport: point-to-point bulk data between processes over UCX's tag API (shared memory, CMA
// or TCP on one host; InfiniBand or CUDA transports where UCX finds them).
//
// One UCP context and worker per transport. Worker addresses are exchanged out of band (the control
// plane, or files in tests): address() gives this side's, Connect(peer, bytes) makes an endpoint.
// Send/Recv are non-blocking and return a Request; Wait/WaitAll progress the worker until the
// requests complete, backing off into sleeps up to 1 ms when nothing moves (no core burnt while
// idle), and fail with Unavailable/DeadlineExceeded naming the peer when it is gone or silent past
// the timeout. Tags carry the sender's rank, a channel (job, stage, micro-batch, tensor) and a
// sequence number, so receives match one sender. Not thread-safe: one thread drives a transport.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "runtime/core/status.h"

namespace moreh::comm {

// 16 bits of sender rank, 16 bits of channel, 32 bits of sequence.
inline uint64_t MakeTag(int src_rank, uint32_t channel, uint32_t seq) {
  return (static_cast<uint64_t>(src_rank & 0xffff) << 48) |
         (static_cast<uint64_t>(channel & 0xffff) << 32) | seq;
}

struct RequestState;  // internal
using Request = std::shared_ptr<RequestState>;

class UcxTransport {
 public:
  // net_device: the only network interface UCX may use ("lo", "eth0"; NetDeviceForAddress), so
  // a job's traffic stays on the network its worker was told to use; shared memory between the
  // processes of one host stays allowed. Empty: UCX's choice. A user's UCX_NET_DEVICES wins.
  static StatusOr<std::unique_ptr<UcxTransport>> Create(int rank,
                                                        const std::string& net_device = "");
  ~UcxTransport();
  UcxTransport(const UcxTransport&) = delete;
  UcxTransport& operator=(const UcxTransport&) = delete;

  int rank() const { return rank_; }
  const std::string& address() const { return address_; }
  // detect_peer_failure: UCX's peer error handling (failures reported within UCX's keepalive). It
  // restricts UCX to transports that support it (TCP on one host: 3.2 GB/s measured, against
  // 10-12 GB/s for shared memory and CMA without it), so it is for peers on other hosts; between
  // processes of one host a dead peer is found by the operation timeout instead.
  Status Connect(int peer, const std::string& address, bool detect_peer_failure = false);
  bool connected(int peer) const;

  // `buf` must stay valid until the request completes.
  StatusOr<Request> Send(int peer, const void* buf, size_t bytes, uint32_t channel, uint32_t seq);
  StatusOr<Request> Recv(int peer, void* buf, size_t bytes, uint32_t channel, uint32_t seq);
  Status Wait(const Request& r, std::chrono::milliseconds timeout);
  // Progresses the worker once and says whether `r` has completed successfully (a failed request
  // reports its error from Wait/WaitAll).
  bool Completed(const Request& r);
  // Waits for all; on failure cancels the rest and returns the first error.
  Status WaitAll(const std::vector<Request>& reqs, std::chrono::milliseconds timeout);
  // While *flag is true (set from any thread), every wait fails at once with Unavailable, so a job
  // blocked on a peer can be abandoned. nullptr: none.
  void set_abort_flag(const std::atomic<bool>* flag) { abort_ = flag; }

 private:
  struct Impl;
  explicit UcxTransport(int rank);
  int rank_;
  std::string address_;
  std::unique_ptr<Impl> impl_;
  const std::atomic<bool>* abort_ = nullptr;
};

// The name of the network interface that has the address `host` ("127.0.0.1" -> "lo"); "" for a
// wildcard address (0.0.0.0, ::), which restricts nothing. NotFound when no interface has it.
StatusOr<std::string> NetDeviceForAddress(const std::string& host);

}  // namespace moreh::comm
