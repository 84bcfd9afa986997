// Stage programs and the stage runner against the one-device run: every pipeline / data-parallel /
// micro-batch / recomputation / sharded-optimizer configuration the planner can choose for a small
// Llama on 4 devices trains 10 AdamW steps with the same losses and final weights as the lazy
// one-device runtime. Ranks are threads of this process, each with its own UCX worker, so the real
// transport, ring collectives and runner are exercised (the daemons test runs them in workers).
#include <gtest/gtest.h>

#include <barrier>
#include <cmath>
#include <map>
#include <random>
#include <thread>

#include "runtime/comm/grid.h"
#include "runtime/executor.h"
#include "runtime/models/llama.h"
#include "runtime/net/base64.h"
#include "runtime/optim.h"
#include "runtime/parallel/micro_batches.h"
#include "runtime/parallel/stage_graph.h"
#include "runtime/parallel/stage_job.h"
#include "runtime/parallel/stage_runner.h"
#include "runtime/parallel/tp_shards.h"
#include "runtime/planner/planner.h"
#include "tests/models/llama_test_util.h"

namespace moreh::parallel {
namespace {

// The shared tiny Llama with 4 layers (stages 1/2/4) and 8 heads (TP 4).
models::LlamaConfig SmallLlama() {
  models::LlamaConfig c = testing::TinyLlamaConfig();
  c.vocab_size = 96;
  c.num_hidden_layers = 4;
  c.num_attention_heads = 8;
  c.num_key_value_heads = 4;  // grouped-query, and divisible by tensor parallelism 4
  return c;
}

struct Batch {
  runtime::Tensor ids, mask, labels;
};

// Token ids with right padding (pad 0, label -100 on pads), different per step.
std::vector<Batch> MakeBatches(int steps, int64_t B, int64_t T, int64_t V) {
  std::mt19937 rng(7);
  std::vector<Batch> out;
  for (int s = 0; s < steps; ++s) {
    std::vector<int64_t> ids(B * T), mask(B * T), labels(B * T);
    for (int64_t b = 0; b < B; ++b) {
      const int64_t len = 2 + static_cast<int64_t>(rng() % (T - 1));
      for (int64_t t = 0; t < T; ++t) {
        const bool tok = t < len;
        ids[b * T + t] = tok ? 1 + static_cast<int64_t>(rng() % (V - 1)) : 0;
        mask[b * T + t] = tok;
        labels[b * T + t] = tok ? ids[b * T + t] : -100;
      }
    }
    out.push_back({runtime::Tensor::FromVector(ids, {B, T}),
                   runtime::Tensor::FromVector(mask, {B, T}),
                   runtime::Tensor::FromVector(labels, {B, T})});
  }
  return out;
}

struct Trajectory {
  std::vector<double> losses;
  std::map<std::string, std::vector<float>> weights;
};

constexpr double kLr = 1e-3;

Trajectory OneDevice(const models::LlamaConfig& c, const std::vector<Batch>& batches) {
  models::LlamaForCausalLM model(c, /*seed=*/3);
  optim::AdamW opt(model.parameters(), kLr);
  Trajectory tr;
  for (const Batch& b : batches) {
    auto out = model(Tensor::FromData(b.ids), Tensor::FromData(b.mask), Tensor::FromData(b.labels));
    out.loss.backward();
    opt.step();
    model.zero_grad();
    tr.losses.push_back(out.loss.item());
  }
  for (auto& [name, p] : model.NamedParameters()) tr.weights[name] = p.to_floats();
  return tr;
}

// Runs the candidate's configuration: rank = tp_rank + tp * (dp_rank + dp * stage).
Trajectory Distributed(const models::LlamaConfig& c, const planner::Candidate& cand,
                       const std::vector<Batch>& batches) {
  const int pp = cand.num_stages, dp = cand.dp, m = cand.num_micro_batches, tp = cand.tp;
  const int world = pp * dp * tp;
  const models::LlamaForCausalLM init(c, /*seed=*/3);
  std::map<std::string, runtime::Tensor> init_w;
  for (auto& [name, p] : init.NamedParameters()) init_w[name] = p.data();
  const auto grid = comm::CommGrid::Create(tp, dp, pp).value();
  std::vector<std::unique_ptr<comm::UcxTransport>> tr;
  for (int r = 0; r < world; ++r) tr.push_back(comm::UcxTransport::Create(r).value());
  for (int r = 0; r < world; ++r) {
    for (int q = 0; q < world; ++q) {
      if (q != r) {
        EXPECT_TRUE(tr[r]->Connect(q, tr[q]->address()).ok());
      }
    }
  }
  const auto table = planner::OneFOneB(pp, m, false);
  std::vector<std::vector<std::vector<MicroBatch>>> split;  // [step][replica][mb]
  for (const Batch& b : batches) split.push_back(SplitBatch(b.ids, b.mask, b.labels, dp, m));
  std::vector<std::vector<double>> losses(dp, std::vector<double>(batches.size()));
  Trajectory out;
  std::mutex mu;
  std::vector<std::string> errors;
  std::vector<std::thread> threads;
  for (int r = 0; r < world; ++r) {
    threads.emplace_back([&, r] {
      try {
        const comm::GridCoord at = grid.Coord(r);
        const int s = at.pp_rank;
        const StageSpec spec = StageSpecFor(c, cand, s, batches[0].ids.size(1));
        const bool zero3 = cand.distribute_low_prec_param;
        StageRunner runner(BuildStageProgram(spec), nullptr, {.lr = kLr}, dp, at.dp_rank,
                           cand.distribute_param && !zero3);
        const auto& names = runner.param_names();
        std::vector<Shape> tp_shapes;
        for (size_t i = 0; i < names.size(); ++i) {
          runtime::Tensor t = ShardOf(init_w.at(names[i]), TpShardDim(names[i]), tp, at.tp_rank);
          tp_shapes.push_back(t.shape());
          if (zero3) t = FlatShardOf(t, dp, at.dp_rank);
          runner.parameter(i).CopyFrom(t);
        }
        const int hop = tp * dp;  // ranks between consecutive stages
        UcxPipeLinks links(tr[r].get(), s > 0 ? r - hop : -1, s < pp - 1 ? r + hop : -1,
                           std::chrono::milliseconds(20000));
        comm::RingCollectives dpc(tr[r].get(), grid.Group(comm::Dim::kDp, r), 16,
                                  std::chrono::milliseconds(20000));
        comm::RingCollectives tpc(tr[r].get(), grid.Group(comm::Dim::kTp, r), 17,
                                  std::chrono::milliseconds(20000));
        runner.set_tensor_parallel(&tpc);
        runner.set_data_parallel(&dpc);
        for (size_t step = 0; step < batches.size(); ++step) {
          links.set_step(static_cast<int64_t>(step));
          const double l = runner.RunMicroBatches(table[s], split[step][at.dp_rank], &links);
          if (spec.last && at.tp_rank == 0) losses[at.dp_rank][step] = l;
          runner.Update(&dpc, kLr);
        }
        std::vector<runtime::Tensor> full;
        for (size_t i = 0; i < names.size(); ++i) {
          runtime::Tensor t = runner.parameter(i);
          if (zero3) t = GatherFlatShards(&dpc, t, tp_shapes[i]);
          full.push_back(GatherShards(&tpc, t, TpShardDim(names[i])));
        }
        if (at.dp_rank == 0 && at.tp_rank == 0) {
          std::lock_guard<std::mutex> lock(mu);
          for (size_t i = 0; i < names.size(); ++i) out.weights[names[i]] = full[i].ToFloats();
        }
      } catch (const std::exception& e) {
        std::lock_guard<std::mutex> lock(mu);
        errors.push_back(fmt::format("rank {}: {}", r, e.what()));
      }
    });
  }
  for (auto& t : threads) t.join();
  for (const auto& e : errors) ADD_FAILURE() << e;
  for (size_t step = 0; step < batches.size(); ++step) {
    double l = 0;
    for (int d = 0; d < dp; ++d) l += losses[d][step];
    out.losses.push_back(l);
  }
  return out;
}

// Mixed precision (the GPU's compute dtype): the whole-model stage program in bf16 compiles and
// runs (here on the CPU executor, whose kernels round each op's outputs to bf16 as the GPU's do);
// its loss and gradients are the f32 program's within bf16 accuracy.
TEST(StageProgram, Bf16ProgramMatchesF32WithinBf16Accuracy) {
  StageSpec s;
  s.model = SmallLlama();
  s.num_layers = static_cast<int>(s.model.num_hidden_layers);
  s.micro_batch = 2;
  s.seq_len = 16;
  std::mt19937 rng(3);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_int_distribution<int64_t> token(0, s.model.vocab_size - 1);
  std::map<std::string, std::vector<float>> weights;
  std::vector<int64_t> ids(s.micro_batch * s.seq_len);
  for (auto& id : ids) id = token(rng);
  std::vector<std::vector<float>> results[2];
  for (int pass = 0; pass < 2; ++pass) {
    s.compute_dtype = pass == 0 ? DType::kF32 : DType::kBF16;
    const StageProgram p = BuildStageProgram(s);
    const auto cg = runtime::Compile(p.full);
    const Graph& g = cg->graph;
    std::vector<runtime::Tensor> inputs;
    for (int v : g.inputs()) {
      const ValueInfo& info = g.info(v);
      if (v == p.ids || v == p.labels) {
        inputs.push_back(runtime::Tensor::FromVector(ids, info.shape));
      } else if (v == p.mask) {
        inputs.push_back(runtime::Tensor::Full(info.shape, DType::kI64, 1.0));
      } else if (v == p.loss_weight) {
        inputs.push_back(runtime::Tensor::Full(info.shape, DType::kF32, 1.0 / 30));
      } else {
        EXPECT_EQ(info.dtype, s.compute_dtype) << g.value(v).name;
        auto& w = weights[g.value(v).name];
        if (w.empty()) {
          const bool norm = g.value(v).name.find("norm") != std::string::npos;
          for (int64_t i = 0; i < Numel(info.shape); ++i) {
            w.push_back(norm ? 1.0f : 0.1f * normal(rng));
          }
        }
        inputs.push_back(runtime::Tensor::FromVector(w, info.shape).To(info.dtype));
      }
    }
    runtime::Executor exec;
    for (const auto& t : exec.Run(*cg, inputs)) results[pass].push_back(t.ToFloats());
    EXPECT_EQ(g.info(p.out).dtype, DType::kF32);  // the loss stays f32
  }
  ASSERT_EQ(results[0].size(), results[1].size());
  for (size_t k = 0; k < results[0].size(); ++k) {
    const auto &a = results[0][k], &b = results[1][k];
    double diff = 0, norm = 0;
    for (size_t i = 0; i < a.size(); ++i) {
      diff += (a[i] - b[i]) * static_cast<double>(a[i] - b[i]);
      norm += a[i] * static_cast<double>(a[i]);
    }
    EXPECT_LE(std::sqrt(diff / std::max(norm, 1e-30)), 5e-2) << "output " << k;
    EXPECT_GT(std::sqrt(diff), 0.0) << "output " << k << ": bf16 computed nothing different";
  }
}

TEST(StageProgram, SplitsIntoForwardAndBackward) {
  StageSpec s;
  s.model = SmallLlama();
  s.first_layer = 1;
  s.num_layers = 2;
  s.first = s.last = false;
  s.micro_batch = 2;
  s.seq_len = 8;
  for (int r : {0, 1, 2}) {
    s.recompute = r;
    const StageProgram p = BuildStageProgram(s);
    EXPECT_EQ(p.params.size(), 18u);
    EXPECT_EQ(p.params[0], "model.layers.1.input_layernorm.weight");
    EXPECT_EQ(p.forward.graph.nodes().size(), static_cast<size_t>(p.num_forward_nodes));
    EXPECT_TRUE(p.forward.graph.Validate().ok());
    EXPECT_TRUE(p.backward.graph.Validate().ok());
    // Saved values: full recomputation keeps each layer's input (the stage's input and the first
    // layer's output here), nothing inside a layer.
    const size_t saved = p.forward.outputs.size() - 1;
    if (r == kRecomputeFull) {
      EXPECT_EQ(saved, 1u);
    }
    if (r == kRecomputeNone) {
      EXPECT_GT(saved, 10u);
    }
    // Graphs survive the wire.
    auto back = Graph::FromJson(p.backward.graph.ToJson());
    ASSERT_TRUE(back.ok());
    EXPECT_EQ(back->StructuralHash(), p.backward.graph.StructuralHash());
  }
  StageProgram none = (s.recompute = 0, BuildStageProgram(s));
  StageProgram sel = (s.recompute = 1, BuildStageProgram(s));
  StageProgram full = (s.recompute = 2, BuildStageProgram(s));
  EXPECT_GT(none.forward.outputs.size(), sel.forward.outputs.size());
  EXPECT_GT(full.backward.graph.nodes().size(), sel.backward.graph.nodes().size());
  EXPECT_GT(sel.backward.graph.nodes().size(), none.backward.graph.nodes().size());
}

TEST(StageProgram, RejectsBadSpecs) {
  StageSpec s;
  s.model = SmallLlama();
  s.num_layers = 5;
  EXPECT_THROW(BuildStageProgram(s), Error);
  s.num_layers = 2;  // first and last, but ends at 2 of 4
  EXPECT_THROW(BuildStageProgram(s), Error);
  s.num_layers = 4;
  s.recompute = 3;
  EXPECT_THROW(BuildStageProgram(s), Error);
  s.recompute = 0;
  s.micro_batch = 0;
  EXPECT_THROW(BuildStageProgram(s), Error);
  s.micro_batch = 1;
  s.tp = 3;  // does not divide the heads
  EXPECT_THROW(BuildStageProgram(s), Error);
  s.tp = 1;
  s.model.tie_word_embeddings = true;
  s.last = false;
  s.num_layers = 2;
  EXPECT_THROW(BuildStageProgram(s), Error);
}

TEST(SplitBatch, WeightsSumToTheOneDeviceMean) {
  const auto b = MakeBatches(1, 8, 8, 96)[0];
  EXPECT_THROW(SplitBatch(b.ids, b.mask, b.labels, 3, 1), Error);
  const auto s = SplitBatch(b.ids, b.mask, b.labels, 2, 2);
  ASSERT_EQ(s.size(), 2u);
  ASSERT_EQ(s[0].size(), 2u);
  EXPECT_EQ(s[1][1].ids.shape(), Shape({2, 8}));
  EXPECT_EQ(s[1][1].ids.ToInts()[0], b.ids.ToInts()[6 * 8]);
  int64_t counted = 0;
  const auto l = b.labels.ToInts();
  for (int r = 0; r < 8; ++r) {
    for (int t = 1; t < 8; ++t) counted += l[r * 8 + t] != -100;
  }
  EXPECT_FLOAT_EQ(s[0][0].loss_weight.ToFloats()[0], 1.0f / static_cast<float>(counted));
}

// Every candidate of the small Llama on 4 devices: stages 1/2/4, tensor parallelism 1/2/4, data
// parallelism, micro-batches, recomputation none/selective/full, distribute_param off/on and
// distribute_low_prec_param (parameters sharded over the replicas, gathered per layer).
TEST(Pipeline, EveryCandidateMatchesOneDevice) {
  const models::LlamaConfig c = SmallLlama();
  const int64_t B = 8, T = 8;
  const auto batches = MakeBatches(10, B, T, c.vocab_size);
  const Trajectory ref = OneDevice(c, batches);
  planner::TrainJob job;
  job.model = c;
  job.global_batch = B;
  job.seq_len = T;
  job.compute_dtype = DType::kF32;
  planner::ClusterSpec cl;
  cl.name = "test";
  cl.num_devices = 4;
  cl.devices_per_node = 4;
  cl.device.memory_bytes = int64_t{1} << 34;
  cl.device.peak_flops = 1e11;
  cl.device.memory_bandwidth = 1e10;
  cl.intra_node_bandwidth = 4e9;
  planner::PlannerOptions o;
  o.log = false;
  const planner::Plan plan = planner::PlanTraining(job, cl, o);
  int run = 0;
  double worst_l = 0, worst_w = 0;
  std::set<std::pair<int, int>> shapes;
  std::set<std::tuple<int, int, int, int, int>> seen;
  for (const planner::Candidate& cand : plan.candidates) {
    if (!cand.feasible) continue;
    if (!seen.insert({cand.num_stages * 16 + cand.tp, cand.dp, cand.num_micro_batches,
                      cand.recompute, cand.distribute_param * 2 + cand.distribute_low_prec_param})
             .second) {
      continue;
    }
    SCOPED_TRACE(cand.Describe() + " dp=" + std::to_string(cand.dp));
    const Trajectory got = Distributed(c, cand, batches);
    ASSERT_EQ(got.losses.size(), ref.losses.size());
    for (size_t i = 0; i < ref.losses.size(); ++i) {
      EXPECT_NEAR(got.losses[i], ref.losses[i], 1e-4 * std::abs(ref.losses[i])) << "step " << i;
    }
    double max_diff = 0;
    for (const auto& [name, w] : ref.weights) {
      const auto it = got.weights.find(name);
      ASSERT_NE(it, got.weights.end()) << name;
      ASSERT_EQ(it->second.size(), w.size()) << name;
      for (size_t k = 0; k < w.size(); ++k) {
        max_diff = std::max(max_diff, static_cast<double>(std::abs(it->second[k] - w[k])));
      }
    }
    EXPECT_LE(max_diff, 1e-4);
    worst_w = std::max(worst_w, max_diff);
    for (size_t i = 0; i < ref.losses.size(); ++i) {
      worst_l =
          std::max(worst_l, std::abs(got.losses[i] - ref.losses[i]) / std::abs(ref.losses[i]));
    }
    shapes.insert({cand.num_stages, cand.tp});
    ++run;
  }
  // stages {1, 2, 4} x dp x micro-batches x recomputation x distribute_param
  EXPECT_GE(run, 80);
  // (stages, tp) over all 4 devices (data parallelism takes the rest).
  EXPECT_EQ(shapes,
            (std::set<std::pair<int, int>>{{1, 1}, {1, 2}, {1, 4}, {2, 1}, {2, 2}, {4, 1}}));
  std::printf("configurations run: %d; worst loss rel. error %.3g, worst weight diff %.3g\n", run,
              worst_l, worst_w);
}

}  // namespace
}  // namespace moreh::parallel

