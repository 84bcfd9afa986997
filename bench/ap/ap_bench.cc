// Advanced parallelization against reality, on a local cluster of worker daemons (one process per
// device, 127.0.0.1). Modes:
//   planner MODEL_DIR BATCH SEQ STEPS MEMORY: plans the job, then runs every feasible candidate for
//     STEPS steps through the daemons (MOREH_ADVANCED_PARALLELIZATION_CONFIG-style forcing) and
//     prints one JSON line per candidate: predicted and measured per-device peak memory and step
//     time, and whether it is the planner's choice.
//   bubble MODEL_DIR BATCH SEQ STEPS STAGES MICRO: one pipeline (data parallelism 1) and the time
//     each stage waits, per step, as JSON.
//   config MODEL_DIR BATCH SEQ STEPS CONFIG_JSON: one given configuration on 4 devices.
//   predict MODEL_DIR BATCH SEQ 0 CLUSTER_JSON_FILE: the planner alone on a saved cluster
//     description (from the planner mode's first line): its prediction for every candidate.
//   dp MODEL_DIR BATCH SEQ STEPS DEVICES: plain data parallelism (AP off) over DEVICES devices:
//     tokens/s as JSON.
// Input ids are random tokens (no padding); the model is initialised from seed 0.
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <random>
#include <string>

#include "runtime/client/local_cluster.h"
#include "runtime/log.h"
#include "runtime/models/llama.h"
#include "runtime/parallel/session.h"

