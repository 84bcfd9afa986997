#include "runtime/models/llama_def.h"

#include <fmt/format.h>

#include <cmath>

namespace moreh::models {

Shape ParamSpec::TpShape(int tp) const {
  Shape s = shape;
  if (tp_dim >= 0) s[static_cast<size_t>(tp_dim)] /= tp;
  return s;
}

namespace {
std::string LayerName(int layer, const char* suffix) {
  return fmt::format("model.layers.{}.{}", layer, suffix);
}
}  // namespace

std::vector<ParamSpec> EmbeddingParams(const LlamaConfig& c) {
  return {{"model.embed_tokens.weight", {c.vocab_size, c.hidden_size}, -1, ParamInit::kNormal}};
}

std::vector<ParamSpec> LayerParams(const LlamaConfig& c, int l) {
  const int64_t C = c.hidden_size, I = c.intermediate_size, D = c.head_dim();
  const int64_t q = c.num_attention_heads * D, kv = c.num_key_value_heads * D;
  return {
      {LayerName(l, "input_layernorm.weight"), {C}, -1, ParamInit::kOnes},
      {LayerName(l, "self_attn.q_proj.weight"), {q, C}, 0, ParamInit::kNormal},
      {LayerName(l, "self_attn.k_proj.weight"), {kv, C}, 0, ParamInit::kNormal},
      {LayerName(l, "self_attn.v_proj.weight"), {kv, C}, 0, ParamInit::kNormal},
      {LayerName(l, "self_attn.o_proj.weight"), {C, q}, 1, ParamInit::kNormal},
      {LayerName(l, "post_attention_layernorm.weight"), {C}, -1, ParamInit::kOnes},
      {LayerName(l, "mlp.gate_proj.weight"), {I, C}, 0, ParamInit::kNormal},
      {LayerName(l, "mlp.up_proj.weight"), {I, C}, 0, ParamInit::kNormal},
      {LayerName(l, "mlp.down_proj.weight"), {C, I}, 1, ParamInit::kNormal},
  };
}

std::vector<ParamSpec> HeadParams(const LlamaConfig& c) {
  std::vector<ParamSpec> p{{"model.norm.weight", {c.hidden_size}, -1, ParamInit::kOnes}};
  if (!c.tie_word_embeddings) {
    p.push_back({"lm_head.weight", {c.vocab_size, c.hidden_size}, -1, ParamInit::kNormal});
  }
  return p;
}

std::vector<ParamSpec> AllParams(const LlamaConfig& c) {
  std::vector<ParamSpec> all = EmbeddingParams(c);
  for (int l = 0; l < c.num_hidden_layers; ++l) {
    for (ParamSpec& p : LayerParams(c, l)) all.push_back(std::move(p));
  }
  for (ParamSpec& p : HeadParams(c)) all.push_back(std::move(p));
  return all;
}

StatusOr<ParamSpec> FindParam(const LlamaConfig& c, const std::string& name) {
  std::vector<ParamSpec> candidates = EmbeddingParams(c);
  for (ParamSpec& p : HeadParams(c)) candidates.push_back(std::move(p));
  int layer = -1;
  if (std::sscanf(name.c_str(), "model.layers.%d.", &layer) == 1 && layer >= 0 &&
      layer < c.num_hidden_layers) {
    candidates = LayerParams(c, layer);
  }
  for (ParamSpec& p : candidates) {
    if (p.name == name) return p;
  }
  return Status::NotFound(fmt::format("no parameter '{}' in this Llama model", name));
}

Val EmitEmbedding(Emitter& e, const LlamaConfig& c, Val ids) {
  return e.Emit1(OpKind::kEmbedding, {e.Weight("model.embed_tokens.weight"), ids});
}

Val EmitDecoderLayer(Emitter& e, const LlamaConfig& c, int l, Val x, Val mask) {
  const ValueInfo xi = e.Info(x);
  const int64_t B = xi.shape[0], T = xi.shape[1], D = c.head_dim();
  const int64_t H = c.num_attention_heads / e.tp(), Hkv = c.num_key_value_heads / e.tp();
  auto W = [&](const char* suffix) { return e.Weight(LayerName(l, suffix)); };
  const Attrs eps{{"eps", c.rms_norm_eps}};
  const Attrs rope{
      {"theta", c.rope_theta}, {"position_offset", int64_t{0}}, {"inverse", int64_t{0}}};
  Val h = e.TpCopy(e.Emit1(OpKind::kRmsNorm, {x, W("input_layernorm.weight")}, eps));
  Val q = e.Reshape(e.Linear(h, W("self_attn.q_proj.weight")), {B, T, H, D});
  Val k = e.Reshape(e.Linear(h, W("self_attn.k_proj.weight")), {B, T, Hkv, D});
  const Val v = e.Reshape(e.Linear(h, W("self_attn.v_proj.weight")), {B, T, Hkv, D});
  q = e.Emit1(OpKind::kRotary, {q}, rope);
  k = e.Emit1(OpKind::kRotary, {k}, rope);
  std::vector<Val> qkv{q, k, v};
  if (mask != kNoVal) qkv.push_back(mask);
  const Val att = e.Emit(OpKind::kAttention, qkv,
                         {{"causal", int64_t{1}}, {"scale", 1.0 / std::sqrt(double(D))}})[0];
  const Val a = e.Reshape(att, {B, T, H * D});
  const Val x1 = e.Add(x, e.TpReduce(e.Linear(a, W("self_attn.o_proj.weight"))));
  h = e.TpCopy(e.Emit1(OpKind::kRmsNorm, {x1, W("post_attention_layernorm.weight")}, eps));
  const Val m = e.Emit1(OpKind::kSwiGlu, {e.Linear(h, W("mlp.gate_proj.weight")),
                                          e.Linear(h, W("mlp.up_proj.weight"))});
  return e.Add(x1, e.TpReduce(e.Linear(m, W("mlp.down_proj.weight"))));
}

Val EmitHead(Emitter& e, const LlamaConfig& c, Val x) {
  const Val h =
      e.Emit1(OpKind::kRmsNorm, {x, e.Weight("model.norm.weight")}, {{"eps", c.rms_norm_eps}});
  return e.Linear(h,
                  e.Weight(c.tie_word_embeddings ? "model.embed_tokens.weight" : "lm_head.weight"));
}

}  // namespace moreh::models
