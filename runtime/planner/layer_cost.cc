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

// A view op's output shares its input's buffer (reshape, transpose, expand, the tensor-parallel
// copy): no memory of its own.
bool IsView(OpKind op) { return static_cast<bool>(ops::GetOpDef(op).view); }

int64_t Bytes(const ValueInfo& v) { return Numel(v.shape) * DTypeSize(v.dtype); }

double OpTime(const Graph& g, const Node& n, const DeviceProfile& dev) {
  if (IsView(n.op) || n.op == OpKind::kFill) return 0;
  const ops::Cost c = ops::OpCost(g, n);
  const bool gemm = n.op == OpKind::kMatMul;
  const double eff = gemm ? dev.gemm_efficiency : dev.other_efficiency;
  return std::max(c.flops / (dev.peak_flops * eff), c.bytes / dev.memory_bandwidth) +
         dev.kernel_overhead_s;
}

// What a node holds beside its outputs while it runs: on the CPU backend f32 copies of its 16-bit
// operands; on a GPU the cross-entropy kernels' buffers and the attention backward's per-row
// dO . O (f32, shaped as the log-sum-exp).
int64_t Widened(const Graph& g, const Node& n, const DeviceProfile& dev) {
  if (IsView(n.op)) return 0;
  // The collectives move the bytes as they are (ops/data_parallel.cc, tensor_parallel.cc); a
  // sharded parameter whose size the group does not divide goes through a padded copy.
  if (n.op == OpKind::kTpReduce) return 0;
  if (n.op == OpKind::kDpGather || n.op == OpKind::kDpReduceScatter) {
    const bool gather = n.op == OpKind::kDpGather;
    const ValueInfo& shard = g.info(gather ? n.inputs[0] : n.outputs[0]);
    const ValueInfo& full = g.info(gather ? n.outputs[0] : n.inputs[0]);
    const int64_t padded = n.attrs.GetInt("dp") * Numel(shard.shape);
    return padded == Numel(full.shape) ? 0 : padded * DTypeSize(full.dtype);
  }
  if (!dev.widens_16bit && n.op == OpKind::kAttentionBackward) {
    return 4 * Numel(g.info(n.inputs[5]).shape);
  }
  if (!dev.widens_16bit) {
    // The CUDA cross-entropy's own buffers: the row labels (i64) on the device, and forward the
    // per-row losses (f32) and the f64 sum and count.
    const int64_t rows = n.op == OpKind::kCrossEntropy           ? Numel(g.info(n.inputs[1]).shape)
                         : n.op == OpKind::kCrossEntropyBackward ? Numel(g.info(n.inputs[2]).shape)
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
}

// One piece's graph: the forward (nodes [0, num_fwd)) from its input `x` and its weights, then the
// backward seeded by `dout`; `dx` the gradient for x (-1: none), every other graph output a weight
// gradient (the backward program adds each into the stage's gradient buffer as soon as it is
// produced, and frees it).
struct PieceGraph {
  Graph g;
  size_t num_fwd = 0;
  int x = -1, out = -1, dout = -1, dx = -1;
  int layer_begin = 0, layer_end = 0;  // the nodes recomputation applies to
};

// The memory of a piece's two programs at one recomputation level, as the executor runs them:
// each value allocated when produced (a view shares its input's buffer; an in-place output takes
// its input's when that is its last use) and freed after its last use; what the backward reads
// from the forward kept between the two. saved: bytes kept per micro-batch; transient: the most
// the piece adds beyond them, in its forward or its backward (recomputed values included).
struct ProgramMemory {
  int64_t saved = 0, transient = 0;
  double recompute_time = 0;
};

ProgramMemory SimulatePrograms(const PieceGraph& pg, int level, const DeviceProfile& dev) {
  const Graph& g = pg.g;
  const auto& nodes = g.nodes();
  const size_t nv = g.values().size();
  const int nf = static_cast<int>(pg.num_fwd);
  std::vector<int> base(nv);
  for (size_t v = 0; v < nv; ++v) {
    const Value& val = g.values()[v];
    base[v] = (val.producer >= 0 && IsView(nodes[val.producer].op))
                  ? base[nodes[val.producer].inputs[0]]
                  : static_cast<int>(v);
  }
  const RecomputeCut cut = CutForRecompute(g, nf, pg.layer_begin, pg.layer_end, {}, level);
  // Kept from the forward: the cut's saved values and the piece's input where the backward reads
  // it (a layer's input is the previous layer's output, saved there).
  std::set<int> kept;
  for (int v : cut.saved) kept.insert(base[v]);
  for (int i : cut.backward_nodes) {
    for (int v : nodes[i].inputs) {
      if (base[v] == base[pg.x]) kept.insert(base[pg.x]);
    }
  }
  ProgramMemory m;
  for (int v : kept) m.saved += Bytes(g.info(v));
  for (int i : cut.backward_nodes) {
    if (i < nf) m.recompute_time += OpTime(g, nodes[i], dev);
  }
  std::set<int> weight_grads;
  for (int v : g.outputs()) {
    if (v != pg.dx) weight_grads.insert(base[v]);
  }
  // Runs `order`; `live` starts with the bytes in `sizes`; values in `keep` are never freed.
  auto run = [&](const std::vector<int>& order, std::vector<int64_t> sizes, int64_t live,
                 const std::set<int>& keep) {
    std::vector<int> last_use(nv, -1);
    for (size_t k = 0; k < order.size(); ++k) {
      for (int v : nodes[order[k]].inputs) last_use[base[v]] = static_cast<int>(k);
    }
    int64_t peak = live;
    for (size_t k = 0; k < order.size(); ++k) {
      const Node& n = nodes[order[k]];
      const ops::OpDef& def = ops::GetOpDef(n.op);
      int64_t grads_here = 0;
      for (size_t o = 0; o < n.outputs.size(); ++o) {
        const int v = n.outputs[o];
        if (base[v] != v) continue;  // a view
        const int64_t b = Bytes(g.info(v));
        if (weight_grads.count(v)) {
          grads_here += b;
          continue;
        }
        bool donated = false;
        for (const auto& [out, in] : def.inplace) {
          const int src = base[n.inputs[in]];
          if (out == static_cast<int>(o) && last_use[src] == static_cast<int>(k) &&
              !keep.count(src) && sizes[src] == b) {
            sizes[src] = 0;  // the buffer changes hands
            donated = true;
          }
        }
        sizes[v] = b;
        if (!donated) live += b;
      }
      peak = std::max(peak, live + grads_here + Widened(g, n, dev));
      for (int v : n.inputs) {
        const int b = base[v];
        if (sizes[b] > 0 && last_use[b] == static_cast<int>(k) && !keep.count(b)) {
          live -= sizes[b];
          sizes[b] = 0;
        }
      }
      for (int v : n.outputs) {  // nobody reads it
        const int b = base[v];
        if (b == v && sizes[b] > 0 && last_use[b] < 0 && !keep.count(b)) {
          live -= sizes[b];
          sizes[b] = 0;
        }
      }
    }
    return peak;
  };
  std::vector<int64_t> sizes(nv, 0);
  // Forward: the input, then the layer; what the backward reads, and the output (the next piece's
  // input), stay.
  std::vector<int> fwd_order;
  for (int i = 0; i < nf; ++i) fwd_order.push_back(i);
  std::set<int> fwd_keep = kept;
  fwd_keep.insert(base[pg.out]);
  fwd_keep.insert(base[pg.x]);
  sizes[base[pg.x]] = Bytes(g.info(pg.x));
  const int64_t fwd_peak = run(fwd_order, sizes, sizes[base[pg.x]], fwd_keep);
  // Backward: the kept values and the incoming gradient; the gradient for the input stays (it is
  // the previous piece's incoming gradient).
  std::fill(sizes.begin(), sizes.end(), 0);
  int64_t live = 0;
  for (int v : kept) live += (sizes[v] = Bytes(g.info(v)));
  if (pg.dout >= 0) live += (sizes[base[pg.dout]] = Bytes(g.info(pg.dout)));
  std::set<int> bwd_keep;
  if (pg.dx >= 0) bwd_keep.insert(base[pg.dx]);
  const int64_t bwd_peak = run(cut.backward_nodes, sizes, live, bwd_keep);
  m.transient = std::max<int64_t>(0, std::max(fwd_peak, bwd_peak) - m.saved);
  return m;
}

// Fills times, FLOPs, saved bytes, the recomputation's extra time and the transient peaks per
// level from the piece's graph, and from its graph with sharded (gathered) parameters.
void Analyse(const PieceGraph& pg, const PieceGraph* sharded, const DeviceProfile& dev,
             PieceCost* out) {
  const Graph& g = pg.g;
  const auto& nodes = g.nodes();
  for (size_t i = 0; i < nodes.size(); ++i) {
    const Node& n = nodes[i];
    const double t = OpTime(g, n, dev);
    const double f = ops::OpCost(g, n).flops;
    (i < pg.num_fwd ? out->fwd_time : out->bwd_time) += t;
    (i < pg.num_fwd ? out->fwd_flops : out->bwd_flops) += f;
    out->num_ops += !IsView(n.op);
  }
  for (int level = kRecomputeNone; level <= kRecomputeFull; ++level) {
    const ProgramMemory m = SimulatePrograms(pg, level, dev);
    out->saved_bytes[level] = m.saved;
    out->transient_bytes[level] = m.transient;
    out->recompute_time[level] = m.recompute_time;
    out->sharded_transient_bytes[level] =
        sharded != nullptr ? SimulatePrograms(*sharded, level, dev).transient : m.transient;
  }
}

// Differentiates pg->g's output `out` w.r.t. `wrt` (x last when given) seeded by a fresh input,
// marking the gradients as graph outputs.
void AppendBackward(PieceGraph* pg, int out, const std::vector<int>& wrt) {
  pg->num_fwd = pg->g.nodes().size();
  pg->dout = pg->g.AddInput(pg->g.info(out), "dout");
  const std::vector<int> grads = runtime::BuildBackward(&pg->g, out, pg->dout, wrt);
  for (size_t k = 0; k < grads.size(); ++k) {
    if (grads[k] < 0) continue;
    pg->g.MarkOutput(grads[k]);
    if (wrt[k] == pg->x) pg->dx = grads[k];
  }
}

}  // namespace

