// Keeps a granted lease alive from a thread of its own: renews it every third of its TTL over the
// scheduler connection, hears lease_lost pushed on it, and when the connection drops (the
// scheduler restarted or the network failed) connects again with backoff (100 ms doubling to 2 s),
// says hello with the user's token and renews with the lease's secret, so the job goes on: the
// lease survives a scheduler restart in its state directory. Health() says whether the lease is
// still held; the destructor releases it.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "runtime/client/channel.h"
#include "runtime/core/status.h"

namespace moreh::client {

class LeaseKeeper {
 public:
  // `channel`: the connection the lease was allocated on (hello done), or null.
  LeaseKeeper(std::unique_ptr<Channel> channel, std::string scheduler, std::string token,
              uint64_t lease, std::string secret, std::chrono::milliseconds ttl);
  ~LeaseKeeper();  // releases the lease
  // Ok while the lease is held; else FailedPrecondition naming why it was lost.
  Status Health() const;
  // Times the connection was made again (tests, logs).
  int reconnects() const { return reconnects_.load(); }

 private:
  void Run();
  bool Reconnect();  // one attempt
  void SleepFor(std::chrono::milliseconds d);
  void Lost(const std::string& why);

  boost::asio::io_context io_;
  std::unique_ptr<Channel> ch_;
  const std::string scheduler_, token_, secret_;
  const uint64_t lease_;
  const std::chrono::milliseconds ttl_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::string lost_;  // guarded by mu_
  std::atomic<int> reconnects_{0};
  std::thread thread_;
};

}  // namespace moreh::client
