// Activation recomputation: which forward nodes a backward program runs again, and where. Defined
// once for the stage programs (parallel/stage_graph.cc cuts them with it) and the planner's layer
// costs (planner/layer_cost.cc simulates the memory of the very programs the runtime runs).
#pragma once

#include <vector>

#include "runtime/core/graph.h"

namespace moreh::planner {

// Recomputation levels, as on the reference platform.
enum Recompute : int { kRecomputeNone = 0, kRecomputeSelective = 1, kRecomputeFull = 2 };

// Selective recomputation re-runs these: cheap to compute, large to keep (the norms, the gated
// activation, the tensor-parallel copy and views), as Megatron-LM's selective recomputation
// keeps the matrix products and recomputes what lies between them.
bool SelectivelyRecomputed(OpKind op);

struct RecomputeCut {
  // The backward program's nodes in order: each recomputed forward node just before the first
  // node that needs it (so one layer's recomputed activations are alive at a time), then the
  // backward node.
  std::vector<int> backward_nodes;
  // Forward values the backward program reads that it does not recompute: kept from the forward.
  std::vector<int> saved;
};

// `g` holds the forward (nodes [0, num_forward)) and then its backward. Recomputation applies to
// forward nodes in [layer_begin, layer_end) (the decoder layers; the embedding and the head keep
// what they save), and to every parameter gather (kDpGather: gathered again, never kept); under
// full recomputation to all of them but the producers of `checkpoints` (each layer's output).
RecomputeCut CutForRecompute(const Graph& g, int num_forward, int layer_begin, int layer_end,
                             const std::vector<int>& checkpoints, int level);

}  // namespace moreh::planner
