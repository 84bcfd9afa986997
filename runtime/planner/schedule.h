// Pipeline schedules as data (Megatron's vocabulary): for each stage, the ordered list of
// (micro-batch, forward | recompute | backward) steps it runs, and a simulator that plays a table
// against per-stage step times and the send time between stages. Pure functions.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace moreh::planner {

enum class Phase : uint8_t { kForward, kRecompute, kBackward };

struct ScheduleStep {
  int micro_batch;
  Phase phase;
};

// Non-interleaved 1F1B: stage s runs num_warmup = min(p - s - 1, m) forwards, then alternates one
// forward and one backward (steady state), then the remaining backwards (cool-down). With
// `recompute`, each backward is preceded by the recomputation of its forward.
std::vector<std::vector<ScheduleStep>> OneFOneB(int num_stages, int num_micro_batches,
                                                bool recompute);

// What one step of a stage costs: compute (seconds on a device computing alone) and waits inside
// the step that use no compute (tensor-parallel all-reduces, parameter gathers).
struct StageCost {
  double fwd = 0, bwd = 0, recompute = 0;
  double fwd_wait = 0, bwd_wait = 0;
};

// Devices that share compute: the devices of each stage per node, and how many devices of a node
// compute at full speed at once (ClusterSpec::node_concurrency; 0: no sharing). When more of a
// node's devices compute, each runs at node_concurrency / active of its speed alone.
struct ComputeSharing {
  double node_concurrency = 0;
  // The load (in devices) that a device waiting for its next input puts on its node: a receiver
  // that polls its transport keeps part of a core busy.
  double waiting_load = 0;
  std::vector<std::vector<std::pair<int, int>>> stage_nodes;  // per stage: (node, devices)
};

// Makespan of the table: a forward needs the previous stage's forward of the same micro-batch
// (plus send_time), a backward the next stage's backward (plus send_time); each stage runs its
// steps in order, one at a time. Event-driven: with sharing, a step's compute advances at the
// speed its node allows while it runs.
double SimulatePipeline(const std::vector<std::vector<ScheduleStep>>& table,
                        const std::vector<StageCost>& cost, double send_time,
                        const ComputeSharing& sharing = {});

// The common case: compute only, no sharing.
double SimulatePipeline(const std::vector<std::vector<ScheduleStep>>& table,
                        const std::vector<double>& fwd, const std::vector<double>& bwd,
                        const std::vector<double>& recompute, double send_time);

std::string ScheduleToString(const std::vector<std::vector<ScheduleStep>>& table);

}  // namespace moreh::planner
