// The lazy frontend end to end: step graphs compiled once and reused, training that learns,
// memory freed after last use, errors that name the op.
#include "runtime/lazy.h"

#include <gtest/gtest.h>

#include "runtime/core/allocator.h"
#include "runtime/functional.h"
#include "runtime/models/llama.h"
#include "runtime/optim.h"
#include "tests/models/llama_test_util.h"
#include "tests/test_util.h"

namespace moreh {
namespace {

namespace F = moreh::functional;

struct Batch {
  Tensor ids, mask, labels;
};

Batch MakeBatch(int64_t b, int64_t t, int64_t vocab, int pads_in_row1) {
  std::vector<int64_t> ids(b * t), mask(b * t, 1), labels(b * t);
  for (int64_t i = 0; i < b * t; ++i) ids[i] = (i * 7 + 3) % vocab;  // a learnable pattern
  for (int p = 0; p < pads_in_row1 && b > 1; ++p) {
    const int64_t i = t + (t - 1 - p);
    ids[i] = 0;
    mask[i] = 0;
  }
  for (int64_t i = 0; i < b * t; ++i) labels[i] = mask[i] ? ids[i] : -100;
  return {Tensor::FromVector(ids, {b, t}), Tensor::FromVector(mask, {b, t}),
          Tensor::FromVector(labels, {b, t})};
}

TEST(Lazy, StepGraphCompilesOnceAndTrainingLearns) {
  models::LlamaForCausalLM model(testing::TinyLlamaConfig(), /*seed=*/1);
  optim::AdamW opt(model.Parameters(), optim::AdamWOptions{.lr = 1e-2, .weight_decay = 0.0});
  const Batch batch = MakeBatch(2, 16, 64, 3);
  Sync();  // run whatever earlier code left recorded, so the first step starts a fresh graph
  const LazyStats before = GetLazyStats();
  float first = 0, last = 0;
  for (int step = 0; step < 12; ++step) {
    models::LlamaOutput out = model(batch.ids, batch.mask, batch.labels);
    out.loss.backward();
    opt.step();
    opt.zero_grad();
    const float loss = out.loss.item();  // computed by the step's single graph
    ASSERT_TRUE(std::isfinite(loss));
    if (step == 0) first = loss;
    last = loss;
  }
  const LazyStats after = GetLazyStats();
  EXPECT_EQ(after.syncs - before.syncs, 12);
  EXPECT_EQ(after.compiles - before.compiles, 1) << "later steps must reuse the compiled graph";
  EXPECT_EQ(after.cache_hits - before.cache_hits, 11);
  EXPECT_GT(after.last_num_nodes, 100);
  EXPECT_NEAR(first, std::log(64.0f), 0.5f);  // near-uniform predictions at initialisation
  EXPECT_LT(last, first * 0.5f) << "loss did not fall: " << first << " -> " << last;
}

// `print(loss.item()); loss.backward()`, as PyTorch users write it: the read keeps the graph, so
// the gradients and the update equal those of a step whose loss is read after the update.
TEST(Lazy, ReadingTheLossBeforeBackwardKeepsItsGraph) {
  const Batch batch = MakeBatch(2, 16, 64, 3);
  auto train = [&](bool read_first) {
    models::LlamaForCausalLM model(testing::TinyLlamaConfig(), /*seed=*/3);
    optim::AdamW opt(model.Parameters(), optim::AdamWOptions{.lr = 1e-2, .weight_decay = 0.0});
    std::vector<float> losses;
    for (int step = 0; step < 3; ++step) {
      models::LlamaOutput out = model(batch.ids, batch.mask, batch.labels);
      if (read_first) losses.push_back(out.loss.item());
      out.loss.backward();
      EXPECT_TRUE(model.Parameters()[0].grad().defined()) << "step " << step;
      opt.step();
      opt.zero_grad();
      if (!read_first) losses.push_back(out.loss.item());
    }
    return losses;
  };
  const std::vector<float> after = train(false), before = train(true);
  ASSERT_EQ(before.size(), 3u);
  for (size_t i = 0; i < before.size(); ++i) EXPECT_EQ(before[i], after[i]) << "step " << i;
  EXPECT_LT(before[2], before[0]);  // the updates happened
}

// Evaluation under NoGradGuard: the loss needs no gradient, reading it keeps no graph, and the
// next training step's graph is a plain step's (the evaluation does not run again inside it).
TEST(Lazy, EvaluationUnderNoGradKeepsNoGraph) {
  models::LlamaForCausalLM model(testing::TinyLlamaConfig(), /*seed=*/4);
  optim::AdamW opt(model.Parameters(), optim::AdamWOptions{.lr = 1e-2, .weight_decay = 0.0});
  const Batch batch = MakeBatch(2, 16, 64, 3);
  auto step = [&] {
    models::LlamaOutput out = model(batch.ids, batch.mask, batch.labels);
    out.loss.backward();
    opt.step();
    opt.zero_grad();
    return GetLazyStats().last_num_nodes;
  };
  const int64_t plain = step();
  float eval = 0;
  {
    NoGradGuard no_grad;
    EXPECT_FALSE(GradEnabled());
    models::LlamaOutput out = model(batch.ids, batch.mask, batch.labels);
    EXPECT_FALSE(out.loss.requires_grad());
    eval = out.loss.item();
  }
  EXPECT_TRUE(GradEnabled());
  EXPECT_TRUE(std::isfinite(eval));
  EXPECT_EQ(step(), plain) << "the evaluation's graph must not join the next step";
}

TEST(Lazy, ParametersDependOnlyOnSeedAndName) {
  models::LlamaForCausalLM a(testing::TinyLlamaConfig(), 7), b(testing::TinyLlamaConfig(), 7),
      c(testing::TinyLlamaConfig(), 8);
  const auto pa = a.NamedParameters(), pb = b.NamedParameters(), pc = c.NamedParameters();
  ASSERT_EQ(pa.size(), pb.size());
  for (size_t i = 0; i < pa.size(); ++i) {
    EXPECT_EQ(pa[i].first, pb[i].first);
    EXPECT_EQ(pa[i].second.to_floats(), pb[i].second.to_floats()) << pa[i].first;
  }
  EXPECT_NE(pa[2].second.to_floats(), pc[2].second.to_floats());
  EXPECT_EQ(pa[0].first, "model.embed_tokens.weight");
  EXPECT_EQ(pa[2].first, "model.layers.0.self_attn.q_proj.weight");
  EXPECT_EQ(pa.back().first, "lm_head.weight");
  EXPECT_EQ(testing::TinyLlamaConfig().NumParameters(), [&] {
    int64_t n = 0;
    for (auto& [name, t] : pa) n += t.numel();
    return n;
  }());
}

TEST(Lazy, IntermediatesAreFreedAfterLastUse) {
  // A chain of 20 scalings of a 4 MiB tensor: only ~2 buffers may be live at once.
  runtime::Allocator* cpu = runtime::CpuAllocator();
  Tensor x = Tensor::FromData(runtime::Tensor::Full({1 << 20}, DType::kF32, 1.0));
  const int64_t base = cpu->live_bytes();
  cpu->ResetPeak();
  Tensor y = x;
  for (int i = 0; i < 20; ++i) y = y * 1.5;
  const float v = F::sum(y).item();
  EXPECT_NEAR(v, (1 << 20) * std::pow(1.5f, 20), 1e-3 * (1 << 20) * std::pow(1.5f, 20));
  const int64_t peak = cpu->peak_bytes() - base;
  EXPECT_LE(peak, 3 * (4 << 20)) << "peak " << peak;
}

TEST(Lazy, ErrorsNameTheOpAndShapesAtTheCallSite) {
  Tensor a = Tensor::FromData(runtime::Tensor::Zeros({2, 3}, DType::kF32));
  Tensor b = Tensor::FromData(runtime::Tensor::Zeros({4, 5}, DType::kF32));
  EXPECT_ERROR_MENTIONS(F::matmul(a, b), "matmul", "f32[2, 3]", "f32[4, 5]");
  EXPECT_ERROR_MENTIONS(a + b, "add", "f32[2, 3]", "f32[4, 5]");
  EXPECT_ERROR_MENTIONS(F::sum(a, {2}), "sum", "axis 2 out of range");
  Tensor ids = Tensor::FromVector<int64_t>({0, 9}, {2});
  Tensor w = Tensor::FromData(runtime::Tensor::Zeros({4, 3}, DType::kF32));
  Tensor e = F::embedding(ids, w);  // recorded fine; the index is checked when it runs
  EXPECT_ERROR_MENTIONS(e.data(), "embedding", "index 9", "[0, 4)");
  // The failed graph is discarded: its tensors say so instead of returning garbage.
  EXPECT_ERROR_MENTIONS(e.data(), "failed or was discarded");
  // ...and the runtime keeps working.
  EXPECT_FLOAT_EQ(F::sum(a + a).item(), 0.0f);
}

TEST(Lazy, FailedStepLosesNoParameterOrGradient) {
  models::LlamaForCausalLM model(testing::TinyLlamaConfig(), 3);
  optim::AdamW opt(model.Parameters(), optim::AdamWOptions{.lr = 1e-2});
  const Batch batch = MakeBatch(2, 16, 64, 0);
  Sync();
  // One good step, then accumulate a gradient without stepping.
  model(batch.ids, batch.mask, batch.labels).loss.backward();
  opt.step();
  opt.zero_grad();
  model(batch.ids, batch.mask, batch.labels).loss.backward();
  Sync();
  std::vector<std::vector<float>> params, grads;
  for (const Tensor& p : model.Parameters()) {
    params.push_back(p.to_floats());
    grads.push_back(p.grad().to_floats());
  }
  // A second backward plus the step, on a device too small for it: out of memory.
  runtime::Allocator* cpu = runtime::CpuAllocator();
  const int64_t cap = cpu->capacity();
  model(batch.ids, batch.mask, batch.labels).loss.backward();
  cpu->set_capacity(cpu->live_bytes() + (64 << 10));
  EXPECT_THROW(opt.step(), OutOfMemoryError);
  cpu->set_capacity(cap);
  EXPECT_EQ(opt.step_count(), 1);
  const auto ps = model.Parameters();
  for (size_t i = 0; i < ps.size(); ++i) {
    EXPECT_EQ(ps[i].to_floats(), params[i]) << ps[i].name();
    EXPECT_EQ(ps[i].grad().to_floats(), grads[i]) << ps[i].name();
  }
  // Training goes on from the preserved state.
  opt.step();
  EXPECT_NE(ps[2].to_floats(), params[2]);
}

TEST(Lazy, OutOfMemoryLeavesTheRuntimeUsable) {
  runtime::Allocator* cpu = runtime::CpuAllocator();
  const int64_t cap = cpu->capacity();
  Tensor x = Tensor::FromData(runtime::Tensor::Full({1 << 20}, DType::kF32, 2.0));
  cpu->set_capacity(cpu->live_bytes() + (6 << 20));  // room for one more 4 MiB tensor, not two
  Tensor big = F::expand(F::reshape(x, {1, 1 << 20}), {4, 1 << 20});
  Tensor y = F::sum(big * 2.0);
  EXPECT_THROW(y.item(), OutOfMemoryError);
  cpu->set_capacity(cap);
  EXPECT_FLOAT_EQ(F::sum(x).item(), 2.0f * (1 << 20));
}

}  // namespace
}  // namespace moreh
