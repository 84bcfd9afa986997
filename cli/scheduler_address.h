// The scheduler a tool talks to and the user's token: --scheduler, else MOREH_SCHEDULER; the token
// from MOREH_TOKEN, else "local-user" (the client's default).
#pragma once

#include <cstdlib>
#include <string>

namespace moreh::cli {

inline std::string SchedulerAddress(const std::string& flag) {
  if (!flag.empty()) return flag;
  const char* env = std::getenv("MOREH_SCHEDULER");
  return env ? env : "";
}

inline std::string UserToken() {
  const char* env = std::getenv("MOREH_TOKEN");
  return env && *env ? env : "local-user";
}

}  // namespace moreh::cli
