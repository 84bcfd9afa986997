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

// Makespan of the table: a forward needs the previous stage's forward of the same micro-batch
// (plus send_time), a backward the next stage's backward (plus send_time); each stage runs its
// steps in order, one at a time. fwd/bwd/recompute times are per stage and micro-batch.
double SimulatePipeline(const std::vector<std::vector<ScheduleStep>>& table,
                        const std::vector<double>& fwd, const std::vector<double>& bwd,
                        const std::vector<double>& recompute, double send_time);

std::string ScheduleToString(const std::vector<std::vector<ScheduleStep>>& table);

}  // namespace moreh::planner
