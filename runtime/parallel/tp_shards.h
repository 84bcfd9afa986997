// Shards of a parameter. Tensor parallelism: cutting a full tensor into a rank's shard, generating
// a shard of a seeded initialisation without the full tensor, and gathering the shards back (for a
// checkpoint); `dim` is TpShardDim(name): 0 rows, 1 columns, -1 replicated (the whole tensor).
// Parameter sharding over data parallelism (ZeRO-3): a rank's block of the flattened, zero-padded
// values, and the gather back.
#pragma once

#include <cstdint>
#include <string_view>

#include "runtime/comm/collectives.h"
#include "runtime/core/tensor.h"

namespace moreh::parallel {

// Rank `rank`'s shard of `full` (a compact copy; `full` itself when dim < 0 or tp == 1).
runtime::Tensor ShardOf(const runtime::Tensor& full, int dim, int tp, int rank);
// Writes rank's shard of runtime::FillNormal(seed, name, std) over `full` into `dst`.
void FillNormalShard(runtime::Tensor& dst, const Shape& full, int dim, int tp, int rank,
                     uint64_t seed, std::string_view name, float std);
// The full tensor from every rank's shard (all ranks of `group` call it). Throws moreh::Error
// naming the failed collective.
runtime::Tensor GatherShards(comm::Collectives* group, const runtime::Tensor& shard, int dim);

// Rank's block [rank c, (rank + 1) c) of the flattened `t`, c = ceil(numel / parts), zero-padded.
runtime::Tensor FlatShardOf(const runtime::Tensor& t, int parts, int rank);
// The tensor of `shape` from every rank's flat block (all ranks of `group` call it).
runtime::Tensor GatherFlatShards(comm::Collectives* group, const runtime::Tensor& shard,
                                 const Shape& shape);

}  // namespace moreh::parallel
