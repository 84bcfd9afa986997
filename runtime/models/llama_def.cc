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
// Norm weights start at one, or at zero where they are an offset from one (Gemma's (1 + w)).
ParamInit NormInit(const LlamaConfig& c) {
  return c.norm_weight_offset != 0 ? ParamInit::kZeros : ParamInit::kOnes;
}
}  // namespace

std::vector<ParamSpec> EmbeddingParams(const LlamaConfig& c) {
  return {{"model.embed_tokens.weight", {c.vocab_size, c.hidden_size}, -1, ParamInit::kNormal}};
}

std::vector<ParamSpec> LayerParams(const LlamaConfig& c, int l) {
  const int64_t C = c.hidden_size, I = c.intermediate_size, D = c.head_dim();
  const int64_t q = c.num_attention_heads * D, kv = c.num_key_value_heads * D;
  const ParamInit norm = NormInit(c);
  std::vector<ParamSpec> p{{LayerName(l, "input_layernorm.weight"), {C}, -1, norm}};
  auto proj = [&](const char* name, Shape w, int tp_dim, bool bias) {
    p.push_back(
        {LayerName(l, (std::string(name) + ".weight").c_str()), w, tp_dim, ParamInit::kNormal});
    // A column-parallel projection's bias splits with its rows; a row-parallel one's is whole.
    if (bias) {
      p.push_back({LayerName(l, (std::string(name) + ".bias").c_str()),
                   {w[0]},
                   tp_dim == 0 ? 0 : -1,
                   ParamInit::kZeros});
    }
  };
  proj("self_attn.q_proj", {q, C}, 0, c.has_qkv_bias());
  proj("self_attn.k_proj", {kv, C}, 0, c.has_qkv_bias());
  proj("self_attn.v_proj", {kv, C}, 0, c.has_qkv_bias());
  proj("self_attn.o_proj", {C, q}, 1, c.attention_bias);
  if (c.qk_norm) {  // one [D] weight shared by every head, replicated over TP
    p.push_back({LayerName(l, "self_attn.q_norm.weight"), {D}, -1, ParamInit::kOnes});
    p.push_back({LayerName(l, "self_attn.k_norm.weight"), {D}, -1, ParamInit::kOnes});
  }
  p.push_back({LayerName(l, "post_attention_layernorm.weight"), {C}, -1, norm});
  if (c.sandwich_norms) {
    p.push_back({LayerName(l, "pre_feedforward_layernorm.weight"), {C}, -1, norm});
  }
  proj("mlp.gate_proj", {I, C}, 0, c.mlp_bias);
  proj("mlp.up_proj", {I, C}, 0, c.mlp_bias);
  proj("mlp.down_proj", {C, I}, 1, c.mlp_bias);
  if (c.sandwich_norms) {
    p.push_back({LayerName(l, "post_feedforward_layernorm.weight"), {C}, -1, norm});
  }
  return p;
}

std::vector<ParamSpec> HeadParams(const LlamaConfig& c) {
  std::vector<ParamSpec> p{{"model.norm.weight", {c.hidden_size}, -1, NormInit(c)}};
  if (!c.tie_word_embeddings) {
    p.push_back({"lm_head.weight", {c.vocab_size, c.hidden_size}, -1, ParamInit::kNormal});
  }
  return p;
}

double TrainingFlopsPerToken(const LlamaConfig& c, int64_t seq_len) {
  double params = 0;
  for (const ParamSpec& p : AllParams(c)) params += static_cast<double>(Numel(p.shape));
  const double table = static_cast<double>(c.vocab_size) * static_cast<double>(c.hidden_size);
  const double matmul = params - table + (c.tie_word_embeddings ? table : 0.0);
  return 6.0 * matmul + 12.0 * static_cast<double>(c.num_hidden_layers) *
                            static_cast<double>(c.num_attention_heads) *
                            static_cast<double>(c.head_dim()) * static_cast<double>(seq_len);
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
  return Status::NotFound(fmt::format("no parameter '{}' in this {} model", name, c.model_type));
}

Val EmitEmbedding(Emitter& e, const LlamaConfig& c, Val ids) {
  const Val x = e.Emit1(OpKind::kEmbedding, {e.Weight("model.embed_tokens.weight"), ids});
  if (!c.scale_embeddings) return x;
  // Gemma: times sqrt(hidden_size), the factor first rounded to the activations' dtype as
  // transformers does (sqrt(3584) = 59.87 is 59.75 in bf16).
  float factor = static_cast<float>(std::sqrt(static_cast<double>(c.hidden_size)));
  if (e.Info(x).dtype == DType::kBF16) factor = BF16ToF32(F32ToBF16(factor));
  if (e.Info(x).dtype == DType::kF16) factor = F16ToF32(F32ToF16(factor));
  return e.Emit1(OpKind::kScale, {x}, {{"scale", static_cast<double>(factor)}});
}

namespace {
// The rotary node's attributes: theta and the frequencies' scaling.
Attrs RopeAttrs(const LlamaConfig& c) {
  Attrs a{{"theta", c.rope_theta}, {"position_offset", int64_t{0}}, {"inverse", int64_t{0}}};
  const LlamaConfig::RopeScaling& r = c.rope_scaling;
  if (r.type == "default") return a;
  a.Set("rope_type", r.type);
  a.Set("factor", r.factor);
  if (r.type == "llama3") {
    a.Set("low_freq_factor", r.low_freq_factor);
    a.Set("high_freq_factor", r.high_freq_factor);
    a.Set("original_max_position", r.original_max_position_embeddings);
  }
  return a;
}
}  // namespace

