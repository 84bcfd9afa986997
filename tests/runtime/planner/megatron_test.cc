// The planner's time model against published measurements: Megatron-LM (Narayanan et al., SC'21,
// Table 1): GPT models on A100 80 GB (DGX A100 nodes), sequence 2048, vocabulary 51200, full
// activation recomputation. For each configuration, the per-GPU TFLOP/s the planner predicts for
// the paper's own (t, p, batch) must be within 20 % of the paper's measurement, using the paper's
// FLOP formula 96 B s l h^2 (1 + s / 6h + V / 16 l h). GPT's 4h MLP is modelled as a SwiGLU MLP of
// the same FLOPs (3 h I = 8 h^2, I = 8h/3 rounded to the TP degree).
#include <gtest/gtest.h>

#include <cmath>

#include "runtime/planner/planner.h"

namespace moreh::planner {
namespace {

struct Published {
  const char* name;
  int heads, hidden, layers, t, p, gpus, batch;
  double tflops;
};

ClusterSpec A100Cluster(int gpus) {
  ClusterSpec c =
      ClusterSpec::FromFile(std::string(MOREH_SOURCE_DIR) + "/examples/clusters/dgx-a100.json")
          .value();
  c.num_devices = gpus;
  // Megatron-LM as published (2021) reduced the gradients after the backward.
  c.overlapped_dp_reduction = false;
  return c;
}

TrainJob GptJob(const Published& m) {
  TrainJob job;
  job.model.vocab_size = 51200;
  job.model.hidden_size = m.hidden;
  int64_t inter = static_cast<int64_t>(std::llround(8.0 * m.hidden / 3.0));
  inter = (inter + m.t - 1) / m.t * m.t;
  job.model.intermediate_size = inter;
  job.model.num_hidden_layers = m.layers;
  job.model.num_attention_heads = m.heads;
  job.model.num_key_value_heads = m.heads;
  job.model.tie_word_embeddings = true;  // GPT ties the embedding and the output layer
  job.global_batch = m.batch;
  job.seq_len = 2048;
  job.flash_attention = false;  // Megatron-LM in 2021: fused softmax, T x T scores in memory
  return job;
}

double PredictedTflops(const Published& m, Candidate* out) {
  const TrainJob job = GptJob(m);
  const ClusterSpec cl = A100Cluster(m.gpus);
  PlannerOptions o;
  o.log = false;
  Candidate c;
  c.tp = m.t;
  c.num_stages = m.p;
  c.dp = m.gpus / (m.t * m.p);
  c.batch_per_device = 1;
  c.num_micro_batches = m.batch / c.dp;
  c.recompute = 2;
  c.distribute_param = false;
  *out = EvaluateCandidate(job, cl, o, c);
  const double B = m.batch, s = 2048, l = m.layers, h = m.hidden, V = 51200;
  const double flops = 96 * B * s * l * h * h * (1 + s / (6 * h) + V / (16 * l * h));
  return flops / out->step_time / m.gpus / 1e12;
}

TEST(PlannerVsMegatron, PublishedThroughputWithin20Percent) {
  const Published table[] = {
      {"1.7B", 24, 2304, 24, 1, 1, 32, 512, 137},
      {"39.1B", 64, 8192, 48, 8, 2, 512, 1536, 138},
      {"1T", 160, 25600, 128, 8, 64, 3072, 3072, 163},
  };
  for (const Published& m : table) {
    Candidate c;
    const double pred = PredictedTflops(m, &c);
    std::printf(
        "%-6s paper %5.0f TFLOP/s/GPU, predicted %6.1f (step %.2f s, bubble %.0f%%, "
        "peak %.1f GiB%s)\n",
        m.name, m.tflops, pred, c.step_time, 100 * c.bubble_fraction,
        static_cast<double>(c.peak_bytes) / (1 << 30), c.feasible ? "" : ", infeasible");
    EXPECT_NEAR(pred, m.tflops, 0.2 * m.tflops) << m.name;
    // The planner's own choice for the same job and cluster is predicted at least as fast.
    PlannerOptions o;
    o.log = false;
    const Plan plan = PlanTraining(GptJob(m), A100Cluster(m.gpus), o);
    std::printf("       planner's choice: %s, step %.2f s (%zu candidates)\n",
                plan.chosen.Describe().c_str(), plan.chosen.step_time, plan.candidates.size());
    EXPECT_LE(plan.chosen.step_time, c.step_time * (1 + 1e-9)) << m.name;
  }
}

}  // namespace
}  // namespace moreh::planner