Graph DecoderLayerGraph(const models::LlamaConfig& c, int64_t b, int64_t t, int tp, DType dt,
                        int* x, std::vector<int>* weights, int* out, int layer, int param_shards) {
  Graph g;
  ops::GraphBuilder gb(&g);
  *x = g.AddInput({dt, {b, t, c.hidden_size}}, "x");
  const int mask = g.AddInput({DType::kI64, {b, t}}, "attention_mask");
  weights->clear();
  const std::vector<models::ParamSpec> specs = models::LayerParams(c, layer);
  for (const models::ParamSpec& p : specs) {
    weights->push_back(
        g.AddInput({dt, models::ParamShardShape(p.TpShape(tp), param_shards)}, p.name));
  }
  models::GraphEmitter e(
      &g,
      [&](const std::string& n) {
        const auto it =
            std::find_if(specs.begin(), specs.end(), [&](const auto& p) { return p.name == n; });
        const size_t k = static_cast<size_t>(it - specs.begin());
        return models::GatherParam(gb, (*weights)[k], it->TpShape(tp), param_shards);
      },
      tp);
  *out = models::EmitDecoderLayer(e, c, layer, *x, mask);
  return g;
}

namespace {
PieceGraph LayerPiece(const models::LlamaConfig& c, int64_t b, int64_t t, int tp, DType dt,
                      int layer, int param_shards, std::vector<int>* weights) {
  PieceGraph pg;
  int out = -1;
  pg.g = DecoderLayerGraph(c, b, t, tp, dt, &pg.x, weights, &out, layer, param_shards);
  pg.out = out;
  pg.layer_begin = 0;
  pg.layer_end = static_cast<int>(pg.g.nodes().size());
  std::vector<int> wrt = *weights;
  wrt.push_back(pg.x);
  AppendBackward(&pg, out, wrt);
  return pg;
}

PieceCost OneLayerCost(const models::LlamaConfig& c, int64_t b, int64_t t, int tp, DType dt,
                       const DeviceProfile& dev, int layer, int param_shards) {
  std::vector<int> weights, sharded_weights;
  const PieceGraph pg = LayerPiece(c, b, t, tp, dt, layer, 1, &weights);
  PieceCost cost;
  if (param_shards > 1) {
    const PieceGraph sharded = LayerPiece(c, b, t, tp, dt, layer, param_shards, &sharded_weights);
    Analyse(pg, &sharded, dev, &cost);
  } else {
    Analyse(pg, nullptr, dev, &cost);
  }
  for (int w : weights) cost.params += Numel(pg.g.info(w).shape);
  cost.num_param_tensors = static_cast<int>(weights.size());
  if (tp > 1) cost.tp_allreduce_bytes = b * t * c.hidden_size * DTypeSize(dt);
  return cost;
}
}  // namespace

