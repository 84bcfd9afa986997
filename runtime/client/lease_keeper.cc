#include "runtime/client/lease_keeper.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "runtime/net/protocol.h"

namespace moreh::client {
using json = nlohmann::json;
using net::Msg;
using Clock = std::chrono::steady_clock;

LeaseKeeper::LeaseKeeper(std::unique_ptr<Channel> channel, std::string scheduler, std::string token,
                         uint64_t lease, std::string secret, std::chrono::milliseconds ttl)
    : scheduler_(std::move(scheduler)),
      token_(std::move(token)),
      secret_(std::move(secret)),
      lease_(lease),
      ttl_(ttl) {
  // The allocating connection belongs to the caller's io_context: this thread uses its own.
  if (channel) channel->Close();
  thread_ = std::thread([this] { Run(); });
}

LeaseKeeper::~LeaseKeeper() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  // Release (best effort: an unreleased lease expires after its TTL).
  if (!ch_) Reconnect();
  if (ch_) {
    net::LeaseCredentials c{lease_, secret_};
    if (ch_->Send(c.ToJson(Msg::kRelease)).ok()) {
      for (int i = 0; i < 8; ++i) {  // skip pushes until the reply
        auto r = ch_->Receive(std::chrono::milliseconds(250));
        if (!r.ok() && r.status().code() != StatusCode::kDeadlineExceeded) break;
        if (r.ok() && r.value().value("type", "") != "lease_lost") break;
      }
    }
    ch_->Close();
  }
}

Status LeaseKeeper::Health() const {
  std::lock_guard<std::mutex> lock(mu_);
  if (lost_.empty()) return Status::Ok();
  return Status::FailedPrecondition(lost_);
}

void LeaseKeeper::Lost(const std::string& why) {
  std::lock_guard<std::mutex> lock(mu_);
  if (lost_.empty()) {
    lost_ = "the lease was lost: " + why;
    spdlog::error("{}", lost_);
  }
}

void LeaseKeeper::SleepFor(std::chrono::milliseconds d) {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait_for(lock, d, [this] { return stop_; });
}

bool LeaseKeeper::Reconnect() {
  auto ch = ConnectScheduler(io_, scheduler_, token_);
  if (!ch.ok()) return false;
  ch_ = std::move(ch.value());
  return true;
}

void LeaseKeeper::Run() {
  auto next_renew = Clock::now();  // at once: this connection is new to the lease
  int backoff_ms = 100;
  bool warned = false;
  auto stopping = [this] {
    std::lock_guard<std::mutex> lock(mu_);
    return stop_;
  };
  while (!stopping()) {
    if (!Health().ok()) return;  // nothing left to keep
    if (!ch_) {
      if (!Reconnect()) {
        SleepFor(std::chrono::milliseconds(backoff_ms));
        backoff_ms = std::min(backoff_ms * 2, 2000);
        continue;
      }
      if (warned) {
        spdlog::info("reconnected to the scheduler at {}; renewing lease {}", scheduler_, lease_);
        ++reconnects_;
      }
      backoff_ms = 100;
      warned = false;
      next_renew = Clock::now();
    }
    if (Clock::now() >= next_renew) {
      net::LeaseCredentials c{lease_, secret_};
      if (!ch_->Send(c.ToJson(Msg::kRenew)).ok()) {
        ch_.reset();
        continue;
      }
      next_renew = Clock::now() + ttl_ / 3;
    }
    const auto wait = std::min<std::chrono::milliseconds>(
        std::chrono::milliseconds(100),
        std::chrono::duration_cast<std::chrono::milliseconds>(next_renew - Clock::now()) +
            std::chrono::milliseconds(1));
    auto r = ch_->Receive(wait);
    if (!r.ok()) {
      if (r.status().code() == StatusCode::kDeadlineExceeded) continue;
      if (!warned) {
        spdlog::warn("the connection to the scheduler at {} was lost ({}); reconnecting",
                     scheduler_, r.status().message());
        warned = true;
      }
      ch_.reset();
      continue;
    }
    auto type = net::TypeOf(r.value());
    if (!type.ok()) continue;
    if (*type == Msg::kLeaseLost) {
      auto l = net::LeaseLost::FromJson(r.value());
      if (l.ok() && l->lease == lease_) Lost(l->reason);
    } else if (*type == Msg::kError) {
      auto e = net::ErrorReply::FromJson(r.value());
      if (e.ok() && e->code == net::kUnknownLease) {
        Lost(fmt::format("the scheduler no longer knows lease {} ({})", lease_, e->message));
      } else if (e.ok()) {
        spdlog::warn("scheduler: {}", e->message);
      }
    }
  }
}

}  // namespace moreh::client
