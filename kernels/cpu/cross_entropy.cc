// Cross-entropy over logits[N,V] fused with log-softmax: one pass for the row max, one for the sum
// of exponentials; the probability matrix is never stored (the backward recomputes it from lse).
#include <cmath>
#include <limits>
#include <vector>

#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cpu/vec_math.h"
#include "runtime/core/parallel.h"

namespace moreh::kernels::cpu {

double CrossEntropyForward(float* lse, const float* logits, const int64_t* labels, int64_t n,
                           int64_t v, int64_t ignore_index, int64_t* count) {
  double total = 0.0;
  int64_t counted = 0;
  const int threads = NumThreads();
  std::vector<double> part_loss(threads, 0.0);
  std::vector<int64_t> part_count(threads, 0);
  ParallelFor(n, 4, [&](int64_t b, int64_t e) {
    const int tid = omp_get_thread_num();
    for (int64_t i = b; i < e; ++i) {
      const float* row = logits + i * v;
      float mx = -std::numeric_limits<float>::infinity();
#pragma omp simd reduction(max : mx)
      for (int64_t j = 0; j < v; ++j) mx = row[j] > mx ? row[j] : mx;
      float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
      for (int64_t j = 0; j < v; ++j) sum += VecExp(row[j] - mx);
      const float l = mx + std::log(sum);
      lse[i] = l;
      if (labels[i] != ignore_index) {
        part_loss[tid] += static_cast<double>(l) - static_cast<double>(row[labels[i]]);
        part_count[tid] += 1;
      }
    }
  });
  for (int t = 0; t < threads; ++t) {
    total += part_loss[t];
    counted += part_count[t];
  }
  *count = counted;
  return total;
}

void CrossEntropyBackward(float* dlogits, const float* logits, const int64_t* labels,
                          const float* lse, int64_t n, int64_t v, int64_t ignore_index,
                          float grad_scale) {
  ParallelFor(n, 4, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      float* d = dlogits + i * v;
      if (labels[i] == ignore_index) {
        for (int64_t j = 0; j < v; ++j) d[j] = 0.0f;
        continue;
      }
      const float* row = logits + i * v;
      const float l = lse[i];
#pragma omp simd
      for (int64_t j = 0; j < v; ++j) d[j] = VecExp(row[j] - l) * grad_scale;
      d[labels[i]] -= grad_scale;
    }
  });
}

}  // namespace moreh::kernels::cpu
