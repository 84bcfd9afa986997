// Splitting a global batch over data-parallel replicas and micro-batches.
//
// Replica r of dp takes rows [r B/dp, (r+1) B/dp) of the batch; its micro-batch j takes the j-th
// block of b = B/(dp m) rows of those. Each micro-batch's loss weight is (labels it counts) /
// (labels the whole batch counts), with Hugging Face's causal shift (label t scores logits t-1) and
// ignore_index -100, so the weighted micro-batch losses sum to the one-device mean; with num_items
// > 0 the divisor is that (gradient accumulation over batches: their total count). Pure.
#pragma once

#include <vector>

#include "runtime/parallel/stage_runner.h"

namespace moreh::parallel {

// ids, labels [B, T] (i32 or i64); mask [B, T] or undefined (all ones). Returns [replica][micro].
// Throws moreh::Error when B is not dp * m * b.
std::vector<std::vector<MicroBatch>> SplitBatch(const runtime::Tensor& ids,
                                                const runtime::Tensor& mask,
                                                const runtime::Tensor& labels, int dp,
                                                int num_micro_batches, double num_items = 0);

}  // namespace moreh::parallel
