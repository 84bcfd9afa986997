#include "runtime/parallel/stage_graph.h"

#include <algorithm>
#include <cmath>
#include <unordered_map>

#include "ops/op.h"
#include "runtime/autograd.h"
#include "runtime/core/error.h"
#include "runtime/models/llama_def.h"
#include "runtime/planner/recompute.h"

namespace moreh::parallel {
namespace {
models::ParamSpec Spec(const models::LlamaConfig& c, const std::string& name) {
  auto p = models::FindParam(c, name);
  p.status().ThrowIfError();
  return p.value();
}
}  // namespace

int TpShardDim(const models::LlamaConfig& c, const std::string& name) {
  return Spec(c, name).tp_dim;
}

Shape FullParamShape(const models::LlamaConfig& c, const std::string& name) {
  return Spec(c, name).shape;
}

Shape TpParamShape(const models::LlamaConfig& c, const std::string& name, int tp) {
  return Spec(c, name).TpShape(tp);
}

StageSpec StageSpecFor(const models::LlamaConfig& model, const planner::Candidate& c, int stage,
                       int64_t seq_len) {
  MOREH_CHECK(
      stage >= 0 && stage < c.num_stages && static_cast<int>(c.stage_layers.size()) == c.num_stages,
      "stage {} of a candidate with {} stages ({} layer counts)", stage, c.num_stages,
      c.stage_layers.size());
  StageSpec spec;
  spec.model = model;
  for (int k = 0; k < stage; ++k) spec.first_layer += c.stage_layers[k];
  spec.num_layers = c.stage_layers[stage];
  spec.first = stage == 0;
  spec.last = stage == c.num_stages - 1;
  spec.micro_batch = c.batch_per_device;
  spec.seq_len = seq_len;
  spec.recompute = c.recompute;
  spec.tp = c.tp;
  spec.param_shards = c.distribute_low_prec_param ? c.dp : 1;
  return spec;
}

std::vector<std::string> StageParameterNames(const StageSpec& s) {
  std::vector<std::string> names;
  auto add = [&](const std::vector<models::ParamSpec>& specs) {
    for (const auto& p : specs) names.push_back(p.name);
  };
  if (s.first) add(models::EmbeddingParams(s.model));
  for (int l = s.first_layer; l < s.first_layer + s.num_layers; ++l) {
    add(models::LayerParams(s.model, l));
  }
  if (s.last) add(models::HeadParams(s.model));
  // Tied embeddings over several stages: the last stage holds its own copy of the embedding for
  // the head (Megatron-LM's); the two copies' gradients are summed before each update.
  if (s.last && !s.first && s.model.tie_word_embeddings) add(models::EmbeddingParams(s.model));
  return names;
}

SubProgram ExtractProgram(const Graph& src, const std::vector<int>& nodes,
                          const std::vector<int>& inputs, const std::vector<int>& outputs) {
  SubProgram p;
  std::unordered_map<int, int> map;
  for (int v : inputs) {
    MOREH_CHECK(!map.count(v), "ExtractProgram: value {} given twice as an input", v);
    map[v] = p.graph.AddInput(src.info(v), src.value(v).name);
  }
  for (int i : nodes) {
    const Node& n = src.nodes().at(i);
    std::vector<int> in;
    for (int v : n.inputs) {
      auto it = map.find(v);
      MOREH_CHECK(it != map.end(),
                  "ExtractProgram: node {} ({}) reads value {}, which is neither "
                  "an input nor computed earlier",
                  i, OpName(n.op), v);
      in.push_back(it->second);
    }
    std::vector<ValueInfo> infos;
    for (int v : n.outputs) infos.push_back(src.info(v));
    const std::vector<int> out = p.graph.AddNode(n.op, std::move(in), n.attrs, std::move(infos));
    for (size_t k = 0; k < out.size(); ++k) map[n.outputs[k]] = out[k];
  }
  for (int v : outputs) {
    auto it = map.find(v);
    MOREH_CHECK(it != map.end(), "ExtractProgram: output value {} is not computed", v);
    p.graph.MarkOutput(it->second);
  }
  p.inputs = inputs;
  p.outputs = outputs;
  return p;
}

StageProgram BuildStageProgram(const StageSpec& s) {
  const models::LlamaConfig& c = s.model;
  c.Validate().ThrowIfError();
  const int L = static_cast<int>(c.num_hidden_layers);
  MOREH_CHECK(s.first_layer >= 0 && s.num_layers >= 0 && s.first_layer + s.num_layers <= L,
              "stage layers [{}, {}) outside the model's {} layers", s.first_layer,
              s.first_layer + s.num_layers, L);
  MOREH_CHECK(!s.first || s.first_layer == 0, "the first stage must start at layer 0, not {}",
              s.first_layer);
  MOREH_CHECK(!s.last || s.first_layer + s.num_layers == L,
              "the last stage must end at layer {}, not {}", L, s.first_layer + s.num_layers);
  MOREH_CHECK(s.micro_batch > 0 && s.seq_len > 0, "micro-batch {} and sequence {} must be positive",
              s.micro_batch, s.seq_len);
  MOREH_CHECK(s.recompute >= kRecomputeNone && s.recompute <= kRecomputeFull,
              "recomputation level {} (0 none, 1 selective, 2 full)", s.recompute);
  MOREH_CHECK(s.tp >= 1 && c.num_attention_heads % s.tp == 0 && c.num_key_value_heads % s.tp == 0 &&
                  c.intermediate_size % s.tp == 0,
              "tensor parallelism {} must divide the heads ({}), key/value heads ({}) and the "
              "intermediate size ({})",
              s.tp, c.num_attention_heads, c.num_key_value_heads, c.intermediate_size);
  MOREH_CHECK(s.param_shards >= 1, "param_shards {} must be >= 1", s.param_shards);
  MOREH_CHECK(IsFloating(s.compute_dtype), "compute dtype {} is not a float type",
              DTypeName(s.compute_dtype));
  StageProgram p;
  p.spec = s;
  p.params = StageParameterNames(s);
  Graph& g = p.full;
  ops::GraphBuilder gb(&g);
  std::unordered_map<std::string, int> inputs;
  const int ps = s.param_shards;
  for (const std::string& n : p.params) {
    const int v =
        g.AddInput({s.compute_dtype, models::ParamShardShape(TpParamShape(c, n, s.tp), ps)}, n);
    p.param_values.push_back(v);
    inputs[n] = v;
  }
  // A parameter as the computation reads it: gathered where first used when sharded.
  models::GraphEmitter e(
      &g,
      [&](const std::string& n) {
        return models::GatherParam(gb, inputs.at(n), TpParamShape(c, n, s.tp), ps);
      },
      s.tp);
  const int64_t B = s.micro_batch, T = s.seq_len, C = c.hidden_size;
  if (s.first) {
    p.ids = g.AddInput({DType::kI64, {B, T}}, "input_ids");
  } else {
    p.activation = g.AddInput({s.compute_dtype, {B, T, C}}, "activation");
  }
  p.mask = g.AddInput({DType::kI64, {B, T}}, "attention_mask");
  if (s.last) {
    p.labels = g.AddInput({DType::kI64, {B, T}}, "labels");
    p.loss_weight = g.AddInput({DType::kF32, {}}, "loss_weight");
  }
  int x = s.first ? models::EmitEmbedding(e, c, p.ids) : p.activation;
  // Decoder-layer nodes are [layer_begin, layer_end); recomputation applies to them only (the
  // embedding and the head keep what they save, as in Megatron-LM). Each layer's output is its
  // checkpoint under full recomputation.
  const int layer_begin = static_cast<int>(g.nodes().size());
  std::vector<int> checkpoints;
  for (int l = s.first_layer; l < s.first_layer + s.num_layers; ++l) {
    x = models::EmitDecoderLayer(e, c, l, x, p.mask);
    checkpoints.push_back(x);
  }
  const int layer_end = static_cast<int>(g.nodes().size());
  if (s.last) {
    const int logits = models::EmitHead(e, c, x);
    const int ce = gb.Emit(
        OpKind::kCrossEntropy, {logits, p.labels},
        {{"ignore_index", int64_t{-100}}, {"shift", int64_t{1}}, {"reduction_sum", int64_t{1}}})[0];
    x = gb.Emit1(OpKind::kMul, {ce, p.loss_weight});
  }
  p.out = x;
  p.num_forward_nodes = static_cast<int>(g.nodes().size());
  int seed;
  if (s.last) {
    seed = gb.Emit1(OpKind::kFill, {},
                    {{"shape", Shape{}}, {"dtype", std::string("f32")}, {"value", 1.0}});
  } else {
    p.grad_in = g.AddInput({s.compute_dtype, {B, T, C}}, "grad_in");
    seed = p.grad_in;
  }
  std::vector<int> wrt = p.param_values;
  if (!s.first) wrt.push_back(p.activation);
  std::vector<int> grads = runtime::BuildBackward(&g, p.out, seed, wrt);
  if (!s.first) {
    p.grad_out = grads.back();
    grads.pop_back();
  }
  p.param_grads = grads;

  // Cut: which forward nodes the backward program recomputes, and where (planner/recompute.h).
  const int nf = p.num_forward_nodes;
  const planner::RecomputeCut cut =
      planner::CutForRecompute(g, nf, layer_begin, layer_end, checkpoints, s.recompute);
  std::vector<char> needed(g.values().size(), 0);
  for (int i : cut.backward_nodes) {
    for (int v : g.nodes()[i].inputs) needed[v] = 1;
  }
  std::vector<int> bwd_outputs;
  if (p.grad_out >= 0) bwd_outputs.push_back(p.grad_out);
  for (int v : p.param_grads) {
    if (v >= 0) bwd_outputs.push_back(v);
  }
  // A backward output that is a graph input (a stage without layers passes grad_in through).
  for (int v : bwd_outputs) needed[v] = needed[v] || g.value(v).producer < 0;
  std::vector<int> bwd_inputs, fwd_inputs, fwd_nodes;
  for (int v : g.inputs()) {
    if (needed[v]) bwd_inputs.push_back(v);
    if (v != p.grad_in) fwd_inputs.push_back(v);
  }
  bwd_inputs.insert(bwd_inputs.end(), cut.saved.begin(), cut.saved.end());
  std::vector<int> fwd_outputs{p.out};
  for (int v : cut.saved) {
    if (v != p.out) fwd_outputs.push_back(v);
  }
  for (int i = 0; i < nf; ++i) fwd_nodes.push_back(i);
  const std::vector<int>& bwd_nodes = cut.backward_nodes;
  p.forward = ExtractProgram(g, fwd_nodes, fwd_inputs, fwd_outputs);
  p.backward = ExtractProgram(g, bwd_nodes, bwd_inputs, bwd_outputs);
  // The whole step as one graph, for reference runs: out, then the backward's outputs.
  g.MarkOutput(p.out);
  for (int v : bwd_outputs) g.MarkOutput(v);
  return p;
}

}  // namespace moreh::parallel