Val EmitDecoderLayer(Emitter& e, const LlamaConfig& c, int l, Val x, Val mask) {
  const ValueInfo xi = e.Info(x);
  const int64_t B = xi.shape[0], T = xi.shape[1], D = c.head_dim();
  const int64_t H = c.num_attention_heads / e.tp(), Hkv = c.num_key_value_heads / e.tp();
  auto W = [&](const char* suffix) { return e.Weight(LayerName(l, suffix)); };
  // A projection: x W^T, plus its bias where the config has one. A row-parallel projection's
  // partial sums are reduced first, then its (replicated) bias added once.
  auto proj = [&](Val in, const char* name, bool bias, bool row_parallel) {
    Val y = e.Linear(in, W((std::string(name) + ".weight").c_str()));
    if (row_parallel) y = e.TpReduce(y);
    return bias ? e.Add(y, W((std::string(name) + ".bias").c_str())) : y;
  };
  const bool qkv_b = c.has_qkv_bias(), ab = c.attention_bias, mb = c.mlp_bias;
  const Attrs eps{{"eps", c.rms_norm_eps}};
  Attrs norm_attrs = eps;  // the layer's norms (Gemma: (1 + w))
  if (c.norm_weight_offset != 0) norm_attrs.Set("offset", c.norm_weight_offset);
  auto norm = [&](Val in, const char* weight) {
    return e.Emit1(OpKind::kRmsNorm, {in, W(weight)}, norm_attrs);
  };
  Val h = e.TpCopy(norm(x, "input_layernorm.weight"));
  Val q = e.Reshape(proj(h, "self_attn.q_proj", qkv_b, false), {B, T, H, D});
  Val k = e.Reshape(proj(h, "self_attn.k_proj", qkv_b, false), {B, T, Hkv, D});
  const Val v = e.Reshape(proj(h, "self_attn.v_proj", qkv_b, false), {B, T, Hkv, D});
  if (c.qk_norm) {
    // Qwen3: RMSNorm over each head's D values. Each TP rank holds some of the heads, so the
    // (replicated) weights' gradients are partial sums: TpCopy all-reduces them.
    q = e.Emit1(OpKind::kRmsNorm, {q, e.TpCopy(W("self_attn.q_norm.weight"))}, eps);
    k = e.Emit1(OpKind::kRmsNorm, {k, e.TpCopy(W("self_attn.k_norm.weight"))}, eps);
  }
  q = e.Emit1(OpKind::kRotary, {q}, RopeAttrs(c));
  k = e.Emit1(OpKind::kRotary, {k}, RopeAttrs(c));
  std::vector<Val> qkv{q, k, v};
  if (mask != kNoVal) qkv.push_back(mask);
  // Gemma 2 scales by query_pre_attn_scalar^-1/2 instead of head_dim's.
  const double scale_base = c.query_pre_attn_scalar > 0 ? c.query_pre_attn_scalar : double(D);
  Attrs att_attrs{{"causal", int64_t{1}}, {"scale", 1.0 / std::sqrt(scale_base)}};
  if (c.LayerWindow(l) > 0) att_attrs.Set("window", c.LayerWindow(l));
  if (c.attn_logit_softcapping > 0) att_attrs.Set("softcap", c.attn_logit_softcapping);
  const Val att = e.Emit(OpKind::kAttention, qkv, att_attrs)[0];
  const Val a = e.Reshape(att, {B, T, H * D});
  Val attn_out = proj(a, "self_attn.o_proj", ab, true);
  // Gemma 2 normalises the attention's and the MLP's outputs too (after the TP reduce, so the
  // norms see whole rows); its pre-MLP norm is pre_feedforward_layernorm, and
  // post_attention_layernorm is the one after attention (in Llama, the pre-MLP norm).
  if (c.sandwich_norms) attn_out = norm(attn_out, "post_attention_layernorm.weight");
  const Val x1 = e.Add(x, attn_out);
  h = e.TpCopy(norm(x1, c.sandwich_norms ? "pre_feedforward_layernorm.weight"
                                         : "post_attention_layernorm.weight"));
  Attrs act;
  if (c.mlp_activation != "silu") act.Set("activation", c.mlp_activation);
  const Val m =
      e.Emit1(OpKind::kSwiGlu,
              {proj(h, "mlp.gate_proj", mb, false), proj(h, "mlp.up_proj", mb, false)}, act);
  Val mlp_out = proj(m, "mlp.down_proj", mb, true);
  if (c.sandwich_norms) mlp_out = norm(mlp_out, "post_feedforward_layernorm.weight");
  return e.Add(x1, mlp_out);
}

Val EmitHead(Emitter& e, const LlamaConfig& c, Val x) {
  Attrs a{{"eps", c.rms_norm_eps}};
  if (c.norm_weight_offset != 0) a.Set("offset", c.norm_weight_offset);
  const Val h = e.Emit1(OpKind::kRmsNorm, {x, e.Weight("model.norm.weight")}, a);
  const Val logits =
      e.Linear(h, e.Weight(c.tie_word_embeddings ? "model.embed_tokens.weight" : "lm_head.weight"));
  // Gemma 2: the logits soft-capped (the loss is computed on the capped ones).
  if (c.final_logit_softcapping <= 0) return logits;
  return e.Emit1(OpKind::kSoftcap, {logits}, {{"cap", c.final_logit_softcapping}});
}

}  // namespace moreh::models