namespace moreh::parallel {
namespace {

// A worker dials only UCX addresses that a worker of its cluster vouched for (the client relays
// them and could otherwise make a daemon hand arbitrary bytes to ucp_ep_create).
TEST(StageJob, RefusesUnvouchedPeerAddresses) {
  StageAssignment a;
  a.world = 2;
  a.num_stages = 2;
  a.stage = 0;
  a.rank = 0;
  a.dp_group = {0};
  a.tp_group = {0};
  a.next_rank = 1;
  StageSpec s;
  s.model = SmallLlama();
  s.num_layers = 2;
  s.last = false;
  s.micro_batch = 1;
  s.seq_len = 4;
  a.program = BuildStageProgram(s);
  // The assignment survives its wire format.
  auto back = StageAssignment::FromJson(a.ToJson());
  ASSERT_TRUE(back.ok()) << back.status().message();
  auto job = StageJob::Create(back.value(), nullptr);
  auto peer = comm::UcxTransport::Create(1).value();
  const nlohmann::json peers = {
      {{"rank", 1}, {"address", net::Base64Encode(peer->address())}, {"address_mac", "forged"}}};
  try {
    job->Connect(peers, [](const std::string&, const std::string& mac) { return mac == "good"; });
    ADD_FAILURE() << "an unvouched address was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("not issued by a worker of this cluster"),
              std::string::npos)
        << e.what();
  }
  nlohmann::json ok = peers;
  ok[0]["address_mac"] = "good";
  EXPECT_NO_THROW(
      job->Connect(ok, [](const std::string&, const std::string& mac) { return mac == "good"; }));
  // A malformed assignment is refused with the field named.
  nlohmann::json bad = a.ToJson();
  bad["program"]["forward"]["inputs"] = "x";
  auto r = StageAssignment::FromJson(bad);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("'inputs'"), std::string::npos) << r.status().message();
}

}  // namespace
}  // namespace moreh::parallel
