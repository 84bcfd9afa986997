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

// Both ops keep their input's shape: an f32 activation or gradient.
std::vector<ValueInfo> SameF32(const InfoList& in, const Attrs&) {
  MOREH_CHECK(in[0]->dtype == DType::kF32, "tensor-parallel values must be f32");
  return {*in[0]};
}
}  // namespace

void SetTensorParallelAllReduce(AllReduceHook hook) { g_all_reduce = std::move(hook); }

const OpDef kTpCopyDef = {
    .kind = OpKind::kTpCopy,
    .min_inputs = 1,
    .max_inputs = 1,
    .infer = SameF32,
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
    .infer = SameF32,
    .cost =
        [](const InfoList& in, const std::vector<ValueInfo>& out, const Attrs&) {
          return Cost{static_cast<double>(Numel(in[0]->shape)), BytesOf(in, out)};
        },
    .grad = [](GraphBuilder&, const Node&,
               std::span<const int> g) { return std::vector<int>{g[0]}; },
    .kernels = {[](std::span<const Tensor>, std::span<Tensor> out, const Attrs&) {
      MOREH_CHECK(g_all_reduce != nullptr,
                  "tp_reduce: no tensor-parallel group on this thread (run it in a stage)");
      g_all_reduce(out[0].data<float>(), out[0].numel());  // out starts as a copy of the input
    }},
    .inplace = {{0, 0}},
};

}  // namespace moreh::ops
