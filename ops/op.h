// OpDef: everything the runtime knows about one operator, defined once per op in ops/<op>.cc.
//
//  - infer:  output dtypes/shapes from the inputs' (throws moreh::Error naming the op and shapes);
//  - cost:   FLOPs and bytes moved (read by the planner's time model);
//  - grad:   the gradient rule, which emits gradient nodes through a GraphBuilder;
//  - kernels per backend, or `view` for ops whose output aliases their input (no kernel runs);
//  - inplace pairs (output o starts as a copy of input i, and reuses i's buffer when the executor
//    can donate it).
// Definitions are immutable and shared by all threads.
#pragma once

#include <functional>
#include <span>
#include <string_view>
#include <utility>
#include <vector>

#include "runtime/core/graph.h"
#include "runtime/core/tensor.h"

namespace moreh::ops {

using runtime::Tensor;

enum class Backend : int { kCpu = 0, kCuda = 1 };
inline constexpr int kNumBackends = 2;

struct Cost {
  double flops = 0;
  double bytes = 0;  // bytes read + written
};

using InfoList = std::vector<const ValueInfo*>;

// Emits nodes into a graph with inferred outputs; gradient rules and the frontend both use it.
class GraphBuilder {
 public:
  explicit GraphBuilder(Graph* graph) : graph_(graph) {}
  std::vector<int> Emit(OpKind op, std::vector<int> inputs, Attrs attrs = {});
  int Emit1(OpKind op, std::vector<int> inputs, Attrs attrs = {}) {
    return Emit(op, std::move(inputs), std::move(attrs)).at(0);
  }
  // By value: emitting nodes may move the graph's value table.
  ValueInfo info(int v) const { return graph_->info(v); }
  Graph* graph() const { return graph_; }

  // Conveniences used by several gradient rules.
  int Reshape(int v, Shape shape);
  int Add(int a, int b);
  // Sums `grad` (shaped like the op's output) down to `shape` (a suffix-broadcast input's shape).
  int ReduceToShape(int grad, Shape shape);

 private:
  Graph* graph_;
};

struct OpDef {
  OpKind kind;
  int min_inputs, max_inputs;
  std::function<std::vector<ValueInfo>(const InfoList& in, const Attrs& attrs)> infer;
  std::function<Cost(const InfoList& in, const std::vector<ValueInfo>& out, const Attrs& attrs)>
      cost;
  // Returns one gradient value id per input (-1: no gradient). out_grads[i] is -1 when no gradient
  // reaches output i. Null for ops that are not differentiable.
  std::function<std::vector<int>(GraphBuilder& b, const Node& node, std::span<const int> out_grads)>
      grad;
  // Kernels: inputs are contiguous; outputs are allocated contiguous with the inferred infos (for
  // inplace outputs, already holding the input's values).
  using Kernel =
      std::function<void(std::span<const Tensor> in, std::span<Tensor> out, const Attrs& attrs)>;
  Kernel kernels[kNumBackends];
  // View ops: the output is a view of input 0 (no copy, no kernel).
  std::function<Tensor(const Tensor& in, const Attrs& attrs, const ValueInfo& out)> view;
  std::vector<std::pair<int, int>> inplace;  // (output, input)
  // Inputs every backend's kernel reads on the host (a few scalars, e.g. AdamW's learning rate and
  // step): where they are in host memory the executor leaves them there rather than moving them to
  // the device, so a GPU step does not wait for a copy up and back per op.
  std::vector<int> host_inputs;
};

// One definition per op, k<Name>Def in ops/<family>.cc (declared here so they link externally).
#define MOREH_OP(name, str) extern const OpDef k##name##Def;
#include "ops/op_list.def"
#undef MOREH_OP

const OpDef& GetOpDef(OpKind op);

// The kernel of `op` for `backend`: the definition's own, else one registered at run time (the
// CUDA kernels live in ops/cuda/, a library only CUDA builds have; it registers them when the
// runtime first runs a graph on a GPU). Null when there is none.
const OpDef::Kernel& KernelFor(OpKind op, Backend backend);
void RegisterKernel(OpKind op, Backend backend, OpDef::Kernel kernel);

// The sum all-reduce over the calling thread's tensor-parallel group, used by tp_reduce. The
// pipeline runner installs it around each program run; null outside one. Throws on failure.
// Pointers are in the memory of the tensors' device (the group's collectives read it there: NCCL
// on a GPU), count elements of a float dtype (f32, or bf16 in mixed precision).
using AllReduceHook = std::function<void(void* data, int64_t count, DType dtype)>;
void SetTensorParallelAllReduce(AllReduceHook hook);

// Parameter sharding over the calling thread's data-parallel group (distribute_low_prec_param),
// used by dp_gather / dp_reduce_scatter; installed like the tensor-parallel hook.
//   gather(shard, out, count):  out[dp * count] = every rank's shard[count], in rank order.
//   reduce_scatter(in, out, count): out[count] = this rank's block of the sum of in[dp * count].
// Like the tensor-parallel hook, device pointers of any float dtype.
struct DataParallelHooks {
  std::function<void(const void* shard, void* out, int64_t count, DType dtype)> gather;
  std::function<void(const void* in, void* out, int64_t count, DType dtype)> reduce_scatter;
};
void SetDataParallelHooks(DataParallelHooks hooks);

// Infers `op`'s outputs, validating input count; errors name the op, its inputs and attributes.
std::vector<ValueInfo> InferOutputs(OpKind op, const InfoList& in, const Attrs& attrs);
Cost OpCost(const Graph& g, const Node& node);

// Helpers shared by the op definitions.
[[noreturn]] void OpError(OpKind op, const InfoList& in, const std::string& what);
double BytesOf(const InfoList& in, const std::vector<ValueInfo>& out);
// Returns t as contiguous f32 (a converted copy when t is bf16/f16).
Tensor AsF32(const Tensor& t);
// Runs `fn` on an f32 view of `out` and converts back when out is bf16/f16.
void WriteF32(Tensor& out, const std::function<void(float*)>& fn);
// Returns the int64 data of an index tensor (converted from i32 when needed).
Tensor AsI64(const Tensor& t);

}  // namespace moreh::ops
