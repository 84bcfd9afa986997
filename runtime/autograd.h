// Reverse-mode differentiation over a Graph: appends the gradient graph built from each op's
// gradient rule (ops/op.h) to the same graph.
#pragma once

#include <vector>

#include "runtime/core/graph.h"

namespace moreh::runtime {

// Appends nodes computing d(output)/d(w) for each w in `wrt`, seeding output's gradient with
// `seed` (a value of output's shape and dtype). Returns one value id per entry of `wrt`, or -1
// where no path from w reaches output. Gradients of a value used several times are summed.
// Throws moreh::Error when a node on the path has no gradient rule.
std::vector<int> BuildBackward(Graph* graph, int output, int seed, const std::vector<int>& wrt);

}  // namespace moreh::runtime
