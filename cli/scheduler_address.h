// The scheduler a tool talks to and the user's token: --scheduler, else MOREH_SCHEDULER, else the
// cluster of `moreh-run cluster up`; the token
// from MOREH_TOKEN, else "local-user" (the client's default).
#pragma once

#include <cstdlib>
#include <memory>
#include <string>

#include "runtime/client/channel.h"
#include "runtime/client/local_cluster.h"

namespace moreh::cli {

inline std::string SchedulerAddress(const std::string& flag) {
  if (!flag.empty()) return flag;
  const char* env = std::getenv("MOREH_SCHEDULER");
  if (env && *env) return env;
  return client::RecordedLocalScheduler();  // a cluster started by `moreh-run cluster up`
}

inline std::string UserToken() {
  const char* env = std::getenv("MOREH_TOKEN");
  return env && *env ? env : "local-user";
}

// The user tools' connection: the configured scheduler as this user, or an error saying what to
// set.
inline StatusOr<std::unique_ptr<client::Channel>> ConnectAsUser(boost::asio::io_context& io,
                                                                const std::string& scheduler_flag) {
  const std::string address = SchedulerAddress(scheduler_flag);
  if (address.empty()) {
    return Status::InvalidArgument(
        "no scheduler configured (set MOREH_SCHEDULER or pass --scheduler)");
  }
  return client::ConnectScheduler(io, address, UserToken());
}

}  // namespace moreh::cli
