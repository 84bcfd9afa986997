#include "runtime/autograd.h"

#include "ops/op.h"

namespace moreh::runtime {

std::vector<int> BuildBackward(Graph* graph, int output, int seed, const std::vector<int>& wrt) {
  const int num_nodes = static_cast<int>(graph->nodes().size());
  const int nv = static_cast<int>(graph->values().size());
  MOREH_CHECK(output >= 0 && output < nv, "backward: output value {} not in graph", output);
  MOREH_CHECK(graph->info(seed) == graph->info(output),
              "backward: seed gradient {} does not match output {}", graph->info(seed).ToString(),
              graph->info(output).ToString());

  // Values that depend on some wrt value (forward reachability, floats only).
  std::vector<char> needs(nv, 0);
  for (int w : wrt) {
    MOREH_CHECK(w >= 0 && w < nv, "backward: value {} not in graph", w);
    needs[w] = IsFloating(graph->info(w).dtype);
  }
  for (int i = 0; i < num_nodes; ++i) {
    const Node& n = graph->nodes()[i];
    bool any = false;
    for (int v : n.inputs) any |= needs[v] != 0;
    if (!any) continue;
    for (int v : n.outputs) needs[v] = IsFloating(graph->info(v).dtype);
  }
  // Values the output depends on (backward reachability).
  std::vector<char> feeds(nv, 0);
  feeds[output] = 1;
  int last = graph->value(output).producer;
  for (int i = last; i >= 0; --i) {
    const Node& n = graph->nodes()[i];
    bool any = false;
    for (int v : n.outputs) any |= feeds[v] != 0;
    if (!any) continue;
    for (int v : n.inputs) feeds[v] = 1;
  }

  std::vector<int> grad(nv, -1);
  grad[output] = seed;
  ops::GraphBuilder b(graph);
  for (int i = last; i >= 0; --i) {
    // Copy: emitting gradient nodes may reallocate the node vector.
    const Node n = graph->nodes()[i];
    std::vector<int> out_grads;
    bool any = false;
    for (int v : n.outputs) {
      out_grads.push_back(feeds[v] && needs[v] ? grad[v] : -1);
      any |= out_grads.back() >= 0;
    }
    if (!any) continue;
    bool wants = false;
    for (int v : n.inputs) wants |= needs[v] && feeds[v];
    if (!wants) continue;
    const ops::OpDef& def = ops::GetOpDef(n.op);
    MOREH_CHECK(def.grad != nullptr, "backward: {} (node {}) has no gradient rule", OpName(n.op),
                i);
    const std::vector<int> in_grads = def.grad(b, n, out_grads);
    MOREH_CHECK(in_grads.size() == n.inputs.size(), "backward: {} gradient rule returned {} grads",
                OpName(n.op), in_grads.size());
    for (size_t k = 0; k < n.inputs.size(); ++k) {
      const int v = n.inputs[k];
      if (in_grads[k] < 0 || !needs[v]) continue;
      grad[v] = grad[v] < 0 ? in_grads[k] : b.Add(grad[v], in_grads[k]);
    }
  }
  std::vector<int> result;
  result.reserve(wrt.size());
  for (int w : wrt) result.push_back(grad[w]);
  return result;
}

}  // namespace moreh::runtime
