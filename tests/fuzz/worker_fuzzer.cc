// libFuzzer target: a worker's client sessions (worker/client_session.h) on two real CPU devices
// (allocators and job threads as the daemon makes them), fed structure-aware messages
// (message_generator.h) from two connections that say hello with leases, run graphs, send job_*
// requests, close and reconnect, while the scheduler grants and drops leases. Findings: an
// exception escaping a handler, a malformed reply, a request that never answers, a session left
// holding jobs after its connection closed, or a sanitizer report.
#include <cstdio>
#include <future>
#include <memory>
#include <thread>

#include "runtime/net/auth.h"
#include "tests/fuzz/message_generator.h"
#include "worker/client_session.h"
#include "worker/worker_context.h"

namespace {
using moreh::fuzz::json;
using namespace moreh::worker;

class RecordingLink : public SessionLink {
 public:
  void Send(const json& m) override { replies.push_back(m); }
  void Authenticated() override {}
  void Hold() override { ++holds; }
  void Unhold() override { --holds; }
  std::vector<json> replies;
  int holds = 0;
};

WorkerContext& Context() {
  static auto* io = new boost::asio::io_context();
  static auto* w = [] {
    auto* c = new WorkerContext(*io);
    c->cluster_key = "fuzz-key";
    for (int d = 0; d < 2; ++d) {
      c->device_threads.push_back(std::make_unique<boost::asio::thread_pool>(1));
      c->owned_allocators.push_back(
          std::make_unique<moreh::runtime::Allocator>("fuzz:cpu:" + std::to_string(d), 64 << 20));
      c->allocators.push_back(c->owned_allocators.back().get());
    }
    return c;
  }();
  return *w;
}

const std::vector<json>& Templates() {
  const json graph = {
      {"format", "moreh-graph"},
      {"version", 1},
      {"values",
       {{{"dtype", "f32"}, {"shape", {2, 2}}},
        {{"dtype", "f32"}, {"shape", {2, 2}}},
        {{"dtype", "f32"}, {"shape", {2, 2}}}}},
      {"inputs", {0, 1}},
      {"outputs", {2}},
      {"nodes",
       {{{"op", "matmul"}, {"inputs", {0, 1}}, {"outputs", {2}}, {"attrs", json::object()}}}}};
  const json tensor = {{"dtype", "f32"}, {"shape", {2, 2}}, {"data", "AACAPwAAAEAAAEBAAACAQA=="}};
  static const auto* t = new std::vector<json>{
      {{"type", "hello"}, {"version", 1}, {"lease", "$lease"}, {"secret", "$secret"}},
      {{"type", "ping"}},
      {{"type", "run_graph"}, {"device", 0}, {"graph", graph}, {"inputs", {tensor, tensor}}},
      {{"type", "run_graph"}, {"device", 1}, {"graph", graph}, {"inputs", json::array()}},
      {{"type", "job_setup"},
       {"device", 0},
       {"assignment", {{"job", 1}, {"rank", 0}, {"world", 1}, {"stage", 0}, {"num_stages", 1}}}},
      {{"type", "job_connect"}, {"device", 0}, {"peers", json::array()}},
      {{"type", "job_step"}, {"device", 0}, {"step", 0}, {"micro_batches", json::array()}},
      {{"type", "job_update"}, {"device", 0}, {"lr", 0.001}},
      {{"type", "job_grad_norm"}, {"device", 0}},
      {{"type", "job_save"}, {"device", 1}, {"tmp_dir", "/nonexistent"}, {"dtype", "f32"}},
      {{"type", "job_end"}, {"device", 0}},
  };
  return *t;
}

// Runs the event loop until the session's requests have all answered (a job thread posts each
// reply back to it).
void Drain(ClientSession& s) {
  boost::asio::io_context& io = Context().io;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (s.in_flight() > 0) {
    io.restart();
    if (io.poll() == 0) std::this_thread::sleep_for(std::chrono::microseconds(200));
    if (std::chrono::steady_clock::now() > deadline) {
      std::fprintf(stderr, "a request never answered (20 s)\n");
      __builtin_trap();
    }
  }
  io.restart();
  io.poll();
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider in(data, size);
  moreh::fuzz::MessageGenerator gen(in);
  WorkerContext& w = Context();
  w.leases = LeaseTable();
  auto grant = [&](uint64_t lease) {
    const std::string secret = "s" + std::to_string(lease);
    w.leases.Add(lease, {moreh::net::HashSecret(secret),
                         lease == 1 ? std::vector<int64_t>{0, 1} : std::vector<int64_t>{1}});
    gen.Remember(secret);
    gen.Remember(static_cast<int64_t>(lease));
  };
  grant(1);
  grant(2);
  struct Conn {
    RecordingLink* link;
    std::shared_ptr<ClientSession> session;
  };
  auto open = [&] {
    auto link = std::make_unique<RecordingLink>();
    RecordingLink* raw = link.get();
    return Conn{raw, std::make_shared<ClientSession>(&w, std::move(link))};
  };
  auto close = [&](Conn& c) {
    Drain(*c.session);
    c.session->Closed();
    if (c.session->jobs() != 0) {
      std::fprintf(stderr, "a closed session still holds jobs\n");
      __builtin_trap();
    }
    Drain(*c.session);
    if (c.link->holds != 0) {
      std::fprintf(stderr, "a closed session left its connection held (%d)\n", c.link->holds);
      __builtin_trap();
    }
  };
  std::vector<Conn> conns = {open(), open()};
  while (in.remaining_bytes() > 0) {
    const int op = in.ConsumeIntegralInRange<int>(0, 11);
    const size_t k = in.ConsumeIntegralInRange<size_t>(0, conns.size() - 1);
    if (op == 0) {
      w.leases.Drop(in.ConsumeIntegralInRange<uint64_t>(1, 2));
      continue;
    }
    if (op == 1) {
      grant(in.ConsumeIntegralInRange<uint64_t>(1, 2));
      continue;
    }
    if (op == 2) {
      close(conns[k]);
      conns[k] = open();
      continue;
    }
    const json m = gen.Message(Templates());
    moreh::Status s;
    try {
      s = conns[k].session->Handle(m);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "handler threw on %s: %s\n", m.dump().substr(0, 300).c_str(), e.what());
      __builtin_trap();
    }
    Drain(*conns[k].session);
    for (const json& r : conns[k].link->replies) {
      if (!moreh::fuzz::WellFormedReply(r)) {
        std::fprintf(stderr, "malformed reply %s\n", r.dump().substr(0, 300).c_str());
        __builtin_trap();
      }
      gen.Remember(r);
    }
    conns[k].link->replies.clear();
    if (!s.ok()) {  // the connection would be answered and closed
      close(conns[k]);
      conns[k] = open();
    }
  }
  for (Conn& c : conns) close(c);
  return 0;
}
