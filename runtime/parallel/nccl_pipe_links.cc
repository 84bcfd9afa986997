#include "runtime/parallel/nccl_pipe_links.h"

#include <fmt/format.h>

#include "runtime/core/error.h"

namespace moreh::parallel {

void NcclPipeLinks::Send(comm::NcclPeerLink* link, int peer, const char* what, int mb,
                         const runtime::Tensor& t) {
  MOREH_CHECK(link != nullptr, "pipeline: no stage to send the {} of micro-batch {} to", what, mb);
  MOREH_CHECK(!t.on_host(), "pipeline over NCCL: the {} of micro-batch {} is in host memory", what,
              mb);
  // Sends whose transfer has read its tensor give it back to the allocator now.
  for (size_t i = 0; i < in_flight_.size();) {
    if (in_flight_[i].link->SendDone(in_flight_[i].ticket)) {
      in_flight_.erase(in_flight_.begin() + static_cast<std::ptrdiff_t>(i));
    } else {
      ++i;
    }
  }
  const runtime::Tensor c = t.Contiguous();
  auto ticket = link->Send(c.raw_data(), c.nbytes());
  if (!ticket.ok()) {
    throw Error(fmt::format("pipeline: sending the {} of micro-batch {} to rank {}: {}", what, mb,
                            peer, ticket.status().message()));
  }
  in_flight_.push_back({link, ticket.value(), c});
}

void NcclPipeLinks::Recv(comm::NcclPeerLink* link, int peer, const char* what, int mb,
                         runtime::Tensor* t) {
  MOREH_CHECK(link != nullptr, "pipeline: no stage to receive the {} of micro-batch {} from", what,
              mb);
  MOREH_CHECK(!t->on_host() && t->is_contiguous(),
              "pipeline over NCCL: receiving into {} (a compact GPU tensor is needed)",
              t->ToString());
  Status s = link->Recv(t->raw_data(), t->nbytes());
  if (!s.ok()) {
    throw Error(fmt::format("pipeline: waiting for the {} of micro-batch {} from rank {}: {}", what,
                            mb, peer, s.message()));
  }
}

NcclPipeLinks::~NcclPipeLinks() {
  l_ = Links();  // ends the links (aborting queued sends) while the tensors they read still live
}

void NcclPipeLinks::Flush() {
  for (comm::NcclPeerLink* link : {l_.activations_out.get(), l_.gradients_out.get()}) {
    if (link == nullptr) continue;
    Status s = link->WaitSends();
    if (!s.ok()) throw Error("pipeline: completing sends: " + s.message());
  }
  in_flight_.clear();
}

}  // namespace moreh::parallel
