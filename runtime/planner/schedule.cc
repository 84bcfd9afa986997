#include "runtime/planner/schedule.h"

#include <algorithm>

#include "runtime/core/error.h"

namespace moreh::planner {

std::vector<std::vector<ScheduleStep>> OneFOneB(int p, int m, bool recompute) {
  std::vector<std::vector<ScheduleStep>> table(p);
  for (int s = 0; s < p; ++s) {
    auto& steps = table[s];
    const int warmup = std::min(p - s - 1, m);
    int next_f = 0, next_b = 0;
    auto backward = [&] {
      if (recompute) steps.push_back({next_b, Phase::kRecompute});
      steps.push_back({next_b++, Phase::kBackward});
    };
    for (int i = 0; i < warmup; ++i) steps.push_back({next_f++, Phase::kForward});
    while (next_f < m) {
      steps.push_back({next_f++, Phase::kForward});
      backward();
    }
    while (next_b < m) backward();
  }
  return table;
}

double SimulatePipeline(const std::vector<std::vector<ScheduleStep>>& table,
                        const std::vector<double>& fwd, const std::vector<double>& bwd,
                        const std::vector<double>& recompute, double send_time) {
  const int p = static_cast<int>(table.size());
  if (p == 0) return 0;
  int m = 0;
  for (const auto& st : table[0]) m = std::max(m, st.micro_batch + 1);
  // done_f[s][mb], done_b[s][mb]: finish times (-1 = not yet).
  std::vector<std::vector<double>> done_f(p, std::vector<double>(m, -1)),
      done_b(p, std::vector<double>(m, -1));
  std::vector<size_t> next(p, 0);
  std::vector<double> free_at(p, 0);
  size_t remaining = 0;
  for (const auto& st : table) remaining += st.size();
  while (remaining > 0) {
    bool progress = false;
    for (int s = 0; s < p; ++s) {
      while (next[s] < table[s].size()) {
        const ScheduleStep& step = table[s][next[s]];
        double ready = 0;
        double dur = 0;
        if (step.phase == Phase::kForward) {
          if (s > 0) {
            if (done_f[s - 1][step.micro_batch] < 0) break;
            ready = done_f[s - 1][step.micro_batch] + send_time;
          }
          dur = fwd[s];
        } else if (step.phase == Phase::kRecompute) {
          dur = recompute[s];
        } else {
          if (done_f[s][step.micro_batch] < 0) break;
          if (s + 1 < p) {
            if (done_b[s + 1][step.micro_batch] < 0) break;
            ready = done_b[s + 1][step.micro_batch] + send_time;
          }
          dur = bwd[s];
        }
        const double start = std::max(ready, free_at[s]);
        free_at[s] = start + dur;
        if (step.phase == Phase::kForward) done_f[s][step.micro_batch] = free_at[s];
        if (step.phase == Phase::kBackward) done_b[s][step.micro_batch] = free_at[s];
        ++next[s];
        --remaining;
        progress = true;
      }
    }
    MOREH_CHECK(progress, "pipeline schedule deadlocks (a step waits on one that never runs)");
  }
  return *std::max_element(free_at.begin(), free_at.end());
}

std::string ScheduleToString(const std::vector<std::vector<ScheduleStep>>& table) {
  std::string s;
  for (size_t st = 0; st < table.size(); ++st) {
    s += "stage " + std::to_string(st) + ":";
    for (const auto& step : table[st]) {
      s += ' ';
      s += step.phase == Phase::kForward ? 'F' : step.phase == Phase::kBackward ? 'B' : 'R';
      s += std::to_string(step.micro_batch);
    }
    s += '\n';
  }
  return s;
}

}  // namespace moreh::planner
