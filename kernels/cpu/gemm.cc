// GEMM through OpenBLAS (cblas_sgemm), row-major.
//
// Threading: OpenBLAS runs single-threaded and this file splits C into row (or column) blocks
// across the runtime's OpenMP threads. One thread pool for GEMMs and every other kernel means no
// two pools spin against each other between kernels (measured: elementwise kernels ran 5-10x
// slower right after a GEMM when OpenBLAS kept its own pthreads).
#include <cblas.h>

#include <algorithm>

#include "kernels/cpu/cpu_kernels.h"
#include "runtime/core/parallel.h"

namespace moreh::kernels::cpu {
namespace {
void BlasSingleThreaded() {
  static const bool once = [] {
    openblas_set_num_threads(1);
    return true;
  }();
  (void)once;
}

void Sgemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
           int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
              static_cast<blasint>(m), static_cast<blasint>(n), static_cast<blasint>(k), alpha, a,
              static_cast<blasint>(lda), b, static_cast<blasint>(ldb), beta, c,
              static_cast<blasint>(ldc));
}
}  // namespace

void Gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
          int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  if (m == 0 || n == 0) return;
  if (k == 0) {
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < n; ++j) c[i * ldc + j] = beta == 0.0f ? 0.0f : beta * c[i * ldc + j];
    return;
  }
  BlasSingleThreaded();
  const double flops = 2.0 * static_cast<double>(m) * n * k;
  const int threads = NumThreads();
  if (threads <= 1 || flops < 4e6 || omp_in_parallel()) {
    Sgemm(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    return;
  }
  // Split the larger output dimension into one block per thread, aligned to 16.
  if (m >= n) {
    const int64_t block = (m + threads - 1) / threads;
    const int64_t aligned = (block + 15) / 16 * 16;
    ParallelFor((m + aligned - 1) / aligned, 1, [&](int64_t s, int64_t e) {
      for (int64_t blk = s; blk < e; ++blk) {
        const int64_t i0 = blk * aligned, rows = std::min(aligned, m - i0);
        const float* ap = trans_a ? a + i0 : a + i0 * lda;
        Sgemm(trans_a, trans_b, rows, n, k, alpha, ap, lda, b, ldb, beta, c + i0 * ldc, ldc);
      }
    });
  } else {
    const int64_t block = (n + threads - 1) / threads;
    const int64_t aligned = (block + 15) / 16 * 16;
    ParallelFor((n + aligned - 1) / aligned, 1, [&](int64_t s, int64_t e) {
      for (int64_t blk = s; blk < e; ++blk) {
        const int64_t j0 = blk * aligned, cols = std::min(aligned, n - j0);
        const float* bp = trans_b ? b + j0 * ldb : b + j0;
        Sgemm(trans_a, trans_b, m, cols, k, alpha, a, lda, bp, ldb, beta, c + j0, ldc);
      }
    });
  }
}

}  // namespace moreh::kernels::cpu
