// The Llama model, defined once: its parameters (Hugging Face names, shapes, how tensor
// parallelism splits them, how they are initialised) and its embedding, decoder layer and head as
// nodes put into an Emitter (emitter.h). The in-process model (llama.cc), the stage programs
// (parallel/stage_graph.cc), the planner's layer costs (planner/layer_cost.cc), checkpoint
// loading and the workers' seeded initialisation (parallel/stage_job.cc) all read it, so none of
// them can drift from the others (tests: ModelDefinition.*).
#pragma once

#include <string>
#include <vector>

#include "runtime/core/status.h"
#include "runtime/models/emitter.h"
#include "runtime/models/llama.h"

namespace moreh::models {

enum class ParamInit { kNormal, kOnes, kZeros };

struct ParamSpec {
  std::string name;  // the Hugging Face name, "model.layers.3.self_attn.q_proj.weight"
  Shape shape;       // whole (before tensor parallelism)
  // How tensor parallelism splits it (Megatron-LM): 0 by rows (column-parallel projections:
  // q, k, v, gate, up), 1 by columns (row-parallel: o, down), -1 replicated.
  int tp_dim = -1;
  // normal(0, initializer_range) from (seed, name); norms 1; biases 0 (as transformers does).
  ParamInit init = ParamInit::kNormal;
  Shape TpShape(int tp) const;
};

// The parameters in their fixed order: the embedding, each layer's (with attention_bias the
// q/k/v/o biases, with mlp_bias the MLP's), then the head's (the final norm, and lm_head unless
// the embeddings are tied). Row-parallel biases (o, down) are replicated over tensor parallelism
// and added once, after the partial sums are reduced.
std::vector<ParamSpec> EmbeddingParams(const LlamaConfig& c);
std::vector<ParamSpec> LayerParams(const LlamaConfig& c, int layer);
std::vector<ParamSpec> HeadParams(const LlamaConfig& c);
std::vector<ParamSpec> AllParams(const LlamaConfig& c);
// Model FLOPs of training on one token of a sequence of seq_len (PaLM's count, as MFU uses it):
// 6 x the parameters a token's matmuls use (the head's, not the embedding lookup's) plus
// 12 x layers x heads x head_dim x seq_len for the attention scores and values; recomputation
// not counted.
double TrainingFlopsPerToken(const LlamaConfig& c, int64_t seq_len);
// The parameter `name` of a model of this config; NotFound for one it does not have.
StatusOr<ParamSpec> FindParam(const LlamaConfig& c, const std::string& name);

// ids [B, T] (i64) -> x [B, T, C].
Val EmitEmbedding(Emitter& e, const LlamaConfig& c, Val ids);
// x [B, T, C] -> [B, T, C]; mask [B, T] (1 = token) or kNoVal. Split over e.tp() ranks when
// tensor-parallel: each holds 1/tp of the heads and of the MLP's columns.
Val EmitDecoderLayer(Emitter& e, const LlamaConfig& c, int layer, Val x, Val mask);
// x [B, T, C] -> logits [B, T, V] (the final norm and the LM head, replicated over TP).
Val EmitHead(Emitter& e, const LlamaConfig& c, Val x);

}  // namespace moreh::models
