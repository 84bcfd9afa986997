// ZeRO-3-style parameter sharding (distribute_low_prec_param): a parameter lives as this replica's
// 1/dp shard of its flattened (zero-padded) values and is gathered just before use.
//   dp_gather(shard[count]; shape, dp) -> [shape]   all-gather over the data-parallel group; the
//       gradient is dp_reduce_scatter (each replica keeps the summed gradient of its shard).
//   dp_reduce_scatter(g[shape]; dp) -> [count]      the inverse: count = ceil(numel / dp).
// Both call the hooks the pipeline runner installs for the thread (SetDataParallelHooks).
#include <cstring>

#include "ops/op.h"

namespace moreh::ops {
namespace {
thread_local DataParallelHooks g_hooks;

int64_t ShardCount(int64_t numel, int64_t dp) { return (numel + dp - 1) / dp; }
Cost CommCost(const InfoList& in, const std::vector<ValueInfo>& out, const Attrs&) {
  return Cost{0, BytesOf(in, out)};
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
          MOREH_CHECK(in[0]->dtype == DType::kF32 && dp >= 1, "dp_gather: f32 shard, dp >= 1");
          MOREH_CHECK(in[0]->shape == Shape{ShardCount(Numel(shape), dp)},
                      "dp_gather: shard must be [{}] for {} over {} replicas",
                      ShardCount(Numel(shape), dp), ShapeToString(shape), dp);
          return std::vector<ValueInfo>{{DType::kF32, shape}};
        },
    .cost = CommCost,
    .grad =
        [](GraphBuilder& b, const Node& n, std::span<const int> g) {
          if (g[0] < 0) return std::vector<int>{-1};
          return std::vector<int>{
              b.Emit1(OpKind::kDpReduceScatter, {g[0]}, {{"dp", n.attrs.GetInt("dp")}})};
        },
    .kernels = {[](std::span<const Tensor> in, std::span<Tensor> out, const Attrs& a) {
      MOREH_CHECK(g_hooks.gather != nullptr,
                  "dp_gather: no data-parallel group on this thread (run it in a stage)");
      const int64_t count = in[0].numel(), dp = a.GetInt("dp");
      if (out[0].numel() == dp * count) {  // no padding: gather straight into the output
        g_hooks.gather(in[0].data<float>(), out[0].data<float>(), count);
        return;
      }
      Tensor all = Tensor::Empty({dp * count}, DType::kF32, out[0].allocator());
      g_hooks.gather(in[0].data<float>(), all.data<float>(), count);
      std::memcpy(out[0].raw_data(), all.raw_data(), static_cast<size_t>(out[0].nbytes()));
    }},
};

const OpDef kDpReduceScatterDef = {
    .kind = OpKind::kDpReduceScatter,
    .min_inputs = 1,
    .max_inputs = 1,
    .infer =
        [](const InfoList& in, const Attrs& a) {
          const int64_t dp = a.GetInt("dp");
          MOREH_CHECK(in[0]->dtype == DType::kF32 && dp >= 1,
                      "dp_reduce_scatter: f32 input, dp >= 1");
          return std::vector<ValueInfo>{{DType::kF32, {ShardCount(Numel(in[0]->shape), dp)}}};
        },
    .cost = CommCost,
    .grad = nullptr,
    .kernels = {[](std::span<const Tensor> in, std::span<Tensor> out, const Attrs& a) {
      MOREH_CHECK(g_hooks.reduce_scatter != nullptr,
                  "dp_reduce_scatter: no data-parallel group on this thread (run it in a stage)");
      const int64_t count = out[0].numel(), dp = a.GetInt("dp");
      if (in[0].numel() == dp * count) {  // no padding: read the input in place
        g_hooks.reduce_scatter(in[0].data<float>(), out[0].data<float>(), count);
        return;
      }
      Tensor padded = Tensor::Zeros({dp * count}, DType::kF32, out[0].allocator());
      std::memcpy(padded.raw_data(), in[0].raw_data(), static_cast<size_t>(in[0].nbytes()));
      g_hooks.reduce_scatter(padded.data<float>(), out[0].data<float>(), count);
    }},
};

}  // namespace moreh::ops
