// Embedding lookup and its backward (scatter-add), B*T = N tokens, C channels, V rows.
#include <cstring>
#include <vector>

#include "kernels/cpu/cpu_kernels.h"
#include "runtime/core/parallel.h"

namespace moreh::kernels::cpu {

void EmbeddingForward(float* out, const float* weight, const int64_t* ids, int64_t n, int64_t c) {
  ParallelFor(n, 64, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i)
      std::memcpy(out + i * c, weight + ids[i] * c, static_cast<size_t>(c) * sizeof(float));
  });
}

void EmbeddingBackward(float* dweight, const float* dout, const int64_t* ids, int64_t n, int64_t c,
                       int64_t v) {
  std::memset(dweight, 0, static_cast<size_t>(v * c) * sizeof(float));
  // Each thread owns a slice of the channels, so no two threads touch the same element.
  ParallelFor(c, 16, [&](int64_t cb, int64_t ce) {
    for (int64_t i = 0; i < n; ++i) {
      float* dst = dweight + ids[i] * c;
      const float* src = dout + i * c;
#pragma omp simd
      for (int64_t j = cb; j < ce; ++j) dst[j] += src[j];
    }
  });
}

}  // namespace moreh::kernels::cpu
