#include "runtime/parallel/tp_shards.h"

#include <algorithm>

#include "runtime/core/error.h"
#include "runtime/init.h"

namespace moreh::parallel {

runtime::Tensor ShardOf(const runtime::Tensor& full, int dim, int tp, int rank) {
  if (dim < 0 || tp == 1) return full;
  MOREH_CHECK(dim < full.dim() && full.dim() <= 2 && full.size(dim) % tp == 0,
              "cannot split {} {} ways along {}", full.ToString(), tp, dim);
  const int64_t k = full.size(dim) / tp;
  return full.Slice(dim, rank * k, (rank + 1) * k).Clone();
}

void FillNormalShard(runtime::Tensor& dst, const Shape& full, int dim, int tp, int rank,
                     uint64_t seed, std::string_view name, float std) {
  float* out = dst.data<float>();
  if (dim < 0 || tp == 1) {
    runtime::FillNormal(out, 0, dst.numel(), seed, name, std);
  } else if (dim == 0) {
    const int64_t rows = full[0] / tp;
    runtime::FillNormal(out, rank * rows * full[1], rows * full[1], seed, name, std);
  } else {
    const int64_t cols = full[1] / tp;
    for (int64_t r = 0; r < full[0]; ++r) {
      runtime::FillNormal(out + r * cols, r * full[1] + rank * cols, cols, seed, name, std);
    }
  }
}

runtime::Tensor GatherShards(comm::Collectives* group, const runtime::Tensor& shard_in, int dim) {
  if (dim < 0 || group == nullptr || group->size() == 1) return shard_in;
  const int tp = group->size();
  const runtime::Tensor shard = shard_in.Contiguous();
  runtime::Tensor all = runtime::Tensor::Empty({tp, shard.numel()}, DType::kF32);
  Status s = group->AllGather(shard.data<float>(), all.data<float>(), shard.numel(), DType::kF32);
  if (!s.ok()) throw Error("gathering tensor-parallel shards: " + s.message());
  if (shard.dim() == 1) return all.View({tp * shard.size(0)});  // a bias, split with its rows
  const int64_t r = shard.size(0), c = shard.size(1);
  if (dim == 0) return all.View({tp * r, c});
  runtime::Tensor full = runtime::Tensor::Empty({r, tp * c}, DType::kF32);
  for (int k = 0; k < tp; ++k) {
    full.Slice(1, k * c, (k + 1) * c).CopyFrom(all.Slice(0, k, k + 1).View({r, c}));
  }
  return full;
}

runtime::Tensor FlatShardOf(const runtime::Tensor& t, int parts, int rank) {
  const runtime::Tensor flat = t.Contiguous().View({t.numel()});
  const int64_t c = (t.numel() + parts - 1) / parts;
  runtime::Tensor out = runtime::Tensor::Zeros({c}, DType::kF32);
  const int64_t begin = std::min<int64_t>(t.numel(), rank * c);
  const int64_t end = std::min<int64_t>(t.numel(), begin + c);
  if (end > begin) out.Slice(0, 0, end - begin).CopyFrom(flat.Slice(0, begin, end));
  return out;
}

runtime::Tensor GatherFlatShards(comm::Collectives* group, const runtime::Tensor& shard,
                                 const Shape& shape) {
  const int parts = group == nullptr ? 1 : group->size();
  if (parts == 1) return shard.View(shape);
  const int64_t c = shard.numel();
  runtime::Tensor all = runtime::Tensor::Empty({parts * c}, DType::kF32);
  Status s = group->AllGather(shard.Contiguous().data<float>(), all.data<float>(), c, DType::kF32);
  if (!s.ok()) throw Error("gathering parameter shards: " + s.message());
  return all.Slice(0, 0, Numel(shape)).Clone().View(shape);
}

}  // namespace moreh::parallel
