// The model is defined once (runtime/models/llama_def.h): the planner's layer graph is the stage
// programs' layer op for op, and the parameters the definition lists are the in-process model's,
// the stage programs' and the parameter count's.
#include <gtest/gtest.h>

#include "runtime/init.h"
#include "runtime/models/llama_def.h"
#include "runtime/parallel/stage_graph.h"
#include "runtime/planner/layer_cost.h"

namespace moreh::models {
namespace {

std::vector<LlamaConfig> Configs() {
  LlamaConfig mha;  // multi-head attention
  mha.vocab_size = 96;
  mha.hidden_size = 64;
  mha.intermediate_size = 176;
  mha.num_hidden_layers = 3;
  mha.num_attention_heads = 4;
  mha.num_key_value_heads = 4;
  LlamaConfig gqa = mha;  // grouped-query attention, tied embeddings
  gqa.num_key_value_heads = 2;
  gqa.tie_word_embeddings = true;
  gqa.rope_theta = 500000;
  LlamaConfig llama3 = gqa;  // explicit head_dim (H * D != C), biases, Llama 3 rope scaling
  llama3.tie_word_embeddings = false;
  llama3.explicit_head_dim = 24;
  llama3.attention_bias = llama3.mlp_bias = true;
  llama3.rope_scaling.type = "llama3";
  llama3.rope_scaling.factor = 8;
  llama3.rope_scaling.original_max_position_embeddings = 64;
  LlamaConfig mistral = gqa;  // a sliding window on every layer
  mistral.model_type = "mistral";
  mistral.sliding_window = 5;
  LlamaConfig qwen2 = gqa;  // q/k/v biases (not o), tied
  qwen2.model_type = "qwen2";
  qwen2.qkv_bias = true;
  LlamaConfig qwen3 = mha;  // q/k norms, explicit head_dim
  qwen3.model_type = "qwen3";
  qwen3.qk_norm = true;
  qwen3.explicit_head_dim = 24;
  LlamaConfig gemma2 = gqa;      // GeGLU, (1 + w) sandwich norms, scaled embeddings, soft-capping,
  gemma2.model_type = "gemma2";  // windows on even layers, query_pre_attn_scalar
  gemma2.mlp_activation = "gelu_tanh";
  gemma2.norm_weight_offset = 1;
  gemma2.sandwich_norms = gemma2.scale_embeddings = true;
  gemma2.sliding_window = 5;
  gemma2.explicit_head_dim = 32;
  gemma2.query_pre_attn_scalar = 24;
  gemma2.attn_logit_softcapping = 50;
  gemma2.final_logit_softcapping = 30;
  return {mha, gqa, llama3, mistral, qwen2, qwen3, gemma2};
}

std::string Describe(const Graph& g, const Node& n) {
  std::string s = std::string(OpName(n.op)) + n.attrs.ToString() + " (";
  for (int v : n.inputs)
    s += ShapeToString(g.info(v).shape) + std::string(DTypeName(g.info(v).dtype)) + " ";
  s += ") -> (";
  for (int v : n.outputs)
    s += ShapeToString(g.info(v).shape) + std::string(DTypeName(g.info(v).dtype)) + " ";
  return s + ")";
}

TEST(ModelDefinition, ThePlannersLayerIsTheStageProgramsLayerOpForOp) {
  for (LlamaConfig c : Configs()) {
    c.tie_word_embeddings = false;  // a middle stage holds no copy of the embedding
    // Layers 1 and 2: Gemma 2's odd (global) and even (windowed) kinds.
    for (int layer : {1, 2}) {
      for (int tp : {1, 2}) {
        for (DType dt : {DType::kF32, DType::kBF16}) {
          int x = -1, out = -1;
          std::vector<int> weights;
          const Graph planned =
              planner::DecoderLayerGraph(c, 2, 16, tp, dt, &x, &weights, &out, layer);
          // A middle stage of one layer: its forward is that layer and nothing else.
          parallel::StageSpec s;
          s.model = c;
          s.first_layer = layer;
          s.num_layers = 1;
          s.first = s.last = false;
          s.micro_batch = 2;
          s.seq_len = 16;
          s.tp = tp;
          s.compute_dtype = dt;
          const parallel::StageProgram p = parallel::BuildStageProgram(s);
          const std::string where =
              fmt::format("{}, layer {}, kv heads {}, tp {}, {}", c.model_type, layer,
                          c.num_key_value_heads, tp, DTypeName(dt));
          ASSERT_EQ(static_cast<size_t>(p.num_forward_nodes), planned.nodes().size()) << where;
          for (size_t i = 0; i < planned.nodes().size(); ++i) {
            EXPECT_EQ(Describe(planned, planned.nodes()[i]), Describe(p.full, p.full.nodes()[i]))
                << where << ", node " << i;
          }
          EXPECT_EQ(weights.size(), LayerParams(c, layer).size());
        }
      }
    }
  }
}

TEST(ModelDefinition, OneListOfParametersForTheModelTheStagesAndTheCount) {
  for (const LlamaConfig& c : Configs()) {
    const std::vector<ParamSpec> all = AllParams(c);
    const LlamaForCausalLM model(c, 7);
    const auto named = model.NamedParameters();
    ASSERT_EQ(named.size(), all.size());
    int64_t count = 0;
    for (size_t i = 0; i < all.size(); ++i) {
      EXPECT_EQ(named[i].first, all[i].name);
      EXPECT_EQ(named[i].second.shape(), all[i].shape) << all[i].name;
      auto found = FindParam(c, all[i].name);
      ASSERT_TRUE(found.ok()) << found.status().message();
      EXPECT_EQ(found->shape, all[i].shape);
      count += Numel(all[i].shape);
      // Norms start at one (Gemma's, an offset from one, at zero), biases at zero, the rest from
      // (seed, name).
      const bool ones = all[i].init == ParamInit::kOnes;
      const bool zeros = all[i].init == ParamInit::kZeros;
      const bool is_norm = all[i].name.find("norm") != std::string::npos;
      EXPECT_EQ(ones, is_norm && c.norm_weight_offset == 0) << all[i].name;
      EXPECT_EQ(zeros, all[i].name.find(".bias") != std::string::npos ||
                           (is_norm && c.norm_weight_offset != 0))
          << all[i].name;
      // The in-process model starts from those values, as the workers' seeded init does (a bias
      // drawn from the normal once made an AP-off run differ from the same job on daemons).
      const std::vector<float> v = named[i].second.to_floats();
      const std::vector<float> want =
          ones || zeros
              ? std::vector<float>(v.size(), ones ? 1.0f : 0.0f)
              : runtime::NormalTensor(all[i].shape, 7, all[i].name, c.initializer_range).ToFloats();
      EXPECT_EQ(v, want) << all[i].name;
    }
    EXPECT_EQ(c.NumParameters(), count);
    EXPECT_FALSE(FindParam(c, "model.layers.3.self_attn.q_proj.weight").ok());  // 3 layers
    EXPECT_EQ(FindParam(c, "model.layers.0.self_attn.q_norm.weight").ok(), c.qk_norm);
    EXPECT_EQ(FindParam(c, "model.layers.0.self_attn.o_proj.bias").ok(), c.attention_bias);
    EXPECT_EQ(FindParam(c, "model.layers.0.self_attn.k_proj.bias").ok(), c.has_qkv_bias());
    // Three stages own every parameter once, in the definition's order (tied embeddings: and the
    // last stage its copy).
    std::vector<std::string> staged;
    for (int st = 0; st < 3; ++st) {
      parallel::StageSpec s;
      s.model = c;
      s.first_layer = st;
      s.num_layers = 1;
      s.first = st == 0;
      s.last = st == 2;
      for (const std::string& n : parallel::StageParameterNames(s)) staged.push_back(n);
    }
    if (c.tie_word_embeddings) {  // the last stage's own copy of the embedding, for its head
      ASSERT_FALSE(staged.empty());
      EXPECT_EQ(staged.back(), "model.embed_tokens.weight");
      staged.pop_back();
    }
    ASSERT_EQ(staged.size(), all.size());
    for (size_t i = 0; i < all.size(); ++i) EXPECT_EQ(staged[i], all[i].name);
  }
}

}  // namespace
}  // namespace moreh::models
