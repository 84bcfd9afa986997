// ZeRO-3-style parameter sharding (distribute_low_prec_param): a parameter lives as this replica's
// 1/dp shard of its flattened (zero-padded) values and is gathered just before use.
//   dp_gather(shard[count]; shape, dp) -> [shape]   all-gather over the data-parallel group; the
//       gradient is dp_reduce_scatter (each replica keeps the summed gradient of its shard).
//   dp_reduce_scatter(g[shape]; dp) -> [count]      the inverse: count = ceil(numel / dp).
// Both call the hooks the pipeline runner installs for the thread (SetDataParallelHooks).
#include "ops/op.h"

namespace moreh::ops {
namespace {
thread_local DataParallelHooks g_hooks;

int64_t ShardCount(int64_t numel, int64_t dp) { return (numel + dp - 1) / dp; }
Cost CommCost(const InfoList& in, const std::vector<ValueInfo>& out, const Attrs&) {
  return Cost{0, BytesOf(in, out)};
}

// The kernels are the same on every backend: the hooks' collectives read the device's memory, and
// the padding goes through Tensor copies on the output's device.
void GatherKernel(std::span<const Tensor> in, std::span<Tensor> out, const Attrs& a) {
  MOREH_CHECK(g_hooks.gather != nullptr,
              "dp_gather: no data-parallel group on this thread (run it in a stage)");
  const int64_t count = in[0].numel(), dp = a.GetInt("dp");
  const DType dt = in[0].dtype();
  if (out[0].numel() == dp * count) {  // no padding: gather straight into the output
    g_hooks.gather(in[0].raw_data(), out[0].raw_data(), count, dt);
    return;
  }
  Tensor all = Tensor::Empty({dp * count}, dt, out[0].allocator());
  g_hooks.gather(in[0].raw_data(), all.raw_data(), count, dt);
  out[0].CopyFrom(all.Slice(0, 0, out[0].numel()).View(out[0].shape()));
}

void ReduceScatterKernel(std::span<const Tensor> in, std::span<Tensor> out, const Attrs& a) {
  MOREH_CHECK(g_hooks.reduce_scatter != nullptr,
              "dp_reduce_scatter: no data-parallel group on this thread (run it in a stage)");
  const int64_t count = out[0].numel(), dp = a.GetInt("dp");
  const DType dt = in[0].dtype();
  if (in[0].numel() == dp * count && in[0].is_contiguous()) {  // read the input in place
    g_hooks.reduce_scatter(in[0].raw_data(), out[0].raw_data(), count, dt);
    return;
  }
  Tensor padded = Tensor::Zeros({dp * count}, dt, out[0].allocator());
  padded.Slice(0, 0, in[0].numel()).View(in[0].shape()).CopyFrom(in[0]);
  g_hooks.reduce_scatter(padded.raw_data(), out[0].raw_data(), count, dt);
}
}  // namespace

void SetDataParallelHooks(DataParallelHooks hooks) { g_hooks = std::move(hooks); }

const OpDef kDpGatherDef = {
    .kind = OpKind::kDpGather,
    .min_inputs = 1,
    .max_inputs = 1,
    .infer =
        [](const InfoList& in, const Attrs& a) {
          const Shape shape = a.GetInts("shape");
          const int64_t dp = a.GetInt("dp");
          MOREH_CHECK(IsFloating(in[0]->dtype) && dp >= 1, "dp_gather: float shard, dp >= 1");
          MOREH_CHECK(in[0]->shape == Shape{ShardCount(Numel(shape), dp)},
                      "dp_gather: shard must be [{}] for {} over {} replicas",
                      ShardCount(Numel(shape), dp), ShapeToString(shape), dp);
          return std::vector<ValueInfo>{{in[0]->dtype, shape}};
        },
    .cost = CommCost,
    .grad =
        [](GraphBuilder& b, const Node& n, std::span<const int> g) {
          if (g[0] < 0) return std::vector<int>{-1};
          return std::vector<int>{
              b.Emit1(OpKind::kDpReduceScatter, {g[0]}, {{"dp", n.attrs.GetInt("dp")}})};
        },
    .kernels = {GatherKernel, GatherKernel},
};

const OpDef kDpReduceScatterDef = {
    .kind = OpKind::kDpReduceScatter,
    .min_inputs = 1,
    .max_inputs = 1,
    .infer =
        [](const InfoList& in, const Attrs& a) {
          const int64_t dp = a.GetInt("dp");
          MOREH_CHECK(IsFloating(in[0]->dtype) && dp >= 1,
                      "dp_reduce_scatter: float input, dp >= 1");
          return std::vector<ValueInfo>{{in[0]->dtype, {ShardCount(Numel(in[0]->shape), dp)}}};
        },
    .cost = CommCost,
    .grad = nullptr,
    .kernels = {ReduceScatterKernel, ReduceScatterKernel},
};

}  // namespace moreh::ops
