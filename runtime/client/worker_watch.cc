#include "runtime/client/worker_watch.h"

#include <fmt/format.h>

#include "runtime/client/channel.h"
#include "runtime/net/protocol.h"

namespace moreh::client {
using Clock = std::chrono::steady_clock;

WorkerWatch::WorkerWatch(std::vector<Target> targets, uint64_t lease, std::string secret,
                         std::chrono::milliseconds period, std::chrono::milliseconds hang_after)
    : lease_(lease), secret_(std::move(secret)), period_(period), hang_after_(hang_after) {
  for (Target& t : targets) {
    threads_.emplace_back([this, t = std::move(t)] { Watch(t); });
  }
}

WorkerWatch::~WorkerWatch() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  for (auto& t : threads_) t.join();
}

Status WorkerWatch::Health() const {
  std::lock_guard<std::mutex> lock(mu_);
  return failure_.empty() ? Status::Ok() : Status::Unavailable(failure_);
}

std::string WorkerWatch::failed_address() const {
  std::lock_guard<std::mutex> lock(mu_);
  return failed_address_;
}

void WorkerWatch::Fail(const Target& t, const std::string& how) {
  std::lock_guard<std::mutex> lock(mu_);
  if (stop_ || !failure_.empty()) return;
  failure_ = fmt::format("worker '{}' ({}) {}", t.node, t.address, how);
  failed_address_ = t.address;
}

void WorkerWatch::Watch(const Target& t) {
  boost::asio::io_context io;
  Channel ch(io);
  net::WorkerHello hello;
  hello.lease = lease_;
  hello.secret = secret_;
  Status s = ch.Open(t.address);
  if (s.ok()) s = ReplyError(ch.Call(hello.ToJson()), "hello");
  if (!s.ok()) {
    Fail(t, "cannot be watched: " + s.message());
    return;
  }
  while (true) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      if (cv_.wait_for(lock, period_, [this] { return stop_; })) break;
    }
    const auto sent = Clock::now();
    s = ch.Send(net::Message(net::Msg::kPing));
    auto r = s.ok() ? ch.Receive(hang_after_) : StatusOr<nlohmann::json>(s);
    if (r.ok()) continue;
    if (r.status().code() == StatusCode::kDeadlineExceeded) {
      Fail(t, fmt::format("stopped answering: no reply to a ping for {:.1f} s (the process is "
                          "hung or stopped)",
                          std::chrono::duration<double>(Clock::now() - sent).count()));
    } else {
      Fail(t, "died: its control connection closed (" + r.status().message() + ")");
    }
    break;
  }
  ch.Close();
}

}  // namespace moreh::client
