#include "runtime/planner/layer_cost.h"

#include <algorithm>
#include <cmath>
#include <set>
#include <vector>

#include "ops/op.h"
#include "runtime/autograd.h"
#include "runtime/models/llama_def.h"

namespace moreh::planner {
namespace {

bool IsView(OpKind op) {
  return op == OpKind::kReshape || op == OpKind::kTranspose || op == OpKind::kExpand;
}

int64_t Bytes(const ValueInfo& v) { return Numel(v.shape) * DTypeSize(v.dtype); }

double OpTime(const Graph& g, const Node& n, const DeviceProfile& dev) {
  if (IsView(n.op) || n.op == OpKind::kFill) return 0;
  const ops::Cost c = ops::OpCost(g, n);
  const bool gemm = n.op == OpKind::kMatMul;
  const double eff = gemm ? dev.gemm_efficiency : dev.other_efficiency;
  return std::max(c.flops / (dev.peak_flops * eff), c.bytes / dev.memory_bandwidth) +
         dev.kernel_overhead_s;
}

// Fills times, FLOPs, saved bytes and transient peak from a graph whose first `num_fwd` nodes are
// the forward. `params` are the weight inputs; `checkpoint` is the piece's input (kept under full
// recomputation); `cheap` marks forward ops that selective recomputation re-runs.
void Analyse(const Graph& g, size_t num_fwd, const std::set<int>& params, int checkpoint,
             const DeviceProfile& dev, PieceCost* out) {
  const auto& nodes = g.nodes();
  const size_t nv = g.values().size();
  std::vector<int> base(nv);
  for (size_t v = 0; v < nv; ++v) {
    const Value& val = g.values()[v];
    base[v] = (val.producer >= 0 && IsView(nodes[val.producer].op))
                  ? base[nodes[val.producer].inputs[0]]
                  : static_cast<int>(v);
  }
  std::vector<int> last_use(nv, -1);
  for (size_t i = 0; i < nodes.size(); ++i) {
    for (int v : nodes[i].inputs) last_use[base[v]] = static_cast<int>(i);
  }
  // Forward values read by the backward: saved activations.
  std::set<int> saved;
  for (size_t i = num_fwd; i < nodes.size(); ++i) {
    for (int v : nodes[i].inputs) {
      const int b = base[v];
      const int p = g.values()[b].producer;
      const bool from_forward = (p >= 0 && static_cast<size_t>(p) < num_fwd) || b == checkpoint;
      if (from_forward && !params.count(b)) saved.insert(b);
    }
  }
  double cheap_time = 0;
  int64_t cheap_bytes = 0;
  for (size_t i = 0; i < num_fwd; ++i) {
    const Node& n = nodes[i];
    const double t = OpTime(g, n, dev);
    out->fwd_time += t;
    out->fwd_flops += ops::OpCost(g, n).flops;
    out->num_ops += !IsView(n.op);
    if (n.op == OpKind::kRmsNorm || n.op == OpKind::kSwiGlu) {
      cheap_time += t;
      if (saved.count(n.outputs[0])) cheap_bytes += Bytes(g.info(n.outputs[0]));
    }
  }
  for (size_t i = num_fwd; i < nodes.size(); ++i) {
    out->bwd_time += OpTime(g, nodes[i], dev);
    out->bwd_flops += ops::OpCost(g, nodes[i]).flops;
    out->num_ops += !IsView(nodes[i].op);
  }
  int64_t saved_bytes = 0;
  for (int v : saved) saved_bytes += Bytes(g.info(v));
  out->saved_bytes[kRecomputeNone] = saved_bytes;
  out->saved_bytes[kRecomputeSelective] = saved_bytes - cheap_bytes;
  out->saved_bytes[kRecomputeFull] = checkpoint >= 0 ? Bytes(g.info(checkpoint)) : saved_bytes;
  out->recompute_time[kRecomputeSelective] = cheap_time;
  out->recompute_time[kRecomputeFull] = out->fwd_time;
  // The backward's working set beyond the saved activations, as the executor runs it: each value
  // is allocated when produced and freed after its last use (saved activations too, so the
  // backward gives back what it reads); a weight gradient is added into the stage's gradient
  // buffer as soon as it is produced and freed at once. With sharded parameters (the runtime's
  // stage programs), each weight is gathered again just before the first backward node that reads
  // it and freed after its last use, and its full gradient is held until the piece's backward ends
  // (then reduce-scattered).
  std::set<int> weight_grads;
  for (int v : g.outputs()) weight_grads.insert(base[v]);
  // What a node holds beside its outputs while it runs: on the CPU backend f32 copies of its
  // 16-bit operands; on a GPU the cross-entropy kernels' buffers and the attention backward's
  // per-row dO . O (f32, shaped as the log-sum-exp).
  auto widened = [&](const Node& n) -> int64_t {
    if (IsView(n.op)) return 0;
    if (!dev.widens_16bit && n.op == OpKind::kAttentionBackward) {
      return 4 * Numel(g.info(n.inputs[5]).shape);
    }
    if (!dev.widens_16bit) {
      // The CUDA cross-entropy's own buffers: the row labels (i64) on the device, and forward the
      // per-row losses (f32) and the f64 sum and count.
      const int64_t rows = n.op == OpKind::kCrossEntropy ? Numel(g.info(n.inputs[1]).shape)
                           : n.op == OpKind::kCrossEntropyBackward
                               ? Numel(g.info(n.inputs[2]).shape)
                               : 0;
      if (rows == 0) return 0;
      return n.op == OpKind::kCrossEntropy ? 12 * rows + 16 : 8 * rows + 4;
    }
    int64_t bytes = 0;
    for (const auto* list : {&n.inputs, &n.outputs}) {
      for (int v : *list) {
        const ValueInfo& info = g.info(v);
        if (info.dtype == DType::kBF16 || info.dtype == DType::kF16) bytes += 4 * Numel(info.shape);
      }
    }
    return bytes;
  };
  auto simulate = [&](bool sharded) {
    std::vector<int64_t> sizes(nv, 0);
    for (int v : saved) sizes[v] = Bytes(g.info(v));
    std::set<int> gathered;
    int64_t live = saved_bytes, peak = saved_bytes;
    for (size_t i = num_fwd; i < nodes.size(); ++i) {
      if (sharded) {
        for (int v : nodes[i].inputs) {
          const int b = base[v];
          if (params.count(b) && gathered.insert(b).second) {
            sizes[b] = Bytes(g.info(b));
            live += sizes[b];
          }
        }
      }
      int64_t grads_here = 0;
      for (int v : nodes[i].outputs) {
        if (base[v] != v) continue;
        if (weight_grads.count(v)) {
          if (sharded) {
            live += Bytes(g.info(v));
          } else {
            grads_here += Bytes(g.info(v));
          }
          continue;
        }
        sizes[v] = Bytes(g.info(v));
        live += sizes[v];
      }
      peak = std::max(peak, live + grads_here + widened(nodes[i]));
      for (int v : nodes[i].inputs) {
        const int b = base[v];
        if (sizes[b] > 0 && last_use[b] == static_cast<int>(i)) {
          live -= sizes[b];
          sizes[b] = 0;
        }
      }
    }
    return peak - saved_bytes;
  };
  // A forward node's widened operands sit on top of the activations saved so far.
  int64_t forward_widened = 0;
  for (size_t i = 0; i < num_fwd; ++i)
    forward_widened = std::max(forward_widened, widened(nodes[i]));
  out->transient_bytes = std::max(simulate(false), forward_widened);
  out->sharded_transient_bytes = std::max(simulate(true), forward_widened);
}

// Differentiates `out` w.r.t. `wrt` seeded by a fresh input, marking the weight gradients as graph
// outputs. Returns the number of forward nodes.
size_t AppendBackward(Graph* g, int out, const std::vector<int>& wrt, std::set<int>* grads) {
  const size_t num_fwd = g->nodes().size();
  const int seed = g->AddInput(g->info(out), "dout");
  for (int gv : runtime::BuildBackward(g, out, seed, wrt)) {
    if (gv >= 0) {
      g->MarkOutput(gv);
      grads->insert(gv);
    }
  }
  return num_fwd;
}

}  // namespace

Graph DecoderLayerGraph(const models::LlamaConfig& c, int64_t b, int64_t t, int tp, DType dt,
                        int* x, std::vector<int>* weights, int* out, int layer) {
  Graph g;
  *x = g.AddInput({dt, {b, t, c.hidden_size}}, "x");
  const int mask = g.AddInput({DType::kI64, {b, t}}, "attention_mask");
  weights->clear();
  for (const models::ParamSpec& p : models::LayerParams(c, layer)) {
    weights->push_back(g.AddInput({dt, p.TpShape(tp)}, p.name));
  }
  std::vector<std::string> names;
  for (const models::ParamSpec& p : models::LayerParams(c, layer)) names.push_back(p.name);
  models::GraphEmitter e(
      &g,
      [&](const std::string& n) {
        return (*weights)[std::find(names.begin(), names.end(), n) - names.begin()];
      },
      tp);
  *out = models::EmitDecoderLayer(e, c, layer, *x, mask);
  return g;
}

namespace {
PieceCost OneLayerCost(const models::LlamaConfig& c, int64_t b, int64_t t, int tp, DType dt,
                       const DeviceProfile& dev, int layer) {
  int x = -1, out = -1;
  std::vector<int> weights;
  Graph g = DecoderLayerGraph(c, b, t, tp, dt, &x, &weights, &out, layer);
  std::vector<int> wrt = weights;
  wrt.push_back(x);
  std::set<int> grads;
  const size_t num_fwd = AppendBackward(&g, out, wrt, &grads);
  PieceCost cost;
  Analyse(g, num_fwd, std::set<int>(weights.begin(), weights.end()), x, dev, &cost);
  for (int w : weights) cost.params += Numel(g.info(w).shape);
  cost.num_param_tensors = static_cast<int>(weights.size());
  if (tp > 1) cost.tp_allreduce_bytes = b * t * c.hidden_size * DTypeSize(dt);
  return cost;
}
}  // namespace

PieceCost DecoderLayerCost(const models::LlamaConfig& c, int64_t b, int64_t t, int tp, DType dt,
                           const DeviceProfile& dev) {
  PieceCost cost = OneLayerCost(c, b, t, tp, dt, dev, 0);
  if (c.num_hidden_layers < 2 || c.LayerWindow(1) == c.LayerWindow(0)) return cost;
  const PieceCost odd = OneLayerCost(c, b, t, tp, dt, dev, 1);
  auto mean = [](double& a, double o) { a = (a + o) / 2; };
  mean(cost.fwd_time, odd.fwd_time);
  mean(cost.bwd_time, odd.bwd_time);
  mean(cost.fwd_flops, odd.fwd_flops);
  mean(cost.bwd_flops, odd.bwd_flops);
  for (int l = 0; l < 3; ++l) {
    mean(cost.recompute_time[l], odd.recompute_time[l]);
    cost.saved_bytes[l] = std::max(cost.saved_bytes[l], odd.saved_bytes[l]);
  }
  cost.transient_bytes = std::max(cost.transient_bytes, odd.transient_bytes);
  cost.sharded_transient_bytes =
      std::max(cost.sharded_transient_bytes, odd.sharded_transient_bytes);
  return cost;
}

PieceCost HeadCost(const models::LlamaConfig& c, int64_t b, int64_t t, int tp, DType dt,
                   const DeviceProfile& dev) {
  const int64_t C = c.hidden_size, V = (c.vocab_size + tp - 1) / tp;
  Graph g;
  const int x = g.AddInput({dt, {b, t, C}}, "x");
  const int norm = g.AddInput({dt, {C}}), head = g.AddInput({dt, {V, C}});
  const int labels = g.AddInput({DType::kI64, {b, t}});
  // The definition's head (llama_def.h), with the vocabulary split tp ways when modelled so.
  models::GraphEmitter e(
      &g, [&](const std::string& n) { return n == "model.norm.weight" ? norm : head; });
  const int logits = models::EmitHead(e, c, x);
  const int loss = e.Emit(OpKind::kCrossEntropy, {logits, labels}, {{"shift", int64_t{1}}})[0];
  std::set<int> grads;
  const size_t num_fwd = AppendBackward(&g, loss, {norm, head, x}, &grads);
  PieceCost cost;
  Analyse(g, num_fwd, {norm, head}, x, dev, &cost);
  cost.params = C + (c.tie_word_embeddings ? 0 : V * C);
  cost.num_param_tensors = c.tie_word_embeddings ? 1 : 2;
  return cost;
}

PieceCost EmbeddingCost(const models::LlamaConfig& c, int64_t b, int64_t t, int tp, DType dt,
                        const DeviceProfile& dev) {
  const int64_t C = c.hidden_size, V = (c.vocab_size + tp - 1) / tp;
  PieceCost cost;
  const double bytes = static_cast<double>(b * t * C * DTypeSize(dt));
  cost.fwd_time = bytes / dev.memory_bandwidth + dev.kernel_overhead_s;
  cost.bwd_time = (2 * bytes + static_cast<double>(V * C * DTypeSize(dt))) / dev.memory_bandwidth +
                  dev.kernel_overhead_s;
  cost.params = V * C;
  cost.num_ops = 2;
  cost.num_param_tensors = 1;
  cost.transient_bytes = V * C * DTypeSize(dt);  // the dense gradient of the whole table
  if (dev.widens_16bit && DTypeSize(dt) == 2) {
    cost.transient_bytes += (V * C + b * t * C) * 4;  // its f32 copy and the incoming gradient's
  }
  cost.sharded_transient_bytes = cost.transient_bytes;
  return cost;
}

}  // namespace moreh::planner
