// Costs of the pieces of a Llama training step, taken from the real step graph: one decoder layer
// (sharded for a tensor-parallel degree) and the head (final norm, lm_head, cross-entropy),
// recorded with the same ops the runtime executes, then differentiated by the same autograd. FLOPs
// and bytes come from each op's cost function; saved activations from liveness over that graph (a
// forward value is saved when a backward node reads it; views count once, with their base). Pure
// functions.
#pragma once

#include <cstdint>
#include <vector>

#include "runtime/core/dtype.h"
#include "runtime/core/graph.h"
#include "runtime/models/llama.h"
#include "runtime/planner/cluster.h"
#include "runtime/planner/recompute.h"

namespace moreh::planner {

struct PieceCost {
  double fwd_time = 0, bwd_time = 0;  // seconds per micro-batch on one device (roofline)
  double fwd_flops = 0, bwd_flops = 0;
  int64_t saved_bytes[3] = {0, 0, 0};    // activations kept from forward to backward, per level
  double recompute_time[3] = {0, 0, 0};  // extra backward time per level
  // Per level, the most the piece's forward or backward program holds beyond the saved
  // activations (temporaries, activation gradients, recomputed activations), as the executor
  // runs the stage programs; and the same with parameters sharded (each gathered where used).
  int64_t transient_bytes[3] = {0, 0, 0};
  int64_t sharded_transient_bytes[3] = {0, 0, 0};
  int64_t params = 0;              // parameters on one tensor-parallel shard
  int64_t tp_allreduce_bytes = 0;  // bytes of each TP all-reduce (4 per layer per micro-batch)
  int num_ops = 0;
  int num_param_tensors = 0;  // sharded parameters are gathered tensor by tensor
};

// The graph of one decoder layer of one tensor-parallel rank, as the stage programs emit it
// (models/llama_def.h): inputs x [b, t, C], the key mask and the layer's weights (*x, *weights);
// *out the layer's output. For costs, and for the test that keeps them the stage programs'.
// Layers differ only where the family alternates them (Gemma 2's windows on even layers). With
// param_shards > 1 each weight input is its shard (flat) and is gathered where it is read, as the
// stage programs do under distribute_low_prec_param.
Graph DecoderLayerGraph(const models::LlamaConfig& c, int64_t b, int64_t t, int tp, DType dtype,
                        int* x, std::vector<int>* weights, int* out, int layer = 0,
                        int param_shards = 1);
// One decoder layer for micro-batch [b, t] under tensor parallelism `tp` (heads, key/value heads
// and the MLP split tp ways, Megatron style), computing in `dtype`. Where layers alternate (Gemma
// 2's local and global attention) the mean of the two kinds' times, the larger of their bytes.
// sharded_transient_bytes with parameters sharded param_shards ways (1: as transient_bytes).
PieceCost DecoderLayerCost(const models::LlamaConfig& c, int64_t b, int64_t t, int tp, DType dtype,
                           const DeviceProfile& dev, int param_shards = 1);
// Final RMSNorm + lm_head (vocabulary split tp ways) + cross-entropy; and the embedding lookup.
PieceCost HeadCost(const models::LlamaConfig& c, int64_t b, int64_t t, int tp, DType dtype,
                   const DeviceProfile& dev, int param_shards = 1);
PieceCost EmbeddingCost(const models::LlamaConfig& c, int64_t b, int64_t t, int tp, DType dtype,
                        const DeviceProfile& dev);

}  // namespace moreh::planner
