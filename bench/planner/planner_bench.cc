// Planner speed: candidates evaluated per second on one core, and the whole search for the
// reference job (Llama-2-13B, batch 64, sequence 1024, 4xLarge) and for Llama-2-70B on 8xLarge.
// The peer is the reference platform's own log (examples in ../shared/reference/moai-ap-guide.md:
// 30 candidates compiled in 6,103 ms plus 808 ms of costing for the 13B job), which cannot be run
// here; its figures are quoted, not measured.
#include <chrono>
#include <cstdio>
#include <functional>
#include <string>

#include "runtime/planner/planner.h"

namespace {
double Seconds(const std::function<void()>& fn, int reps) {
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < reps; ++i) fn();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / reps;
}
}  // namespace

int main(int argc, char** argv) {
  const std::string src = argc > 1 ? argv[1] : ".";
  using namespace moreh::planner;
  TrainJob job;
  job.model = moreh::models::LlamaConfig::FromFile(src + "/examples/models/llama-2-13b/config.json")
                  .value();
  job.global_batch = 64;
  job.seq_len = 1024;
  PlannerOptions one;
  one.log = false;
  one.threads = 1;
  size_t n13 = 0;
  const double s13 =
      Seconds([&] { n13 = PlanTraining(job, ReferenceCluster(32), one).candidates.size(); }, 5);
  PlannerOptions all = one;
  all.threads = 0;
  const double s13_all = Seconds([&] { PlanTraining(job, ReferenceCluster(32), all); }, 5);
  TrainJob job70 = job;
  job70.model =
      moreh::models::LlamaConfig::FromFile(src + "/examples/models/llama-2-70b/config.json")
          .value();
  size_t n70 = 0;
  const double s70 =
      Seconds([&] { n70 = PlanTraining(job70, ReferenceCluster(64), one).candidates.size(); }, 3);
  std::printf("13B/4xLarge: %zu candidates in %.2f ms on one core (%.2f ms on all cores)\n", n13,
              1e3 * s13, 1e3 * s13_all);
  std::printf("70B/8xLarge: %zu candidates in %.2f ms on one core\n", n70, 1e3 * s70);
  std::printf("reference platform (its log): 30 candidates, 6103 ms compile + 808 ms costing\n");
  std::printf("BENCH planner_candidates_per_s %.0f candidates/s\n", static_cast<double>(n13) / s13);
  std::printf("BENCH planner_search_13b_4xlarge_s %.4f s\n", s13);
  std::printf("BENCH planner_search_70b_8xlarge_s %.4f s\n", s70);
  std::printf("BENCH planner_search_13b_vs_reference_platform %.0f x\n", (6.103 + 0.808) / s13);
  return 0;
}
