// Causal language-model labels as Hugging Face scores them: label t is predicted from position
// t - 1 (the shift), and ignore_index (-100) scores nothing.
#pragma once

#include <cstdint>

#include "runtime/core/tensor.h"

namespace moreh::runtime {

// The number of labels of `labels` ([B, T], i32 or i64, on the host) that a causal LM loss counts:
// positions 1..T-1 of each row that are not ignore_index.
int64_t CountLossTokens(const Tensor& labels, int64_t ignore_index = -100);

}  // namespace moreh::runtime
