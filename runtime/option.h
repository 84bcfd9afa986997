// moreh::option: the user's switches. The one a user needs is
//   moreh::option::enable_advanced_parallelization();
// or MOREH_ENABLE_ADVANCED_PARALLELIZATION=1|0 in the environment, which wins when set.
// Thread-safe.
#pragma once

#include <vector>

namespace moreh::option {

// Limits on what the auto-config module may choose, as on the reference platform.
struct AdvancedParallelizationOptions {
  bool pipeline = true;                        // pipeline stages allowed
  int max_stages = 0;                          // 0: no limit
  int max_micro_batches = 0;                   // 0: no limit
  std::vector<int> recomputation = {0, 1, 2};  // levels allowed (0 none, 1 selective, 2 full)
  bool distribute_parameters = true;           // optimizer states / master weights sharded over DP
  int max_tp = 0;                              // 0: up to the devices of a node
};

void enable_advanced_parallelization();
void enable_advanced_parallelization(const AdvancedParallelizationOptions& options);
AdvancedParallelizationOptions advanced_parallelization_options();
void disable_advanced_parallelization();
// The effective choice: the environment variable when set, else the last call above (default off).
bool advanced_parallelization_enabled();

}  // namespace moreh::option
