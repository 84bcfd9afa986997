#include "runtime/option.h"

#include <spdlog/spdlog.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <mutex>

#include "runtime/log.h"

namespace moreh::option {
namespace {
std::atomic<bool> g_enabled{false};
std::mutex g_mu;
AdvancedParallelizationOptions g_options;  // guarded by g_mu

int EnvSetting() {  // -1 unset, 0 off, 1 on
  const char* v = std::getenv("MOREH_ENABLE_ADVANCED_PARALLELIZATION");
  if (v == nullptr || *v == '\0') return -1;
  return (std::strcmp(v, "0") == 0 || std::strcmp(v, "false") == 0) ? 0 : 1;
}
}  // namespace

void enable_advanced_parallelization() {
  InitLogging();
  g_enabled = true;
  if (EnvSetting() == 0) {
    spdlog::info(
        "Advanced Parallelization requested by the program but turned off by "
        "MOREH_ENABLE_ADVANCED_PARALLELIZATION=0.");
    return;
  }
  spdlog::info("Advanced Parallelization is enabled.");
}

void enable_advanced_parallelization(const AdvancedParallelizationOptions& options) {
  {
    std::lock_guard<std::mutex> lock(g_mu);
    g_options = options;
  }
  enable_advanced_parallelization();
}

AdvancedParallelizationOptions advanced_parallelization_options() {
  std::lock_guard<std::mutex> lock(g_mu);
  return g_options;
}

void disable_advanced_parallelization() { g_enabled = false; }

bool advanced_parallelization_enabled() {
  const int env = EnvSetting();
  return env >= 0 ? env == 1 : g_enabled.load();
}

}  // namespace moreh::option
