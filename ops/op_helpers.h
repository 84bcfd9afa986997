// Pieces of the op definitions that each backend's kernels share (defined beside their ops).
#pragma once

#include <cstdint>
#include <vector>

#include "kernels/cpu/cpu_kernels.h"
#include "ops/op.h"

namespace moreh::ops {

// matmul.cc: C = op(A) op(B) over `batch` leading matrices of A; B batched or shared.
struct MatMulDims {
  int64_t batch, m, n, k;
  bool b_batched;
};
MatMulDims GetMatMulDims(const Shape& a, const Shape& b, bool ta, bool tb);

// reduce.cc: the axes a sum/mean reduces (sorted; all when none are given), and how many elements
// each output sums.
std::vector<int> ReduceAxes(const Shape& shape, const Attrs& a);
int64_t ReducedCount(const Shape& shape, const std::vector<int>& axes);
// The f32 sum of x over `axes` (kept as size-1 dims), one axis at a time, innermost first, each
// through the backend's SumMiddle (out[outer, inner] = sum over r of x[outer, r, inner]).
using SumMiddleFn = void (*)(float* out, const float* x, int64_t outer, int64_t r, int64_t inner);
Tensor SumAxes(const Tensor& x, const std::vector<int>& axes, SumMiddleFn sum_middle);

// rotary.cc: the rotary frequencies a node asks for: theta, and its scaling (attrs rope_type
// "default" | "linear" | "llama3", factor, low_freq_factor, high_freq_factor,
// original_max_position; absent: default).
kernels::cpu::RopeParams RopeFromAttrs(const Attrs& a);

// cross_entropy.cc: the labels of each logits row as a host i64 tensor (shifted for causal LM when
// the op says so), each checked to be in [0, v) or ignore_index. `labels` must be on the host.
Tensor CrossEntropyRowLabels(const Tensor& labels, int64_t v, const Attrs& a, OpKind op);

// attention.cc: the kernels' shape from q[B,T,H,D], k[B,S,Hkv,D] and the attributes (causal,
// scale: 1/sqrt(D) unless given).
kernels::cpu::AttentionShape AttentionShapeOf(const Shape& q, const Shape& k, const Attrs& a);

// embedding.cc: every id of a host i64 tensor is in [0, v), else moreh::Error naming the op.
void CheckIds(OpKind op, const Tensor& ids, int64_t v);

}  // namespace moreh::ops
