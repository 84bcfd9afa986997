// Graph: the lazily recorded program of a training step, as data.
//
// Values are numbered 0..N-1; each carries a dtype and shape, and is either a graph input (fed by
// the caller: parameters, data, optimizer state) or the output of exactly one node. Nodes are kept
// in recording order, which is a topological order. A graph serializes to JSON and back exactly,
// and has a structural hash (ops, attributes, edges, dtypes, shapes; not names) so a step recorded
// again hits the compiled-graph cache. Not thread-safe; one recorder owns a graph while it is
// built.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/core/attrs.h"
#include "runtime/core/dtype.h"
#include "runtime/core/shape.h"
#include "runtime/core/status.h"

namespace moreh {

enum class OpKind : uint16_t {
#define MOREH_OP(name, str) k##name,
#include "ops/op_list.def"
#undef MOREH_OP
};
inline constexpr int kNumOps = 0
#define MOREH_OP(name, str) +1
#include "ops/op_list.def"
#undef MOREH_OP
    ;
std::string_view OpName(OpKind op);
bool ParseOpName(std::string_view name, OpKind* out);

struct ValueInfo {
  DType dtype = DType::kF32;
  Shape shape;
  bool operator==(const ValueInfo& o) const { return dtype == o.dtype && shape == o.shape; }
  std::string ToString() const;  // "f32[2, 3]"
};

struct Value {
  ValueInfo info;
  int producer = -1;     // node index, or -1 for a graph input
  int output_index = 0;  // which output of the producer
  std::string name;      // optional (parameter names); not part of the hash
};

struct Node {
  OpKind op;
  std::vector<int> inputs;   // value ids
  std::vector<int> outputs;  // value ids
  Attrs attrs;
};

class Graph {
 public:
  int AddInput(ValueInfo info, std::string name = "");
  // Appends a node whose output infos the caller has inferred (see ops::GraphBuilder).
  std::vector<int> AddNode(OpKind op, std::vector<int> inputs, Attrs attrs,
                           std::vector<ValueInfo> output_infos);
  void MarkOutput(int value);

  const std::vector<Value>& values() const { return values_; }
  const std::vector<Node>& nodes() const { return nodes_; }
  const std::vector<int>& inputs() const { return inputs_; }
  const std::vector<int>& outputs() const { return outputs_; }
  const Value& value(int id) const;
  const ValueInfo& info(int id) const { return value(id).info; }
  void set_name(int value, std::string name);

  uint64_t StructuralHash() const;
  std::string ToJson(int indent = -1) const;
  static StatusOr<Graph> FromJson(std::string_view json);
  // Ids in range, every node input defined before use, inputs/outputs consistent.
  Status Validate() const;

 private:
  std::vector<Value> values_;
  std::vector<Node> nodes_;
  std::vector<int> inputs_;
  std::vector<int> outputs_;
};

}  // namespace moreh
