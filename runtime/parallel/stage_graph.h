// Stage programs: the step graph of one pipeline stage of a Llama model, split into the programs a
// device runs per micro-batch.
//
// A stage owns a contiguous range of decoder layers; the first stage also owns the embedding, the
// last the final norm, the LM head and the loss. Its training step for one micro-batch is recorded
// once as a graph (forward, then autograd's backward, seeded by the gradient arriving from the next
// stage or, on the last stage, by 1) and then cut in two:
//   forward:  params, data in (token ids on the first stage, the previous stage's activation
//             otherwise), key mask, (labels and loss weight on the last) -> activation out (the
//             weighted loss on the last) and the values the backward needs ("saved");
//   backward: params, saved values, data inputs it reads, gradient from the next stage
//             -> gradient for the previous stage (not on the first), parameter gradients.
// Recomputation moves decoder-layer forward nodes into the backward program, each placed just
// before the backward node that first needs it: full (per layer: only each layer's input is kept
// between the two, and one layer's activations are recomputed at a time) or selective (the norms,
// the gated activation, the tensor-parallel copy: planner/recompute.h, which the planner's memory
// model uses on the same graphs). The embedding and the head are not recomputed. The loss weight
// is count(mb labels) / count(global batch labels), so the sum of the weighted micro-batch losses
// over the pipeline and the data-parallel replicas is the one-device mean. Pure functions; the
// result is plain data (graphs serialize to JSON).
#pragma once

#include <cstdint>
#include <set>
#include <string>
#include <vector>

#include "runtime/core/graph.h"
#include "runtime/models/llama.h"
#include "runtime/planner/planner.h"
#include "runtime/planner/recompute.h"

namespace moreh::parallel {

using planner::kRecomputeFull;
using planner::kRecomputeNone;
using planner::kRecomputeSelective;

struct StageSpec {
  models::LlamaConfig model;
  int first_layer = 0;
  int num_layers = 0;
  bool first = true, last = true;
  int64_t micro_batch = 1, seq_len = 1;
  int recompute = kRecomputeNone;
  // Tensor parallelism (Megatron-LM): each of `tp` ranks holds 1/tp of the attention heads and of
  // the MLP's intermediate columns; tp_copy / tp_reduce (ops/tensor_parallel.cc) bracket the
  // column- and row-parallel projections. Norms, embedding and LM head are replicated.
  int tp = 1;
  // distribute_low_prec_param (ZeRO-3): each parameter is held as a 1/param_shards shard of its
  // flattened values (zero-padded to a multiple) and gathered over the data-parallel group just
  // before its layer runs (dp_gather, ops/data_parallel.cc), in the forward and again in the
  // backward; its gradient arrives reduce-scattered. 1: whole parameters.
  int param_shards = 1;
  // The dtype of the parameters as the step reads them, of activations and of gradients: f32, or
  // bf16 for mixed precision (the optimizer keeps f32 master weights and states and writes the
  // rounded copy; the loss is f32 either way). The pipeline runner uses f32 today.
  DType compute_dtype = DType::kF32;
};

// A parameter of the model as models/llama_def.h defines it: how it is split over tensor-parallel
// ranks (0 by rows: column parallel; 1 by columns: row parallel; -1 replicated), its full shape,
// and its shape on one of `tp` ranks. Throw for a name the model does not have.
int TpShardDim(const models::LlamaConfig& c, const std::string& name);
Shape FullParamShape(const models::LlamaConfig& c, const std::string& name);
Shape TpParamShape(const models::LlamaConfig& c, const std::string& name, int tp);

// A graph cut out of a larger one: which values of the source graph its inputs and outputs are.
struct SubProgram {
  Graph graph;
  std::vector<int> inputs;   // source value id of each graph input, in order
  std::vector<int> outputs;  // source value id of each graph output, in order
};

// The data inputs a stage's programs may read, by role.
enum class DataRole { kParam, kIds, kActivation, kMask, kLabels, kLossWeight, kGradIn };

struct StageProgram {
  StageSpec spec;
  Graph full;  // forward + backward, for reference: outputs out, grad_out, the used param grads
  int num_forward_nodes = 0;
  SubProgram forward, backward;
  std::vector<std::string> params;  // owned parameters (Hugging Face names)
  std::vector<int> param_values;    // their value ids in `full`
  // Value ids in `full` of the data inputs (-1 where the stage has none).
  int ids = -1, activation = -1, mask = -1, labels = -1, loss_weight = -1, grad_in = -1;
  int out = -1;                  // activation out, or the weighted loss on the last stage
  int grad_out = -1;             // gradient for the previous stage (-1 on the first)
  std::vector<int> param_grads;  // per parameter (-1: unused by this stage)
};

// Stage `stage` of a planner candidate (its layer split, micro-batch, recomputation, TP and
// parameter sharding) for sequences of seq_len.
StageSpec StageSpecFor(const models::LlamaConfig& model, const planner::Candidate& c, int stage,
                       int64_t seq_len);

// Hugging Face names of the parameters a stage owns, embedding first, in a fixed order.
std::vector<std::string> StageParameterNames(const StageSpec& spec);

// Throws moreh::Error for a spec that does not describe a stage of the model.
StageProgram BuildStageProgram(const StageSpec& spec);

// Extracts `nodes` (source node indices, in a topological order) as a graph whose inputs are
// `inputs` (source value ids, in this order) and whose outputs are `outputs`. Throws when a node
// reads a value that is neither an input nor produced by an earlier extracted node.
SubProgram ExtractProgram(const Graph& src, const std::vector<int>& nodes,
                          const std::vector<int>& inputs, const std::vector<int>& outputs);

}  // namespace moreh::parallel