PieceCost DecoderLayerCost(const models::LlamaConfig& c, int64_t b, int64_t t, int tp, DType dt,
                           const DeviceProfile& dev, int param_shards) {
  PieceCost cost = OneLayerCost(c, b, t, tp, dt, dev, 0, param_shards);
  if (c.num_hidden_layers < 2 || c.LayerWindow(1) == c.LayerWindow(0)) return cost;
  const PieceCost odd = OneLayerCost(c, b, t, tp, dt, dev, 1, param_shards);
  auto mean = [](double& a, double o) { a = (a + o) / 2; };
  mean(cost.fwd_time, odd.fwd_time);
  mean(cost.bwd_time, odd.bwd_time);
  mean(cost.fwd_flops, odd.fwd_flops);
  mean(cost.bwd_flops, odd.bwd_flops);
  for (int l = 0; l < 3; ++l) {
    mean(cost.recompute_time[l], odd.recompute_time[l]);
    cost.saved_bytes[l] = std::max(cost.saved_bytes[l], odd.saved_bytes[l]);
    cost.transient_bytes[l] = std::max(cost.transient_bytes[l], odd.transient_bytes[l]);
    cost.sharded_transient_bytes[l] =
        std::max(cost.sharded_transient_bytes[l], odd.sharded_transient_bytes[l]);
  }
  return cost;
}

