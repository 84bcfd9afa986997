#include "runtime/client/worker_watch.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <poll.h>
#include <unistd.h>

#include <memory>

#include "runtime/client/channel.h"
#include "runtime/net/protocol.h"

namespace moreh::client {
using Clock = std::chrono::steady_clock;

WorkerWatch::WorkerWatch(std::vector<Target> targets, uint64_t lease, std::string secret,
                         std::chrono::milliseconds period, std::chrono::milliseconds hang_after)
    : lease_(lease), secret_(std::move(secret)), period_(period), hang_after_(hang_after) {
  if (::pipe2(wake_, O_CLOEXEC | O_NONBLOCK) != 0) wake_[0] = wake_[1] = -1;
  thread_ = std::thread([this, t = std::move(targets)]() mutable { Run(std::move(t)); });
}

WorkerWatch::~WorkerWatch() {
  if (wake_[1] >= 0) {
    const char b = 1;
    (void)!::write(wake_[1], &b, 1);
  }
  thread_.join();
  for (int fd : wake_) {
    if (fd >= 0) ::close(fd);
  }
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
  if (!failure_.empty()) return;
  failure_ = fmt::format("worker '{}' ({}) {}", t.node, t.address, how);
  failed_address_ = t.address;
}

void WorkerWatch::Run(std::vector<Target> targets) {
  boost::asio::io_context io;
  struct Watched {
    Target target;
    std::unique_ptr<Channel> channel;
    bool waiting = false;  // a ping is out
    Clock::time_point sent;
  };
  std::vector<Watched> watched;
  net::WorkerHello hello;
  hello.lease = lease_;
  hello.secret = secret_;
  for (Target& t : targets) {
    auto ch = std::make_unique<Channel>(io);
    Status s = ch->Open(t.address);
    if (s.ok()) s = ReplyError(ch->Call(hello.ToJson()), "hello");
    if (!s.ok()) return Fail(t, "cannot be watched: " + s.message());
    watched.push_back({std::move(t), std::move(ch), false, {}});
  }
  auto next_round = Clock::now();
  while (true) {
    const auto now = Clock::now();
    if (now >= next_round) {
      for (Watched& w : watched) {
        if (w.waiting) continue;
        if (!w.channel->Send(net::Message(net::Msg::kPing)).ok()) {
          return Fail(w.target, "died: its control connection closed (sending failed)");
        }
        w.waiting = true;
        w.sent = now;
      }
      next_round = now + period_;
    }
    for (const Watched& w : watched) {
      if (w.waiting && now - w.sent > hang_after_) {
        return Fail(w.target,
                    fmt::format("stopped answering: no reply to a ping for {:.1f} s (the process "
                                "is hung or stopped)",
                                std::chrono::duration<double>(now - w.sent).count()));
      }
    }
    std::vector<pollfd> fds;
    fds.push_back({wake_[0], POLLIN, 0});
    for (const Watched& w : watched) fds.push_back({w.channel->fd(), POLLIN, 0});
    const auto wait =
        std::chrono::duration_cast<std::chrono::milliseconds>(next_round - Clock::now());
    const int r =
        ::poll(fds.data(), fds.size(), static_cast<int>(std::max<int64_t>(1, wait.count())));
    if (r < 0) continue;              // EINTR
    if (fds[0].revents != 0) return;  // stopping
    for (size_t i = 0; i < watched.size(); ++i) {
      if (fds[i + 1].revents == 0) continue;
      Watched& w = watched[i];
      auto m = w.channel->Receive(std::chrono::milliseconds(0));
      if (m.ok()) {
        w.waiting = false;
      } else if (m.status().code() != StatusCode::kDeadlineExceeded) {
        return Fail(w.target, "died: its control connection closed (" + m.status().message() + ")");
      }
    }
  }
}

}  // namespace moreh::client
