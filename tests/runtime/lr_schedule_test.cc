// Learning-rate schedules: transformers' formulas at the edges (warmup start and end, the last
// step, past the end), and bad names and counts named. (tests/python checks every schedule
// against transformers.get_scheduler step by step.) The weight-decay exclusions by name.
#include "runtime/lr_schedule.h"

#include <gtest/gtest.h>

#include <cmath>

#include "runtime/optim.h"

namespace moreh::optim {
namespace {

TEST(LrSchedule, TransformersFormulasAtTheEdges) {
  const auto lin = LrSchedule::Make("linear", 1e-3, 4, 20).value();
  EXPECT_EQ(lin.At(0), 0.0);             // warmup starts from 0
  EXPECT_DOUBLE_EQ(lin.At(2), 0.5e-3);   // halfway up
  EXPECT_DOUBLE_EQ(lin.At(4), 1e-3);     // the peak, then down
  EXPECT_DOUBLE_EQ(lin.At(12), 0.5e-3);  // halfway down
  EXPECT_EQ(lin.At(20), 0.0);
  EXPECT_EQ(lin.At(30), 0.0);  // never negative
  const auto cos = LrSchedule::Make("cosine", 2.0, 0, 10).value();
  EXPECT_DOUBLE_EQ(cos.At(0), 2.0);
  EXPECT_NEAR(cos.At(5), 1.0, 1e-12);
  EXPECT_NEAR(cos.At(10), 0.0, 1e-12);
  const auto cw = LrSchedule::Make("constant_with_warmup", 1.0, 3, 0).value();
  EXPECT_DOUBLE_EQ(cw.At(1), 1.0 / 3);
  EXPECT_EQ(cw.At(100), 1.0);
  const auto c = LrSchedule::Make("constant", 0.5, 7, 10).value();  // warmup ignored
  EXPECT_EQ(c.At(0), 0.5);
  EXPECT_EQ(c.name(), "constant");
  EXPECT_EQ(WarmupSteps(0, 0.1, 95), 10);  // ceil(9.5)
  EXPECT_EQ(WarmupSteps(3, 0.1, 95), 3);
}

TEST(LrSchedule, BadInputIsNamed) {
  auto bad = LrSchedule::Make("polynomial", 1e-3, 0, 10);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("'polynomial'"), std::string::npos);
  EXPECT_FALSE(LrSchedule::Make("linear", -1, 0, 10).ok());
  EXPECT_FALSE(LrSchedule::Make("linear", 1e-3, -1, 10).ok());
  EXPECT_FALSE(LrSchedule::Make("cosine", NAN, 0, 10).ok());
}

// transformers' Trainer: no decay on biases and on the weights of norms (every family's names).
TEST(AdamW, WeightDecayExclusionsByName) {
  for (const char* n :
       {"model.layers.0.self_attn.q_proj.bias", "model.layers.3.mlp.down_proj.bias",
        "model.layers.0.input_layernorm.weight", "model.layers.1.post_attention_layernorm.weight",
        "model.layers.2.pre_feedforward_layernorm.weight",
        "model.layers.2.post_feedforward_layernorm.weight", "model.norm.weight",
        "model.layers.0.self_attn.q_norm.weight", "model.layers.0.self_attn.k_norm.weight"}) {
    EXPECT_TRUE(ExcludedFromWeightDecay(n)) << n;
  }
  for (const char* n :
       {"model.embed_tokens.weight", "lm_head.weight", "model.layers.0.self_attn.q_proj.weight",
        "model.layers.0.mlp.up_proj.weight", "model.normalizer.weight",
        "model.layers.0.enormous_proj.weight"}) {
    EXPECT_FALSE(ExcludedFromWeightDecay(n)) << n;
  }
}

}  // namespace
}  // namespace moreh::optim
