#include "runtime/planner/schedule.h"

#include <algorithm>
#include <cmath>
#include <limits>

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
                        const std::vector<StageCost>& cost, double send_time,
                        const ComputeSharing& sharing) {
  const int p = static_cast<int>(table.size());
  if (p == 0) return 0;
  MOREH_CHECK(static_cast<int>(cost.size()) == p, "pipeline: {} stage costs for {} stages",
              cost.size(), p);
  int m = 0;
  for (const auto& st : table) {
    for (const auto& step : st) m = std::max(m, step.micro_batch + 1);
  }
  const bool shared =
      sharing.node_concurrency > 0 && static_cast<int>(sharing.stage_nodes.size()) == p;
  int num_nodes = 0;
  if (shared) {
    for (const auto& nodes : sharing.stage_nodes) {
      for (const auto& [n, k] : nodes) num_nodes = std::max(num_nodes, n + 1);
    }
  }
  // done_f[s][mb], done_b[s][mb]: finish times (-1 = not yet).
  std::vector<std::vector<double>> done_f(p, std::vector<double>(m, -1)),
      done_b(p, std::vector<double>(m, -1));
  std::vector<size_t> next(p, 0);
  enum State { kIdle, kComputing, kWaiting };
  std::vector<State> state(p, kIdle);
  std::vector<double> work(p, 0), wait(p, 0), until(p, 0);
  size_t remaining = 0;
  for (const auto& st : table) remaining += st.size();
  double now = 0;
  // The time stage s may start its next step (+inf while a dependency has not finished).
  auto ready_at = [&](int s) {
    const ScheduleStep& step = table[s][next[s]];
    const double inf = std::numeric_limits<double>::infinity();
    if (step.phase == Phase::kForward) {
      if (s == 0) return 0.0;
      const double d = done_f[s - 1][step.micro_batch];
      return d < 0 ? inf : d + send_time;
    }
    if (step.phase == Phase::kRecompute) return 0.0;
    if (done_f[s][step.micro_batch] < 0) return inf;
    if (s + 1 == p) return 0.0;
    const double d = done_b[s + 1][step.micro_batch];
    return d < 0 ? inf : d + send_time;
  };
  auto finish = [&](int s) {
    const ScheduleStep& step = table[s][next[s]];
    if (step.phase == Phase::kForward) done_f[s][step.micro_batch] = now;
    if (step.phase == Phase::kBackward) done_b[s][step.micro_batch] = now;
    ++next[s];
    --remaining;
    state[s] = kIdle;
  };
  std::vector<double> speed(p, 1.0), load(num_nodes, 0.0);
  while (remaining > 0) {
    // Start every step whose inputs have arrived; finish zero-length ones at once.
    bool changed = true;
    while (changed) {
      changed = false;
      for (int s = 0; s < p; ++s) {
        if (state[s] != kIdle || next[s] >= table[s].size() || ready_at(s) > now) continue;
        const ScheduleStep& step = table[s][next[s]];
        const StageCost& c = cost[s];
        work[s] = step.phase == Phase::kForward    ? c.fwd
                  : step.phase == Phase::kBackward ? c.bwd
                                                   : c.recompute;
        wait[s] = step.phase == Phase::kForward    ? c.fwd_wait
                  : step.phase == Phase::kBackward ? c.bwd_wait
                                                   : 0.0;
        state[s] = kComputing;
        if (work[s] <= 0) {
          state[s] = kWaiting;
          until[s] = now + wait[s];
          if (wait[s] <= 0) finish(s);
        }
        changed = true;
      }
    }
    if (remaining == 0) break;
    // Speeds: a node's active devices share its compute.
    if (shared) {
      std::fill(load.begin(), load.end(), 0.0);
      for (int s = 0; s < p; ++s) {
        double w = 1.0;
        if (state[s] != kComputing) {
          if (next[s] >= table[s].size() || sharing.waiting_load <= 0) continue;  // done
          w = sharing.waiting_load;  // blocked on an input or a collective
        }
        for (const auto& [n, k] : sharing.stage_nodes[s]) load[n] += w * k;
      }
      for (int s = 0; s < p; ++s) {
        speed[s] = 1.0;
        for (const auto& [n, k] : sharing.stage_nodes[s]) {
          speed[s] = std::min(speed[s], std::min(1.0, sharing.node_concurrency / load[n]));
        }
      }
    }
    // The next event: a step's compute or wait ends, or a step's input arrives.
    double t = std::numeric_limits<double>::infinity();
    for (int s = 0; s < p; ++s) {
      if (state[s] == kComputing) t = std::min(t, now + work[s] / speed[s]);
      if (state[s] == kWaiting) t = std::min(t, until[s]);
      if (state[s] == kIdle && next[s] < table[s].size()) t = std::min(t, ready_at(s));
    }
    MOREH_CHECK(std::isfinite(t),
                "pipeline schedule deadlocks (a step waits on one that never runs)");
    const double dt = t - now;
    now = t;
    for (int s = 0; s < p; ++s) {
      if (state[s] == kComputing) {
        work[s] -= dt * speed[s];
        if (work[s] <= 1e-12 * (1.0 + now)) {
          state[s] = kWaiting;
          until[s] = now + wait[s];
        }
      }
      if (state[s] == kWaiting && until[s] <= now) finish(s);
    }
  }
  return now;
}

double SimulatePipeline(const std::vector<std::vector<ScheduleStep>>& table,
                        const std::vector<double>& fwd, const std::vector<double>& bwd,
                        const std::vector<double>& recompute, double send_time) {
  std::vector<StageCost> cost(table.size());
  for (size_t s = 0; s < cost.size(); ++s) {
    cost[s].fwd = fwd.at(s);
    cost[s].bwd = bwd.at(s);
    cost[s].recompute = recompute.at(s);
  }
  return SimulatePipeline(table, cost, send_time);
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
