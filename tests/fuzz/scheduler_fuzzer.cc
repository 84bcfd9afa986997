// libFuzzer target: the scheduler's message handlers (scheduler/scheduler_service.h), fed
// structure-aware messages (message_generator.h) from four peers that connect, authenticate as
// workers or clients, register, allocate, renew, release and reconnect, with time passing and the
// periodic tick in between. Findings: an exception escaping a handler (the daemon's connection
// would catch it, but the protocol's checks should have refused the input first), a malformed
// reply, a sanitizer report, or a broken registry invariant (a lease's devices all exist and name
// the lease back; free devices never exceed alive ones).
#include <cstdio>
#include <memory>

#include "scheduler/registry.h"
#include "scheduler/scheduler_service.h"
#include "scheduler/state_store.h"
#include "tests/fuzz/message_generator.h"

namespace {
using moreh::fuzz::json;
using namespace moreh::scheduler;

class RecordingPeer : public Peer {
 public:
  void Send(const json& m) override { replies.push_back(m); }
  std::vector<json> replies;
};

const std::vector<json>& Templates() {
  static const auto* t = new std::vector<json>{
      {{"type", "hello"}, {"version", 1}, {"role", "worker"}, {"key", "fuzz-key"}},
      {{"type", "hello"}, {"version", 1}, {"role", "client"}, {"token", "t1"}},
      {{"type", "hello"}, {"version", 1}, {"role", "client"}, {"token", "t2"}},
      {{"type", "register_worker"},
       {"node", "n1"},
       {"address", "127.0.0.1:5000"},
       {"devices",
        {{{"id", 0}, {"kind", "cpu"}, {"name", "cpu:0"}, {"memory_bytes", 1 << 20}},
         {{"id", 1}, {"kind", "cpu"}, {"name", "cpu:1"}, {"memory_bytes", 1 << 20}}}},
       {"profile", {{"gemm_flops_f32", 1e9}, {"threads", 1}}}},
      {{"type", "register_worker"},
       {"node", "n2"},
       {"address", "127.0.0.1:5001"},
       {"devices", {{{"id", 0}, {"kind", "cuda"}, {"name", "H200"}, {"memory_bytes", 1 << 30}}}}},
      {{"type", "heartbeat"}},
      {{"type", "allocate"}, {"request_id", "r1"}, {"pid", 7}, {"num_devices", 1}},
      {{"type", "allocate"}, {"request_id", "r2"}, {"device_size", "Medium"}},
      {{"type", "allocate"}, {"request_id", "r3"}},
      {{"type", "renew"}, {"lease", "$lease"}, {"secret", "$secret"}},
      {{"type", "release"}, {"lease", "$lease"}, {"secret", "$secret"}},
      {{"type", "vdev_list"}},
      {{"type", "vdev_add"}, {"size", "Medium"}},
      {{"type", "vdev_remove"}, {"id", 1}},
      {{"type", "vdev_switch"}, {"id", 1}},
      {{"type", "vdev_set_size"}, {"size", "Large"}},
      {{"type", "vdev_reset"}},
      {{"type", "cluster_status"}},
  };
  return *t;
}

void CheckInvariants(const Registry& r) {
  for (const auto& [id, l] : r.leases()) {
    for (const auto& [node, dev] : l.devices) {
      const auto n = r.nodes().find(node);
      bool found = false;
      if (n != r.nodes().end()) {
        for (const Device& d : n->second.devices) found |= d.id == dev && d.lease == id;
      }
      if (!found) {
        std::fprintf(stderr, "lease %llu holds %s:%d, which does not name it\n",
                     static_cast<unsigned long long>(id), node.c_str(), dev);
        __builtin_trap();
      }
    }
  }
  for (const auto& [name, n] : r.nodes()) {
    for (const Device& d : n.devices) {
      if (d.lease && !r.leases().count(d.lease)) {
        std::fprintf(stderr, "device %s:%d names lease %llu, which does not exist\n", name.c_str(),
                     d.id, static_cast<unsigned long long>(d.lease));
        __builtin_trap();
      }
    }
  }
  if (r.FreeDevices() > r.AliveDevices()) __builtin_trap();
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider in(data, size);
  moreh::fuzz::MessageGenerator gen(in);
  ServiceConfig config;
  config.cluster_key = "fuzz-key";
  config.heartbeat_period = std::chrono::milliseconds(100);
  config.dead_after = std::chrono::milliseconds(500);
  config.lease_ttl = std::chrono::milliseconds(1000);
  SchedulerService service(config, Registry(), nullptr);
  std::vector<std::unique_ptr<RecordingPeer>> peers;
  for (int i = 0; i < 4; ++i) {
    peers.push_back(std::make_unique<RecordingPeer>());
    service.Attach(peers.back().get());
  }
  auto reconnect = [&](size_t i) {
    service.Detach(peers[i].get());
    peers[i] = std::make_unique<RecordingPeer>();
    service.Attach(peers[i].get());
  };
  auto now = Clock::time_point() + std::chrono::hours(1);
  while (in.remaining_bytes() > 0) {
    const int op = in.ConsumeIntegralInRange<int>(0, 11);
    if (op == 0) {
      now += std::chrono::milliseconds(in.ConsumeIntegralInRange<int>(0, 1500));
      service.Tick(now);
      CheckInvariants(service.registry());
      continue;
    }
    const size_t p = in.ConsumeIntegralInRange<size_t>(0, peers.size() - 1);
    if (op == 1) {
      reconnect(p);
      continue;
    }
    const json m = gen.Message(Templates());
    moreh::Status s;
    try {
      s = service.Handle(*peers[p], m, now);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "handler threw on %s: %s\n", m.dump().substr(0, 300).c_str(), e.what());
      __builtin_trap();
    }
    for (auto& peer : peers) {
      for (const json& r : peer->replies) {
        if (!moreh::fuzz::WellFormedReply(r)) {
          std::fprintf(stderr, "malformed reply %s\n", r.dump().substr(0, 300).c_str());
          __builtin_trap();
        }
        gen.Remember(r);
      }
      peer->replies.clear();
    }
    if (!s.ok()) reconnect(p);  // the connection would be answered and closed
    CheckInvariants(service.registry());
  }
  return 0;
}
