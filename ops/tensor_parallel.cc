// Megatron-LM's two tensor-parallel operators (Shoeybi et al. 2019, "f" and "g"):
//   tp_copy(x)   forward: identity (a view); backward: all-reduce of the gradient over the group.
//                Placed where a replicated activation enters column-parallel projections.
//   tp_reduce(x) forward: all-reduce (sum) over the group; backward: identity.
//                Placed after row-parallel projections, whose outputs are partial sums.
// The all-reduce is the one the pipeline runner installs for the calling thread around a program
// run (SetTensorParallelAllReduce); running tp_reduce without one is an error.
#include "ops/op.h"

namespace moreh::ops {
namespace {
thread_local AllReduceHook g_all_reduce;

// Both ops keep their input's shape and dtype: an activation or gradient (f32, or the compute
// dtype of mixed precision).
std::vector<ValueInfo> SameFloat(const InfoList& in, const Attrs&) {
  MOREH_CHECK(IsFloating(in[0]->dtype), "tensor-parallel values must be a float type, not {}",
              DTypeName(in[0]->dtype));
  return {*in[0]};
}

// The same kernel on every backend: the hook's collectives read the device's memory.
void AllReduceKernel(std::span<const Tensor>, std::span<Tensor> out, const Attrs&) {
  MOREH_CHECK(g_all_reduce != nullptr,
              "tp_reduce: no tensor-parallel group on this thread (run it in a stage)");
  // out starts as a copy of the input (in place)
  g_all_reduce(out[0].raw_data(), out[0].numel(), out[0].dtype());
}
}  // namespace

void SetTensorParallelAllReduce(AllReduceHook hook) { g_all_reduce = std::move(hook); }

const OpDef kTpCopyDef = {
    .kind = OpKind::kTpCopy,
    .min_inputs = 1,
    .max_inputs = 1,
    .infer = SameFloat,
    .cost = [](const InfoList&, const std::vector<ValueInfo>&, const Attrs&) { return Cost{}; },
    .grad =
        [](GraphBuilder& b, const Node&, std::span<const int> g) {
          if (g[0] < 0) return std::vector<int>{-1};
          return std::vector<int>{b.Emit1(OpKind::kTpReduce, {g[0]})};
        },
    .view = [](const Tensor& in, const Attrs&, const ValueInfo&) { return in; },
};

const OpDef kTpReduceDef = {
    .kind = OpKind::kTpReduce,
    .min_inputs = 1,
    .max_inputs = 1,
    .infer = SameFloat,
    .cost =
        [](const InfoList& in, const std::vector<ValueInfo>& out, const Attrs&) {
          return Cost{static_cast<double>(Numel(in[0]->shape)), BytesOf(in, out)};
        },
    .grad = [](GraphBuilder&, const Node&,
               std::span<const int> g) { return std::vector<int>{g[0]}; },
    .kernels = {AllReduceKernel, AllReduceKernel},
    .inplace = {{0, 0}},
};

}  // namespace moreh::ops
