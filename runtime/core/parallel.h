// Data-parallel loops over the CPU's cores (OpenMP underneath).
//
// ParallelFor(n, grain, fn) calls fn(begin, end) on disjoint ranges covering [0, n), at least
// `grain` elements each, on up to NumThreads() threads; it runs inline when n is small or when
// already inside a parallel region. fn must not throw.
#pragma once

#include <omp.h>

#include <cstdint>

namespace moreh {

int NumThreads();
void SetNumThreads(int n);  // 0 = all cores (default; MOREH_NUM_THREADS overrides)

template <typename F>
void ParallelFor(int64_t n, int64_t grain, F&& fn) {
  if (n <= 0) return;
  if (grain < 1) grain = 1;
  const int64_t max_chunks = (n + grain - 1) / grain;
  const int threads = NumThreads();
  if (max_chunks <= 1 || threads <= 1 || omp_in_parallel()) {
    fn(int64_t{0}, n);
    return;
  }
  const int64_t chunks = max_chunks < threads ? max_chunks : threads;
#pragma omp parallel num_threads(static_cast <int>(chunks))
  {
    const int64_t t = omp_get_thread_num();
    const int64_t nt = omp_get_num_threads();
    const int64_t b = n * t / nt, e = n * (t + 1) / nt;
    if (b < e) fn(b, e);
  }
}

}  // namespace moreh
