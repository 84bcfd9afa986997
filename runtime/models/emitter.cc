#include "runtime/models/emitter.h"

#include "runtime/core/error.h"
#include "runtime/lazy.h"

namespace moreh::models {

Shape ParamShardShape(const Shape& full, int shards) {
  return shards == 1 ? full : Shape{(Numel(full) + shards - 1) / shards};
}

Val GatherParam(ops::GraphBuilder& gb, Val shard, const Shape& full, int shards) {
  if (shards == 1) return shard;
  return gb.Emit1(OpKind::kDpGather, {shard}, {{"shape", full}, {"dp", int64_t{shards}}});
}

Val GraphEmitter::Weight(const std::string& name) {
  auto it = weights_.find(name);
  if (it != weights_.end()) return it->second;
  const Val v = weight_(name);
  weights_[name] = v;
  return v;
}

std::vector<Val> LazyEmitter::Emit(OpKind op, const std::vector<Val>& inputs, Attrs attrs) {
  std::vector<Tensor> in;
  in.reserve(inputs.size());
  for (Val v : inputs) in.push_back(tensor(v));
  std::vector<Val> out;
  for (Tensor& t : lazy::Record(op, in, std::move(attrs))) out.push_back(Hold(t));
  return out;
}

ValueInfo LazyEmitter::Info(Val v) const {
  const Tensor& t = tensor(v);
  return {t.dtype(), t.shape()};
}

Val LazyEmitter::Weight(const std::string& name) {
  auto it = weights_.find(name);
  if (it != weights_.end()) return it->second;
  const Val v = Hold(weight_(name));
  weights_[name] = v;
  return v;
}

Val LazyEmitter::Hold(const Tensor& t) {
  MOREH_CHECK(t.defined(), "a model definition read an undefined tensor");
  tensors_.push_back(t);
  return static_cast<Val>(tensors_.size() - 1);
}

}  // namespace moreh::models
