// PipeLinks between GPU stages over NCCL: activations and gradients move GPU to GPU (NVLink or
// PCIe peer copies; across nodes NCCL's network transports) instead of through host copies and
// UCX. Each neighbour has two one-way links (comm::NcclPeerLink): activations one way, gradients
// the other, so a send queued in one direction never waits behind the other direction's traffic.
// Sends are queued on the link's stream behind the compute stream's work and return at once (the
// tensor is kept until the transfer has read it); receives wait, with the job's deadline. Built
// with CUDA only.
#pragma once

#include <memory>
#include <vector>

#include "runtime/comm/nccl_collectives.h"
#include "runtime/parallel/stage_runner.h"

namespace moreh::parallel {

class NcclPipeLinks : public PipeLinks {
 public:
  struct Links {
    std::unique_ptr<comm::NcclPeerLink> activations_in, gradients_out;  // previous stage
    std::unique_ptr<comm::NcclPeerLink> activations_out, gradients_in;  // next stage
  };
  NcclPipeLinks(Links links, int prev_rank, int next_rank)
      : l_(std::move(links)), prev_(prev_rank), next_(next_rank) {}
  ~NcclPipeLinks() override;
  void SendForward(int mb, const runtime::Tensor& a) override {
    Send(l_.activations_out.get(), next_, "activation", mb, a);
  }
  void RecvForward(int mb, runtime::Tensor* a) override {
    Recv(l_.activations_in.get(), prev_, "activation", mb, a);
  }
  void SendBackward(int mb, const runtime::Tensor& g) override {
    Send(l_.gradients_out.get(), prev_, "gradient", mb, g);
  }
  void RecvBackward(int mb, runtime::Tensor* g) override {
    Recv(l_.gradients_in.get(), next_, "gradient", mb, g);
  }
  void Flush() override;

 private:
  void Send(comm::NcclPeerLink* link, int peer, const char* what, int mb, const runtime::Tensor& t);
  void Recv(comm::NcclPeerLink* link, int peer, const char* what, int mb, runtime::Tensor* t);
  struct InFlight {
    comm::NcclPeerLink* link;
    int64_t ticket;
    runtime::Tensor tensor;
  };
  // Destroyed after the links (members go in reverse order): a send still queued is aborted
  // before the tensor it reads goes back to the allocator.
  std::vector<InFlight> in_flight_;
  Links l_;
  int prev_, next_;
};

}  // namespace moreh::parallel
