#include "runtime/planner/recompute.h"

#include <functional>

namespace moreh::planner {

bool SelectivelyRecomputed(OpKind op) {
  return op == OpKind::kRmsNorm || op == OpKind::kSwiGlu || op == OpKind::kTpCopy ||
         op == OpKind::kReshape || op == OpKind::kTranspose || op == OpKind::kExpand;
}

RecomputeCut CutForRecompute(const Graph& g, int num_forward, int layer_begin, int layer_end,
                             const std::vector<int>& checkpoints, int level) {
  const auto& nodes = g.nodes();
  const int nf = num_forward;
  std::vector<char> is_checkpoint_producer(nodes.size(), 0);
  for (int v : checkpoints) {
    const int p = g.value(v).producer;
    if (p >= 0) is_checkpoint_producer[p] = 1;
  }
  auto recomputable = [&](int i) {
    if (nodes[i].op == OpKind::kDpGather) return true;
    if (i < layer_begin || i >= layer_end) return false;
    if (level == kRecomputeFull) return !is_checkpoint_producer[i];
    if (level == kRecomputeSelective) return SelectivelyRecomputed(nodes[i].op);
    return false;
  };
  // Forward nodes the backward needs and may recompute, transitively.
  std::vector<char> in_backward(nodes.size(), 0);
  std::vector<int> work;
  for (size_t i = nf; i < nodes.size(); ++i) {
    in_backward[i] = 1;
    work.insert(work.end(), nodes[i].inputs.begin(), nodes[i].inputs.end());
  }
  while (!work.empty()) {
    const int v = work.back();
    work.pop_back();
    const int pr = g.value(v).producer;
    if (pr < 0 || pr >= nf || in_backward[pr] || !recomputable(pr)) continue;
    in_backward[pr] = 1;
    work.insert(work.end(), nodes[pr].inputs.begin(), nodes[pr].inputs.end());
  }
  RecomputeCut cut;
  std::vector<char> needed(g.values().size(), 0);
  for (size_t i = 0; i < nodes.size(); ++i) {
    if (in_backward[i]) {
      for (int v : nodes[i].inputs) needed[v] = 1;
    }
  }
  for (size_t v = 0; v < g.values().size(); ++v) {
    const int pr = g.value(static_cast<int>(v)).producer;
    if (needed[v] && pr >= 0 && pr < nf && !in_backward[pr])
      cut.saved.push_back(static_cast<int>(v));
  }
  std::vector<char> placed(nodes.size(), 0);
  std::function<void(int)> place = [&](int i) {
    for (int v : nodes[i].inputs) {
      const int pr = g.value(v).producer;
      if (pr >= 0 && pr < nf && in_backward[pr] && !placed[pr]) {
        placed[pr] = 1;
        place(pr);
        cut.backward_nodes.push_back(pr);
      }
    }
  };
  for (size_t i = nf; i < nodes.size(); ++i) {
    place(static_cast<int>(i));
    placed[i] = 1;
    cut.backward_nodes.push_back(static_cast<int>(i));
  }
  return cut;
}

}  // namespace moreh::planner
