// Where a model definition (llama_def.h) puts its nodes: an Emitter. The same definition emits
// into the user's lazy graph (LazyEmitter: the in-process model), into a stage program's graph
// (GraphEmitter: parallel/stage_graph.cc) and into the planner's cost graphs
// (planner/layer_cost.cc), so the three cannot disagree. Values are opaque handles (Val); a
// weight is asked for by its Hugging Face name and comes back as the computation reads it (cast
// to the compute dtype, gathered from its shards: the emitter's business).
#pragma once

#include <functional>
#include <string>
#include <unordered_map>
#include <vector>

#include "ops/op.h"
#include "runtime/core/attrs.h"
#include "runtime/core/graph.h"
#include "runtime/tensor.h"

namespace moreh::models {

using Val = int;
inline constexpr Val kNoVal = -1;

class Emitter {
 public:
  virtual ~Emitter() = default;
  virtual std::vector<Val> Emit(OpKind op, const std::vector<Val>& inputs, Attrs attrs = {}) = 0;
  virtual ValueInfo Info(Val v) const = 0;
  // The weight `name` as the computation reads it; the same Val for every use.
  virtual Val Weight(const std::string& name) = 0;
  // Tensor parallelism: the ranks the emitted computation is split over (1: none).
  virtual int tp() const { return 1; }

  Val Emit1(OpKind op, const std::vector<Val>& inputs, Attrs attrs = {}) {
    return Emit(op, inputs, std::move(attrs)).at(0);
  }
  Val Reshape(Val v, Shape shape) { return Emit1(OpKind::kReshape, {v}, {{"shape", shape}}); }
  Val Add(Val a, Val b) { return Emit1(OpKind::kAdd, {a, b}); }
  // x W^T, as nn.Linear.
  Val Linear(Val x, Val w) {
    return Emit1(OpKind::kMatMul, {x, w}, {{"trans_a", int64_t{0}}, {"trans_b", int64_t{1}}});
  }
  // Megatron-LM's f (before column-parallel projections) and g (after row-parallel ones):
  // identities without tensor parallelism.
  Val TpCopy(Val v) { return tp() > 1 ? Emit1(OpKind::kTpCopy, {v}) : v; }
  Val TpReduce(Val v) { return tp() > 1 ? Emit1(OpKind::kTpReduce, {v}) : v; }
};

// Into a Graph: Vals are its value ids; weights come from `weight` (a graph input, a gather).
class GraphEmitter : public Emitter {
 public:
  GraphEmitter(Graph* g, std::function<Val(const std::string&)> weight, int tp = 1)
      : gb_(g), weight_(std::move(weight)), tp_(tp) {}
  std::vector<Val> Emit(OpKind op, const std::vector<Val>& inputs, Attrs attrs = {}) override {
    return gb_.Emit(op, inputs, std::move(attrs));
  }
  ValueInfo Info(Val v) const override { return gb_.info(v); }
  Val Weight(const std::string& name) override;
  int tp() const override { return tp_; }
  ops::GraphBuilder& builder() { return gb_; }

 private:
  ops::GraphBuilder gb_;
  std::function<Val(const std::string&)> weight_;
  std::unordered_map<std::string, Val> weights_;
  int tp_;
};

// A parameter sharded `shards` ways over the data-parallel replicas (distribute_low_prec_param):
// the flat shard each replica holds, and the gather that rebuilds the full tensor where the
// computation reads it. The stage programs (parallel/stage_graph.cc) and the planner's cost graphs
// (planner/layer_cost.cc) both read sharded parameters through these. shards 1: the parameter
// itself.
Shape ParamShardShape(const Shape& full, int shards);
Val GatherParam(ops::GraphBuilder& gb, Val shard, const Shape& full, int shards);

// Into the thread's lazy graph (runtime/lazy.h): Vals index the tensors it holds.
class LazyEmitter : public Emitter {
 public:
  explicit LazyEmitter(std::function<Tensor(const std::string&)> weight)
      : weight_(std::move(weight)) {}
  std::vector<Val> Emit(OpKind op, const std::vector<Val>& inputs, Attrs attrs = {}) override;
  ValueInfo Info(Val v) const override;
  Val Weight(const std::string& name) override;
  // A tensor from outside the definition (token ids, a mask) as a Val.
  Val Hold(const Tensor& t);
  const Tensor& tensor(Val v) const { return tensors_.at(static_cast<size_t>(v)); }

 private:
  std::function<Tensor(const std::string&)> weight_;
  std::unordered_map<std::string, Val> weights_;
  std::vector<Tensor> tensors_;
};

}  // namespace moreh::models
