#include "runtime/core/parallel.h"

#include <cstdlib>
#include <thread>

namespace moreh {
namespace {
int DefaultThreads() {
  if (const char* env = std::getenv("MOREH_NUM_THREADS")) {
    const int n = std::atoi(env);
    if (n > 0) return n;
  }
  const unsigned hw = std::thread::hardware_concurrency();
  return hw > 0 ? static_cast<int>(hw) : 1;
}
int g_threads = DefaultThreads();
}  // namespace

int NumThreads() { return g_threads; }
void SetNumThreads(int n) { g_threads = n > 0 ? n : DefaultThreads(); }

}  // namespace moreh
