#include "runtime/core/graph.h"

#include <array>
#include <cstring>
#include <nlohmann/json.hpp>

#include "runtime/core/error.h"

namespace moreh {

namespace {
constexpr std::array<std::string_view, kNumOps> kOpNames = {
#define MOREH_OP(name, str) str,
#include "ops/op_list.def"
#undef MOREH_OP
};
}  // namespace

std::string_view OpName(OpKind op) {
  const auto i = static_cast<size_t>(op);
  return i < kOpNames.size() ? kOpNames[i] : "?";
}

bool ParseOpName(std::string_view name, OpKind* out) {
  for (size_t i = 0; i < kOpNames.size(); ++i) {
    if (kOpNames[i] == name) {
      *out = static_cast<OpKind>(i);
      return true;
    }
  }
  return false;
}

std::string ValueInfo::ToString() const {
  return std::string(DTypeName(dtype)) + ShapeToString(shape);
}

int Graph::AddInput(ValueInfo info, std::string name) {
  const int id = static_cast<int>(values_.size());
  values_.push_back({std::move(info), -1, 0, std::move(name)});
  inputs_.push_back(id);
  return id;
}

std::vector<int> Graph::AddNode(OpKind op, std::vector<int> inputs, Attrs attrs,
                                std::vector<ValueInfo> output_infos) {
  for (int v : inputs) {
    MOREH_CHECK(v >= 0 && v < static_cast<int>(values_.size()), "{}: input value {} not in graph",
                OpName(op), v);
  }
  const int node = static_cast<int>(nodes_.size());
  std::vector<int> outs;
  for (size_t i = 0; i < output_infos.size(); ++i) {
    outs.push_back(static_cast<int>(values_.size()));
    values_.push_back({std::move(output_infos[i]), node, static_cast<int>(i), ""});
  }
  nodes_.push_back({op, std::move(inputs), outs, std::move(attrs)});
  return outs;
}

void Graph::MarkOutput(int v) {
  MOREH_CHECK(v >= 0 && v < static_cast<int>(values_.size()), "Graph: output value {} not in graph",
              v);
  outputs_.push_back(v);
}

const Value& Graph::value(int id) const {
  MOREH_CHECK(id >= 0 && id < static_cast<int>(values_.size()), "Graph: value {} not in graph", id);
  return values_[id];
}

void Graph::set_name(int v, std::string name) {
  MOREH_CHECK(v >= 0 && v < static_cast<int>(values_.size()), "Graph: value {} not in graph", v);
  values_[v].name = std::move(name);
}

// --- Hash: FNV-1a over a canonical walk; stable across processes and platforms. -----------------
namespace {
struct Hasher {
  uint64_t h = 1469598103934665603ull;
  void Bytes(const void* p, size_t n) {
    const auto* b = static_cast<const unsigned char*>(p);
    for (size_t i = 0; i < n; ++i) {
      h ^= b[i];
      h *= 1099511628211ull;
    }
  }
  void I(int64_t v) { Bytes(&v, sizeof v); }
  void S(std::string_view s) {
    I(static_cast<int64_t>(s.size()));
    Bytes(s.data(), s.size());
  }
  void Info(const ValueInfo& info) {
    I(static_cast<int64_t>(info.dtype));
    I(static_cast<int64_t>(info.shape.size()));
    for (int64_t d : info.shape) I(d);
  }
};
}  // namespace

uint64_t Graph::StructuralHash() const {
  Hasher h;
  h.I(static_cast<int64_t>(values_.size()));
  for (int v : inputs_) {
    h.I(v);
    h.Info(values_[v].info);
  }
  for (const Node& n : nodes_) {
    h.S(OpName(n.op));
    h.I(static_cast<int64_t>(n.inputs.size()));
    for (int v : n.inputs) h.I(v);
    h.I(static_cast<int64_t>(n.outputs.size()));
    for (int v : n.outputs) {
      h.I(v);
      h.Info(values_[v].info);
    }
    for (const auto& [k, val] : n.attrs.items()) {
      h.S(k);
      h.I(static_cast<int64_t>(val.index()));
      std::visit(
          [&](const auto& x) {
            using T = std::decay_t<decltype(x)>;
            if constexpr (std::is_same_v<T, int64_t>)
              h.I(x);
            else if constexpr (std::is_same_v<T, double>)
              h.Bytes(&x, sizeof x);
            else if constexpr (std::is_same_v<T, std::string>)
              h.S(x);
            else {
              h.I(static_cast<int64_t>(x.size()));
              for (int64_t e : x) h.I(e);
            }
          },
          val);
    }
  }
  h.I(-1);
  for (int v : outputs_) h.I(v);
  return h.h;
}

// --- JSON ----------------------------------------------------------------------------------------
// {"format": "moreh-graph", "version": 1,
//  "values": [{"dtype": "f32", "shape": [2, 3], "name": "..."}],      (producers follow from nodes)
//  "inputs": [0, 1], "outputs": [7],
//  "nodes": [{"op": "matmul", "inputs": [0, 1], "outputs": [2], "attrs": {"trans_b": {"int": 1}}}]}
using json = nlohmann::json;

std::string Graph::ToJson(int indent) const {
  json j;
  j["format"] = "moreh-graph";
  j["version"] = 1;
  json values = json::array();
  for (const Value& v : values_) {
    json jv = {{"dtype", DTypeName(v.info.dtype)}, {"shape", v.info.shape}};
    if (!v.name.empty()) jv["name"] = v.name;
    values.push_back(std::move(jv));
  }
  j["values"] = std::move(values);
  j["inputs"] = inputs_;
  j["outputs"] = outputs_;
  json nodes = json::array();
  for (const Node& n : nodes_) {
    json attrs = json::object();
    for (const auto& [k, val] : n.attrs.items()) {
      std::visit(
          [&](const auto& x) {
            using T = std::decay_t<decltype(x)>;
            if constexpr (std::is_same_v<T, int64_t>)
              attrs[k] = {{"int", x}};
            else if constexpr (std::is_same_v<T, double>)
              attrs[k] = {{"float", x}};
            else if constexpr (std::is_same_v<T, std::string>)
              attrs[k] = {{"str", x}};
            else
              attrs[k] = {{"ints", x}};
          },
          val);
    }
    nodes.push_back({{"op", OpName(n.op)},
                     {"inputs", n.inputs},
                     {"outputs", n.outputs},
                     {"attrs", std::move(attrs)}});
  }
  j["nodes"] = std::move(nodes);
  return j.dump(indent);
}

namespace {
Status Bad(const std::string& what) { return Status::InvalidArgument("graph JSON: " + what); }
}  // namespace

StatusOr<Graph> Graph::FromJson(std::string_view text) {
  json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return Bad("not valid JSON");
  try {
    if (!j.is_object() || j.value("format", "") != "moreh-graph")
      return Bad("missing \"format\": \"moreh-graph\"");
    if (j.value("version", 0) != 1) return Bad("unsupported version");
    Graph g;
    const json& values = j.at("values");
    if (!values.is_array()) return Bad("\"values\" is not an array");
    g.values_.resize(values.size());
    for (size_t i = 0; i < values.size(); ++i) {
      const json& jv = values[i];
      DType dt;
      if (!ParseDType(jv.at("dtype").get<std::string>(), &dt))
        return Bad(fmt::format("value {}: unknown dtype", i));
      g.values_[i].info.dtype = dt;
      g.values_[i].info.shape = jv.at("shape").get<Shape>();
      for (int64_t d : g.values_[i].info.shape) {
        if (d < 0) return Bad(fmt::format("value {}: negative dimension", i));
      }
      g.values_[i].name = jv.value("name", "");
    }
    const int nv = static_cast<int>(values.size());
    auto check_id = [&](int v) { return v >= 0 && v < nv; };
    for (int v : j.at("inputs").get<std::vector<int>>()) {
      if (!check_id(v)) return Bad(fmt::format("input id {} out of range", v));
      g.inputs_.push_back(v);
    }
    for (const json& jn : j.at("nodes")) {
      Node n;
      if (!ParseOpName(jn.at("op").get<std::string>(), &n.op)) {
        return Bad("unknown op '" + jn.at("op").get<std::string>() + "'");
      }
      n.inputs = jn.at("inputs").get<std::vector<int>>();
      n.outputs = jn.at("outputs").get<std::vector<int>>();
      for (const auto& [k, jval] : jn.at("attrs").items()) {
        if (!jval.is_object() || jval.size() != 1) return Bad("attribute '" + k + "' is malformed");
        const auto& [type, x] = *jval.items().begin();
        if (type == "int")
          n.attrs.Set(k, x.get<int64_t>());
        else if (type == "float")
          n.attrs.Set(k, x.get<double>());
        else if (type == "str")
          n.attrs.Set(k, x.get<std::string>());
        else if (type == "ints")
          n.attrs.Set(k, x.get<std::vector<int64_t>>());
        else
          return Bad("attribute '" + k + "' has unknown type '" + type + "'");
      }
      const int node = static_cast<int>(g.nodes_.size());
      for (size_t o = 0; o < n.outputs.size(); ++o) {
        const int v = n.outputs[o];
        if (!check_id(v)) return Bad(fmt::format("node {}: output id {} out of range", node, v));
        g.values_[v].producer = node;
        g.values_[v].output_index = static_cast<int>(o);
      }
      g.nodes_.push_back(std::move(n));
    }
    for (int v : j.at("outputs").get<std::vector<int>>()) {
      if (!check_id(v)) return Bad(fmt::format("output id {} out of range", v));
      g.outputs_.push_back(v);
    }
    Status s = g.Validate();
    if (!s.ok()) return s;
    return g;
  } catch (const std::exception& e) {
    return Bad(e.what());
  }
}

Status Graph::Validate() const {
  const int nv = static_cast<int>(values_.size());
  std::vector<char> defined(nv, 0), is_input(nv, 0);
  for (int v : inputs_) {
    if (v < 0 || v >= nv)
      return Status::InvalidArgument(fmt::format("graph: input {} out of range", v));
    if (values_[v].producer != -1 || is_input[v]) {
      return Status::InvalidArgument(fmt::format("graph: value {} is an input and produced", v));
    }
    is_input[v] = defined[v] = 1;
  }
  for (size_t i = 0; i < nodes_.size(); ++i) {
    const Node& n = nodes_[i];
    for (int v : n.inputs) {
      if (v < 0 || v >= nv || !defined[v]) {
        return Status::InvalidArgument(fmt::format(
            "graph: node {} ({}) uses value {} before it is defined", i, OpName(n.op), v));
      }
    }
    for (int v : n.outputs) {
      if (v < 0 || v >= nv || defined[v] || values_[v].producer != static_cast<int>(i)) {
        return Status::InvalidArgument(
            fmt::format("graph: node {} ({}) output {} is defined twice", i, OpName(n.op), v));
      }
      defined[v] = 1;
    }
  }
  for (int v = 0; v < nv; ++v) {
    if (!defined[v])
      return Status::InvalidArgument(fmt::format("graph: value {} has no producer", v));
  }
  for (int v : outputs_) {
    if (v < 0 || v >= nv)
      return Status::InvalidArgument(fmt::format("graph: output {} out of range", v));
  }
  return Status::Ok();
}

}  // namespace moreh
