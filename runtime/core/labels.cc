#include "runtime/core/labels.h"

#include "runtime/core/error.h"

namespace moreh::runtime {

int64_t CountLossTokens(const Tensor& labels, int64_t ignore_index) {
  MOREH_CHECK(labels.defined() && labels.dim() == 2 && IsInteger(labels.dtype()),
              "labels must be [B, T] integers, got {}",
              labels.defined() ? labels.ToString() : "undefined");
  const Tensor L = labels.HostContiguous().To(DType::kI64);
  const int64_t B = L.size(0), T = L.size(1);
  const int64_t* lab = L.data<int64_t>();
  int64_t n = 0;
  for (int64_t r = 0; r < B; ++r) {
    for (int64_t t = 1; t < T; ++t) n += lab[r * T + t] != ignore_index;
  }
  return n;
}

}  // namespace moreh::runtime
