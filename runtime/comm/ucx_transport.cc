#include "runtime/comm/ucx_transport.h"

#include <arpa/inet.h>
#include <fmt/format.h>
#include <ifaddrs.h>
#include <netinet/in.h>
#include <ucp/api/ucp.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <map>
#include <thread>
#include <vector>

namespace moreh::comm {

struct RequestState {
  void* ucx = nullptr;  // UCX request handle while in flight
  bool done = false;
  ucs_status_t status = UCS_OK;
  int peer = -1;
  bool send = false;
  size_t expected = 0, received = 0;
};

namespace {
void SendDone(void* request, ucs_status_t status, void* user) {
  auto* s = static_cast<RequestState*>(user);
  s->done = true;
  s->status = status;
}
void RecvDone(void* request, ucs_status_t status, const ucp_tag_recv_info_t* info, void* user) {
  auto* s = static_cast<RequestState*>(user);
  s->done = true;
  s->status = status;
  if (info) s->received = info->length;
}
}  // namespace

struct Peer {
  ucp_ep_h ep = nullptr;
  bool failed = false;
  ucs_status_t error = UCS_OK;
};

struct UcxTransport::Impl {
  ucp_context_h context = nullptr;
  ucp_worker_h worker = nullptr;
  std::map<int, Peer> peers;
  std::vector<Request> live;  // requests the transport must keep alive until UCX releases them
};

namespace {
void PeerFailed(void* arg, ucp_ep_h, ucs_status_t status) {
  auto* p = static_cast<Peer*>(arg);
  p->failed = true;
  p->error = status;
}

Status Ucx(ucs_status_t s, const std::string& what) {
  if (s == UCS_OK) return Status::Ok();
  return Status(StatusCode::kUnavailable, what + ": " + ucs_status_string(s));
}
}  // namespace

UcxTransport::UcxTransport(int rank) : rank_(rank), impl_(std::make_unique<Impl>()) {}

StatusOr<std::string> NetDeviceForAddress(const std::string& host) {
  in6_addr want6{};
  in_addr want4{};
  const bool v4 = inet_pton(AF_INET, host.c_str(), &want4) == 1;
  const bool v6 = !v4 && inet_pton(AF_INET6, host.c_str(), &want6) == 1;
  if (!v4 && !v6) return Status::InvalidArgument("'" + host + "' is not an IP address");
  if ((v4 && want4.s_addr == htonl(INADDR_ANY)) || (v6 && IN6_IS_ADDR_UNSPECIFIED(&want6))) {
    return std::string();
  }
  ifaddrs* list = nullptr;
  if (getifaddrs(&list) != 0) return Status::Unavailable("getifaddrs failed");
  std::string found;
  for (ifaddrs* i = list; i && found.empty(); i = i->ifa_next) {
    if (!i->ifa_addr) continue;
    if (v4 && i->ifa_addr->sa_family == AF_INET &&
        reinterpret_cast<sockaddr_in*>(i->ifa_addr)->sin_addr.s_addr == want4.s_addr) {
      found = i->ifa_name;
    }
    if (v6 && i->ifa_addr->sa_family == AF_INET6 &&
        std::memcmp(&reinterpret_cast<sockaddr_in6*>(i->ifa_addr)->sin6_addr, &want6,
                    sizeof want6) == 0) {
      found = i->ifa_name;
    }
  }
  freeifaddrs(list);
  // 127.0.0.2 and the like are loopback addresses too, on "lo" without being listed.
  if (found.empty() && v4 && (ntohl(want4.s_addr) >> 24) == 127) found = "lo";
  if (found.empty()) return Status::NotFound("no network interface has the address " + host);
  return found;
}

StatusOr<std::unique_ptr<UcxTransport>> UcxTransport::Create(int rank,
                                                             const std::string& net_device) {
  std::unique_ptr<UcxTransport> t(new UcxTransport(rank));
  ucp_config_t* config = nullptr;
  Status s = Ucx(ucp_config_read(nullptr, nullptr, &config), "ucp_config_read");
  if (!s.ok()) return s;
  // No CMA (process_vm_readv of the peer's memory): when the peer process has died mid-transfer,
  // UCX's CMA transport treats the failed read as fatal and aborts this process (seen: a worker
  // killed mid-step took its pipeline neighbour down). No rendezvous either: without CMA, UCX moves
  // a rendezvous message between processes of one host over TCP lanes, which move data only while
  // the sender progresses UCX (a pipeline stage computes between its sends: the 1F1B bubble grew
  // from 0.72 x to 1.06-1.16 x the theory), cost bandwidth, and after a peer died left the
  // survivors' wireup tripping a UCX assertion (comm.collectives_multiprocess, 'die'). So every
  // message goes eagerly through the shared-memory FIFO, made larger; docs/comm.md has the
  // figures. The FIFO's size is the shared-memory transports' common MM_FIFO_SIZE: named as
  // POSIX_FIFO_SIZE here, UCX 1.13 warned "invalid configuration" and kept 64 entries (its debug
  // log shows the FIFO's entries). Any of the variables a setting lists, set by the user, wins.
  struct Default {
    const char* name;
    const char* value;
    std::vector<const char*> user_variables;
  };
  const Default defaults[] = {
      {"NET_DEVICES", net_device.empty() ? nullptr : net_device.c_str(), {"UCX_NET_DEVICES"}},
      {"TLS", "^cma", {"UCX_TLS"}},
      {"RNDV_THRESH", "inf", {"UCX_RNDV_THRESH"}},
      {"MM_FIFO_SIZE", "256", {"UCX_MM_FIFO_SIZE", "UCX_POSIX_FIFO_SIZE", "UCX_SYSV_FIFO_SIZE"}}};
  for (const auto& [name, value, user_variables] : defaults) {
    if (value == nullptr) continue;
    if (std::any_of(user_variables.begin(), user_variables.end(),
                    [](const char* v) { return std::getenv(v) != nullptr; })) {
      continue;
    }
    s = Ucx(ucp_config_modify(config, name, value), fmt::format("ucp_config_modify({})", name));
    if (!s.ok()) {
      ucp_config_release(config);
      return s;
    }
  }
  ucp_params_t params{};
  params.field_mask = UCP_PARAM_FIELD_FEATURES;
  // No UCP_FEATURE_WAKEUP: it restricts UCX to transports with event notification (TCP on one
  // host), which measured 3.2 GB/s where shared memory and CMA give 11 GB/s. Idle waits back off
  // with sleeps instead (WaitAll).
  params.features = UCP_FEATURE_TAG;
  s = Ucx(ucp_init(&params, config, &t->impl_->context), "ucp_init");
  ucp_config_release(config);
  if (!s.ok()) return s;
  ucp_worker_params_t wp{};
  wp.field_mask = UCP_WORKER_PARAM_FIELD_THREAD_MODE;
  wp.thread_mode = UCS_THREAD_MODE_SINGLE;
  s = Ucx(ucp_worker_create(t->impl_->context, &wp, &t->impl_->worker), "ucp_worker_create");
  if (!s.ok()) return s;
  ucp_address_t* addr = nullptr;
  size_t len = 0;
  s = Ucx(ucp_worker_get_address(t->impl_->worker, &addr, &len), "ucp_worker_get_address");
  if (!s.ok()) return s;
  t->address_.assign(reinterpret_cast<const char*>(addr), len);
  ucp_worker_release_address(t->impl_->worker, addr);
  return t;
}

UcxTransport::~UcxTransport() {
  if (!impl_ || !impl_->worker) return;
  for (auto& [rank, p] : impl_->peers) {
    if (!p.ep) continue;
    ucp_request_param_t prm{};
    prm.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
    prm.flags = UCP_EP_CLOSE_FLAG_FORCE;
    void* r = ucp_ep_close_nbx(p.ep, &prm);
    if (UCS_PTR_IS_PTR(r)) {
      for (int i = 0; i < 1000 && ucp_request_check_status(r) == UCS_INPROGRESS; ++i) {
        ucp_worker_progress(impl_->worker);
      }
      ucp_request_free(r);
    }
  }
  for (auto& r : impl_->live) {
    if (r->ucx && !r->done) ucp_request_cancel(impl_->worker, r->ucx);
  }
  for (int i = 0; i < 100; ++i) ucp_worker_progress(impl_->worker);
  for (auto& r : impl_->live) {
    if (r->ucx && r->done) ucp_request_free(r->ucx);
  }
  ucp_worker_destroy(impl_->worker);
  ucp_cleanup(impl_->context);
}

Status UcxTransport::Connect(int peer, const std::string& address, bool detect_peer_failure) {
  if (address.empty()) return Status::InvalidArgument(fmt::format("peer {}: empty address", peer));
  Peer& p = impl_->peers[peer];
  if (p.ep) return Status::Ok();
  ucp_ep_params_t ep{};
  ep.field_mask = UCP_EP_PARAM_FIELD_REMOTE_ADDRESS;
  ep.address = reinterpret_cast<const ucp_address_t*>(address.data());
  if (detect_peer_failure) {
    ep.field_mask |= UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE | UCP_EP_PARAM_FIELD_ERR_HANDLER;
    ep.err_mode = UCP_ERR_HANDLING_MODE_PEER;
    ep.err_handler.cb = PeerFailed;
    ep.err_handler.arg = &p;
  }
  return Ucx(ucp_ep_create(impl_->worker, &ep, &p.ep), fmt::format("connect to rank {}", peer));
}

bool UcxTransport::connected(int peer) const {
  auto it = impl_->peers.find(peer);
  return it != impl_->peers.end() && it->second.ep && !it->second.failed;
}

StatusOr<Request> UcxTransport::Send(int peer, const void* buf, size_t bytes, uint32_t channel,
                                     uint32_t seq) {
  auto it = impl_->peers.find(peer);
  if (it == impl_->peers.end() || !it->second.ep) {
    return Status(StatusCode::kFailedPrecondition, fmt::format("rank {} is not connected", peer));
  }
  if (it->second.failed) {
    return Status(StatusCode::kUnavailable, fmt::format("rank {} is unreachable ({})", peer,
                                                        ucs_status_string(it->second.error)));
  }
  auto st = std::make_shared<RequestState>();
  st->peer = peer;
  st->send = true;
  ucp_request_param_t prm{};
  prm.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA;
  prm.cb.send = SendDone;
  prm.user_data = st.get();
  void* r = ucp_tag_send_nbx(it->second.ep, buf, bytes, MakeTag(rank_, channel, seq), &prm);
  if (UCS_PTR_IS_ERR(r)) {
    return Status(StatusCode::kUnavailable,
                  fmt::format("send to rank {}: {}", peer, ucs_status_string(UCS_PTR_STATUS(r))));
  }
  if (r == nullptr) {
    st->done = true;
  } else {
    st->ucx = r;
    impl_->live.push_back(st);
  }
  return st;
}

StatusOr<Request> UcxTransport::Recv(int peer, void* buf, size_t bytes, uint32_t channel,
                                     uint32_t seq) {
  auto st = std::make_shared<RequestState>();
  st->peer = peer;
  st->expected = bytes;
  ucp_request_param_t prm{};
  prm.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA;
  prm.cb.recv = RecvDone;
  prm.user_data = st.get();
  void* r =
      ucp_tag_recv_nbx(impl_->worker, buf, bytes, MakeTag(peer, channel, seq), ~uint64_t{0}, &prm);
  if (UCS_PTR_IS_ERR(r)) {
    return Status(StatusCode::kUnavailable, fmt::format("receive from rank {}: {}", peer,
                                                        ucs_status_string(UCS_PTR_STATUS(r))));
  }
  if (r == nullptr) {
    st->done = true;
    st->received = bytes;
  } else {
    st->ucx = r;
    impl_->live.push_back(st);
  }
  return st;
}

bool UcxTransport::Completed(const Request& r) {
  ucp_worker_progress(impl_->worker);
  return r->done && r->status == UCS_OK;
}

Status UcxTransport::Wait(const Request& r, std::chrono::milliseconds timeout) {
  return WaitAll({r}, timeout);
}

Status UcxTransport::WaitAll(const std::vector<Request>& reqs, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  Status result = Status::Ok();
  int idle = 0;  // consecutive progress calls that found nothing to do
  while (true) {
    unsigned events = 0;
    while (unsigned n = ucp_worker_progress(impl_->worker)) events += n;
    idle = events ? 0 : idle + 1;
    bool all = true;
    for (const Request& r : reqs) {
      if (r->done) {
        if (r->status != UCS_OK && result.ok()) {
          result = Status(StatusCode::kUnavailable,
                          fmt::format("{} rank {} failed: {}", r->send ? "send to" : "receive from",
                                      r->peer, ucs_status_string(r->status)));
        } else if (!r->send && r->status == UCS_OK && r->received != r->expected && result.ok()) {
          result = Status::InvalidArgument(fmt::format(
              "rank {} sent {} bytes where {} were expected", r->peer, r->received, r->expected));
        }
        continue;
      }
      all = false;
      auto p = impl_->peers.find(r->peer);
      if (p != impl_->peers.end() && p->second.failed && result.ok()) {
        result =
            Status(StatusCode::kUnavailable, fmt::format("rank {} is unreachable ({})", r->peer,
                                                         ucs_status_string(p->second.error)));
      }
    }
    if (all) break;
    if (result.ok() && abort_ != nullptr && abort_->load(std::memory_order_relaxed)) {
      result = Status(StatusCode::kUnavailable, fmt::format("rank {}: the job was aborted", rank_));
    }
    const auto now = std::chrono::steady_clock::now();
    if (result.ok() && now >= deadline) {
      std::vector<int> peers;
      for (const Request& r : reqs) {
        if (!r->done && std::find(peers.begin(), peers.end(), r->peer) == peers.end()) {
          peers.push_back(r->peer);
        }
      }
      std::string who;
      for (int p : peers) who += (who.empty() ? "" : ", ") + std::to_string(p);
      result = Status(StatusCode::kDeadlineExceeded,
                      fmt::format("rank {}: no progress with rank(s) {} within {} ms", rank_, who,
                                  timeout.count()));
    }
    if (!result.ok()) {
      for (const Request& r : reqs) {
        if (!r->done && r->ucx) ucp_request_cancel(impl_->worker, r->ucx);
      }
      for (int i = 0; i < 1000; ++i) {
        ucp_worker_progress(impl_->worker);
        if (std::all_of(reqs.begin(), reqs.end(), [](const Request& r) { return r->done; })) break;
      }
      break;
    }
    // Spin briefly (transfers complete in microseconds), then sleep with a growing back-off up
    // to 1 ms so an idle wait costs almost no CPU.
    if (idle > 64) {
      const int64_t us = std::min<int64_t>(1000, int64_t{1} << std::min(10, (idle - 64) / 8));
      std::this_thread::sleep_for(std::chrono::microseconds(us));
    }
  }
  // Release completed UCX requests.
  auto& live = impl_->live;
  for (auto& r : live) {
    if (r->done && r->ucx) {
      ucp_request_free(r->ucx);
      r->ucx = nullptr;
    }
  }
  live.erase(std::remove_if(live.begin(), live.end(), [](const Request& r) { return !r->ucx; }),
             live.end());
  return result;
}

}  // namespace moreh::comm
