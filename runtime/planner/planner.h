// The auto-config module: given a Llama training job and a cluster, enumerate the parallel
// configurations (pipeline stages, micro-batches, batch per device, tensor parallelism,
// recomputation, parameter sharding), predict each one's per-device memory and step time from the
// real step graph's costs (layer_cost.h) and a simulated 1F1B schedule (schedule.h), drop those
// that do not fit, and pick the fastest. Logs in the reference platform's words. Candidates are
// evaluated in parallel; PlanTraining is thread-safe (it shares nothing between calls).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "runtime/core/status.h"
#include "runtime/models/llama.h"
#include "runtime/planner/cluster.h"
#include "runtime/planner/schedule.h"

namespace moreh::planner {

struct TrainJob {
  models::LlamaConfig model;
  int64_t global_batch = 1;
  int64_t seq_len = 1;
  // bf16: mixed precision (bf16 weights, activations and gradients; f32 master weights and AdamW
  // states). f32: everything f32 (the CPU backend today).
  DType compute_dtype = DType::kBF16;
  // false: attention materializes the T x T probabilities (as systems without a fused flash kernel
  // do; used to model published measurements of such systems). The runtime's own kernel is fused.
  bool flash_attention = true;
  // Tensor parallelism splits the embedding and LM head by vocabulary (Megatron-LM); false: they
  // are replicated on every tensor-parallel rank (the CPU runtime today).
  bool vocab_parallel = true;
};

// User limits (the reference platform's enable_advanced_parallelization options and environment).
struct PlannerOptions {
  bool advanced_parallelization = true;  // false: plain data parallelism
  bool pipeline = true;
  int max_stages = 0;         // 0: no limit
  int max_micro_batches = 0;  // 0: no limit
  int max_tp = 0;             // 0: up to a node
  std::vector<int> recompute_levels = {0, 1, 2};
  bool distribute_param = true;
  bool distribute_low_prec_param = true;  // candidates that also shard the low-precision weights
  int threads = 0;  // 0: MOREH_ADVANCED_PARALLELIZATION_MAX_PARALLEL_COMPILE_THREADS or all cores
  double memory_usage_ratio =
      0.8;               // MOREH_ADVANCED_PARALLELIZATION_MEMORY_USAGE_CORRECTION_RATIO / 100
  int detailed_log = 0;  // MOREH_ADVANCED_PARALLELIZATION_DETAILED_LOG
  bool log = true;

  // Reads the MOREH_ADVANCED_PARALLELIZATION_* variables over the defaults.
  static PlannerOptions FromEnvironment();
  // The user's switch and limits (moreh::option) plus the environment.
  static PlannerOptions FromUserOptions();
};

struct Candidate {
  int num_stages = 1, num_micro_batches = 1, batch_per_device = 1, tp = 1, dp = 1;
  int recompute = 0;
  bool distribute_param = false, distribute_low_prec_param = false;

  bool feasible = false;
  std::string reason;                     // why not, when not feasible
  std::vector<int> stage_layers;          // decoder layers per stage
  std::vector<int64_t> stage_peak_bytes;  // predicted peak per device of each stage
  int64_t peak_bytes = 0;                 // max over stages
  double step_time = 0, pipeline_time = 0, dp_time = 0, optimizer_time = 0, bubble_fraction = 0;
  double tokens_per_s = 0, mfu = 0;

  std::string Describe() const;  // "num_stages : 2, num_micro_batches : 4, ..."
  // The configuration as MOREH_ADVANCED_PARALLELIZATION_CONFIG takes it (JSON: num_stages, tp,
  // dp, num_micro_batches, recompute, distribute_param, distribute_low_prec_param).
  std::string ConfigJson() const;
};

struct Plan {
  Candidate chosen;
  std::vector<Candidate> candidates;
  int num_feasible = 0;
  double compile_ms = 0, select_ms = 0;
  std::vector<std::vector<ScheduleStep>> schedule;  // the chosen plan's 1F1B table
  int64_t device_memory = 0;
  double budget_bytes = 0;
  std::string ToJson() const;
};

// Throws moreh::OutOfMemoryError when no candidate fits (with AP off: when a replica does not fit),
// naming the bytes the best candidate needs and the bytes available.
Plan PlanTraining(const TrainJob& job, const ClusterSpec& cluster, const PlannerOptions& options);

// Evaluates one configuration (for tests and for judging a given configuration).
Candidate EvaluateCandidate(const TrainJob& job, const ClusterSpec& cluster,
                            const PlannerOptions& options, Candidate c);

// Model FLOPs per token for MFU: 6 N + 12 L C T (N parameters, L layers, C hidden, T sequence).
double ModelFlopsPerToken(const models::LlamaConfig& c, int64_t seq_len);

}  // namespace moreh::planner
