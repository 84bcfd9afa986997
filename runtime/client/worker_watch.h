// Watches the workers of a lease from the client, so that a failure is blamed on the worker that
// failed, and said how, within seconds: one thread holds a control connection to each worker (hello
// with the lease) and pings them all every `period`. A connection closing means its worker died; no
// ping_ok for `hang_after` means it stopped answering (hung, or stopped with SIGSTOP). A worker's
// event loop answers pings while its devices compute, so a long step is not a hang.
#pragma once

#include <chrono>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "runtime/core/status.h"

namespace moreh::client {

class WorkerWatch {
 public:
  struct Target {
    std::string node, address;
  };
  WorkerWatch(std::vector<Target> targets, uint64_t lease, std::string secret,
              std::chrono::milliseconds period = std::chrono::milliseconds(250),
              std::chrono::milliseconds hang_after = std::chrono::milliseconds(3000));
  ~WorkerWatch();
  // Ok while every worker answers; else Unavailable naming the first that failed and how.
  Status Health() const;
  // The address of the first failed worker ("" while all answer).
  std::string failed_address() const;

 private:
  void Run(std::vector<Target> targets);
  void Fail(const Target& t, const std::string& how);

  const uint64_t lease_;
  const std::string secret_;
  const std::chrono::milliseconds period_, hang_after_;
  int wake_[2] = {-1, -1};  // a pipe: the destructor's byte ends the thread's poll at once
  mutable std::mutex mu_;
  std::string failure_, failed_address_;  // guarded by mu_
  std::thread thread_;
};

}  // namespace moreh::client