namespace {
using json = nlohmann::json;
using moreh::runtime::Tensor;
using clk = std::chrono::steady_clock;

struct Batch {
  Tensor ids, labels;
};

Batch RandomBatch(int64_t B, int64_t T, int64_t V, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<int64_t> ids(B * T);
  for (auto& x : ids) x = 1 + static_cast<int64_t>(rng() % (V - 1));
  Tensor t = Tensor::FromVector(ids, {B, T});
  return {t, t};
}

struct Measured {
  double step_s = 0;
  std::vector<int64_t> peak;               // per rank
  std::vector<double> wait, busy, update;  // per rank, seconds per step
};

Measured Run(moreh::parallel::Session& s, const moreh::models::LlamaConfig& c, int64_t B, int64_t T,
             int steps) {
  Measured m;
  double total = 0;
  for (int i = 0; i <= steps; ++i) {  // step 0 sets the job up and is not timed
    const Batch b = RandomBatch(B, T, c.vocab_size, static_cast<uint32_t>(i));
    const auto t0 = clk::now();
    s.ForwardBackward(b.ids, Tensor(), b.labels);
    s.Update(1e-4);
    const double dt = std::chrono::duration<double>(clk::now() - t0).count();
    const auto& st = s.last_step();
    const auto& up = s.last_update();
    m.peak.resize(st.size(), 0);
    m.wait.resize(st.size(), 0);
    m.busy.resize(st.size(), 0);
    m.update.resize(st.size(), 0);
    for (size_t r = 0; r < st.size(); ++r) {
      m.peak[r] = std::max({m.peak[r], st[r].value("peak_bytes", int64_t{0}),
                            up[r].value("peak_bytes", int64_t{0})});
      if (i > 0) {
        m.wait[r] += st[r].value("wait_s", 0.0) / steps;
        m.busy[r] += (st[r].value("forward_s", 0.0) + st[r].value("backward_s", 0.0)) / steps;
        m.update[r] += up[r].value("update_s", 0.0) / steps;
      }
    }
    if (i > 0) total += dt;
  }
  m.step_s = total / steps;
  return m;
}

// One result line on stdout (the scripts read the lines that start with '{').
void Emit(const json& j) {
  std::printf("%s\n", j.dump().c_str());
  std::fflush(stdout);
}

int Main(int argc, char** argv) {
  if (argc < 7) {
    std::fprintf(stderr, "usage: ap_bench planner|bubble|dp MODEL_DIR BATCH SEQ STEPS ...\n");
    return 2;
  }
  const std::string mode = argv[1], dir = argv[2];
  const int64_t B = std::stoll(argv[3]), T = std::stoll(argv[4]);
  const int steps = std::stoi(argv[5]);
  const auto config = moreh::models::LlamaConfig::FromFile(dir + "/config.json").value();
  if (mode == "predict") {
    // The planner alone on a saved cluster description: what it predicts for every candidate.
    const auto job = moreh::parallel::Session::PlanningJob(config, B, T);
    const auto cl = moreh::planner::ClusterSpec::FromFile(argv[6]).value();
    moreh::planner::PlannerOptions po;
    po.log = false;
    const auto plan = moreh::planner::PlanTraining(job, cl, po);
    for (const auto& c : plan.candidates) {
      if (!c.feasible) continue;
      Emit(json{{"config", json::parse(c.ConfigJson())},
                {"chosen", c.ConfigJson() == plan.chosen.ConfigJson()},
                {"pred_peak", c.peak_bytes},
                {"stage_peak", c.stage_peak_bytes},
                {"pred_step_s", c.step_time}});
    }
    return 0;
  }
  moreh::client::LocalClusterConfig lc;
  lc.num_workers = mode == "bubble" ? std::stoi(argv[6]) : 4;
  if (mode == "dp") lc.num_workers = std::stoi(argv[6]);
  lc.device_memory = mode == "planner" ? argv[6] : "2G";
  auto cluster = moreh::client::LocalCluster::Start(lc).value();
  moreh::parallel::SessionOptions so;
  so.model_dir = dir;
  so.scheduler = cluster->scheduler_address();
  so.device_size = lc.num_workers == 4 ? "Large" : lc.num_workers == 2 ? "Medium" : "Small";
  if (mode == "planner") {
    // The planner's own choice first; its plan lists every candidate.
    std::vector<moreh::planner::Candidate> cands;
    moreh::planner::Candidate chosen;
    {
      auto s = moreh::parallel::Session::Open(so, config);
      Measured m = Run(*s, config, B, T, steps);
      chosen = s->plan().chosen;
      // What the planner was told about the devices (for `ap_bench predict`).
      Emit(json{{"cluster", json::parse(s->cluster().ToJson())}});
      for (const auto& c : s->plan().candidates) {
        if (c.feasible) cands.push_back(c);
      }
    }
    for (const auto& c : cands) {
      moreh::parallel::SessionOptions o = so;
      o.force_config = c.ConfigJson();
      auto s = moreh::parallel::Session::Open(o, config);
      const Measured m = Run(*s, config, B, T, steps);
      int64_t worst_pred = 0, worst_meas = 0;
      double err = 0;
      json per_rank = json::array();
      for (size_t r = 0; r < m.peak.size(); ++r) {
        const int64_t pred = s->plan().chosen.stage_peak_bytes.at(s->stage_of_rank(r));
        per_rank.push_back({{"stage", s->stage_of_rank(r)}, {"pred", pred}, {"meas", m.peak[r]}});
        err = std::max(
            err, std::abs(static_cast<double>(pred - m.peak[r])) / static_cast<double>(m.peak[r]));
        worst_pred = std::max(worst_pred, pred);
        worst_meas = std::max(worst_meas, m.peak[r]);
      }
      const bool is_chosen = c.ConfigJson() == chosen.ConfigJson();
      Emit(json{{"config", json::parse(c.ConfigJson())},
                {"chosen", is_chosen},
                {"pred_peak", worst_pred},
                {"meas_peak", worst_meas},
                {"mem_err", err},
                {"ranks", per_rank},
                {"pred_step_s", c.step_time},
                {"meas_step_s", m.step_s}});
    }
    return 0;
  }
  if (mode == "bubble") {
    const int stages = std::stoi(argv[6]), micro = std::stoi(argv[7]);
    so.force_config = json{
        {"num_stages", stages},
        {"tp", 1},
        {"dp", 1},
        {"num_micro_batches", micro},
        {"recompute", 0}}.dump();
    auto s = moreh::parallel::Session::Open(so, config);
    const Measured m = Run(*s, config, B, T, steps);
    Emit(json{{"stages", stages},
              {"micro_batches", micro},
              {"step_s", m.step_s},
              {"wait_s", m.wait},
              {"busy_s", m.busy}});
    return 0;
  }
  // One given configuration (JSON as MOREH_ADVANCED_PARALLELIZATION_CONFIG).
  if (mode == "config") {
    so.force_config = argv[6];
    auto s = moreh::parallel::Session::Open(so, config);
    const Measured m = Run(*s, config, B, T, steps);
    Emit(json{{"cluster", json::parse(s->cluster().ToJson())}});
    const auto& c = s->plan().chosen;
    // The prediction's parts beside what each rank measured (per step: busy = forward +
    // backward, wait = idle in the pipeline, update = gradient reduction + optimizer).
    Emit(json{{"config", json::parse(argv[6])},
              {"pred_step_s", c.step_time},
              {"pred_pipeline_s", c.pipeline_time},
              {"pred_dp_s", c.dp_time},
              {"pred_optimizer_s", c.optimizer_time},
              {"meas_step_s", m.step_s},
              {"meas_busy_s", m.busy},
              {"meas_wait_s", m.wait},
              {"meas_update_s", m.update}});
    return 0;
  }
  if (mode == "dp") {
    so.advanced_parallelization = false;
    auto s = moreh::parallel::Session::Open(so, config);
    const Measured m = Run(*s, config, B, T, steps);
    Emit(json{{"devices", lc.num_workers},
              {"step_s", m.step_s},
              {"tokens_per_s", static_cast<double>(B * T) / m.step_s}});
    return 0;
  }
  std::fprintf(stderr, "ap_bench: unknown mode '%s'\n", mode.c_str());
  return 2;
}
}  // namespace

int main(int argc, char** argv) {
  moreh::InitLogging();
  try {
    return Main(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "ap_bench: %s\n", e.what());
    return 1;
  }
}
