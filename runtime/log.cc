#include "runtime/log.h"

#include <spdlog/spdlog.h>

#include <mutex>

namespace moreh {

void InitLogging() {
  static std::once_flag once;
  std::call_once(once, [] { spdlog::set_pattern("[%Y-%m-%d %H:%M:%S.%e] [%l] %v"); });
}

}  // namespace moreh
