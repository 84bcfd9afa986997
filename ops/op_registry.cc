// The registry: one table entry per line of ops/op_list.def, checked against it at compile time.
#include <array>

#include "ops/op.h"

namespace moreh::ops {

namespace {
const std::array<const OpDef*, kNumOps> kTable = {
#define MOREH_OP(name, str) &k##name##Def,
#include "ops/op_list.def"
#undef MOREH_OP
};
static_assert(kTable.size() == static_cast<size_t>(kNumOps));
}  // namespace

const OpDef& GetOpDef(OpKind op) {
  const auto i = static_cast<size_t>(op);
  MOREH_CHECK(i < kTable.size(), "unknown op kind {}", i);
  const OpDef& d = *kTable[i];
  MOREH_CHECK(d.kind == op, "op registry out of order at {}", OpName(op));
  return d;
}

namespace {
// Written once per backend (before the backend's first graph runs), then only read.
std::array<std::array<OpDef::Kernel, kNumBackends>, kNumOps>& Registered() {
  static std::array<std::array<OpDef::Kernel, kNumBackends>, kNumOps> table;
  return table;
}
}  // namespace

const OpDef::Kernel& KernelFor(OpKind op, Backend backend) {
  const OpDef& d = GetOpDef(op);
  const auto b = static_cast<size_t>(backend);
  return d.kernels[b] ? d.kernels[b] : Registered()[static_cast<size_t>(op)][b];
}

void RegisterKernel(OpKind op, Backend backend, OpDef::Kernel kernel) {
  Registered()[static_cast<size_t>(op)][static_cast<size_t>(backend)] = std::move(kernel);
}

std::vector<ValueInfo> InferOutputs(OpKind op, const InfoList& in, const Attrs& attrs) {
  const OpDef& d = GetOpDef(op);
  const int n = static_cast<int>(in.size());
  if (n < d.min_inputs || n > d.max_inputs) {
    OpError(op, in, fmt::format("takes {} to {} inputs, got {}", d.min_inputs, d.max_inputs, n));
  }
  try {
    return d.infer(in, attrs);
  } catch (const Error& e) {
    const std::string msg = e.what();
    if (msg.rfind(std::string(OpName(op)), 0) == 0) throw;
    OpError(op, in, msg + " (attrs " + attrs.ToString() + ")");
  }
}

Cost OpCost(const Graph& g, const Node& node) {
  InfoList in;
  for (int v : node.inputs) in.push_back(&g.info(v));
  std::vector<ValueInfo> out;
  for (int v : node.outputs) out.push_back(g.info(v));
  return GetOpDef(node.op).cost(in, out, node.attrs);
}

void OpError(OpKind op, const InfoList& in, const std::string& what) {
  std::string shapes;
  for (size_t i = 0; i < in.size(); ++i) shapes += (i ? ", " : "") + in[i]->ToString();
  throw Error(fmt::format("{}({}): {}", OpName(op), shapes, what));
}

double BytesOf(const InfoList& in, const std::vector<ValueInfo>& out) {
  double b = 0;
  for (const ValueInfo* v : in) b += static_cast<double>(Numel(v->shape) * DTypeSize(v->dtype));
  for (const ValueInfo& v : out) b += static_cast<double>(Numel(v.shape) * DTypeSize(v.dtype));
  return b;
}

Tensor AsF32(const Tensor& t) {
  return t.dtype() == DType::kF32 ? t.Contiguous() : t.To(DType::kF32);
}

void WriteF32(Tensor& out, const std::function<void(float*)>& fn) {
  if (out.dtype() == DType::kF32) {
    fn(out.data<float>());
    return;
  }
  Tensor tmp = Tensor::Empty(out.shape(), DType::kF32, out.allocator());
  fn(tmp.data<float>());
  out.CopyFrom(tmp);
}

Tensor AsI64(const Tensor& t) {
  return t.dtype() == DType::kI64 ? t.Contiguous() : t.To(DType::kI64);
}

// --- GraphBuilder
// ---------------------------------------------------------------------------------
std::vector<int> GraphBuilder::Emit(OpKind op, std::vector<int> inputs, Attrs attrs) {
  InfoList in;
  for (int v : inputs) in.push_back(&graph_->info(v));
  std::vector<ValueInfo> out = InferOutputs(op, in, attrs);
  return graph_->AddNode(op, std::move(inputs), std::move(attrs), std::move(out));
}

int GraphBuilder::Reshape(int v, Shape shape) {
  if (info(v).shape == shape) return v;
  return Emit1(OpKind::kReshape, {v}, {{"shape", shape}});
}

int GraphBuilder::Add(int a, int b) { return Emit1(OpKind::kAdd, {a, b}); }

int GraphBuilder::ReduceToShape(int grad, Shape shape) {
  const Shape gs = info(grad).shape;
  if (gs == shape) return grad;
  const size_t lead = gs.size() - shape.size();
  std::vector<int64_t> axes;
  for (size_t i = 0; i < lead; ++i) axes.push_back(static_cast<int64_t>(i));
  int s = Emit1(OpKind::kSum, {grad}, {{"axes", axes}, {"keepdim", int64_t{0}}});
  return Reshape(s, shape);
}

}  // namespace moreh::ops