namespace {
PieceGraph HeadPiece(const models::LlamaConfig& c, int64_t b, int64_t t, int64_t V, DType dt,
                     int param_shards) {
  const int64_t C = c.hidden_size;
  PieceGraph pg;
  Graph& g = pg.g;
  ops::GraphBuilder gb(&g);
  pg.x = g.AddInput({dt, {b, t, C}}, "x");
  const int norm = g.AddInput({dt, models::ParamShardShape({C}, param_shards)});
  const int head = g.AddInput({dt, models::ParamShardShape({V, C}, param_shards)});
  const int labels = g.AddInput({DType::kI64, {b, t}});
  // The definition's head (llama_def.h), with the vocabulary split tp ways when modelled so.
  models::GraphEmitter e(&g, [&](const std::string& n) {
    return n == "model.norm.weight" ? models::GatherParam(gb, norm, {C}, param_shards)
                                    : models::GatherParam(gb, head, {V, C}, param_shards);
  });
  const int logits = models::EmitHead(e, c, pg.x);
  const int loss = e.Emit(OpKind::kCrossEntropy, {logits, labels}, {{"shift", int64_t{1}}})[0];
  pg.out = loss;
  AppendBackward(&pg, loss, {norm, head, pg.x});
  return pg;
}
}  // namespace

PieceCost HeadCost(const models::LlamaConfig& c, int64_t b, int64_t t, int tp, DType dt,
                   const DeviceProfile& dev, int param_shards) {
  const int64_t C = c.hidden_size, V = (c.vocab_size + tp - 1) / tp;
  const PieceGraph pg = HeadPiece(c, b, t, V, dt, 1);
  PieceCost cost;
  if (param_shards > 1) {
    const PieceGraph sharded = HeadPiece(c, b, t, V, dt, param_shards);
    Analyse(pg, &sharded, dev, &cost);
  } else {
    Analyse(pg, nullptr, dev, &cost);
  }
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
  int64_t transient = V * C * DTypeSize(dt);  // the dense gradient of the whole table
  if (dev.widens_16bit && DTypeSize(dt) == 2) {
    transient += (V * C + b * t * C) * 4;  // its f32 copy and the incoming gradient's
  }
  for (int l = 0; l < 3; ++l) cost.transient_bytes[l] = cost.sharded_transient_bytes[l] = transient;
  return cost;
}

}  // namespace moreh::planner
