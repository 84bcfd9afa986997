// `moreh-run plan`: the planner's dry run (see cli/moreh_plan.cc).
#pragma once

#include <string>

namespace moreh::cli {
int PlanMain(int argc, char** argv);
// `moreh-run connect`: the client's connection sequence against the scheduler (or an embedded local
// cluster), then release. Prints the granted devices.
int ConnectMain(int argc, char** argv);
int ClusterMain(int argc, char** argv);
// `moreh-run generate`: text from a checkpoint with a KV cache (cli/moreh_generate.cc).
int GenerateMain(int argc, char** argv);
// Runs argv-style `program` with MOREH_SCHEDULER set (a local cluster for its lifetime if none).
int RunProgramMain(const std::string& scheduler_flag, const std::string& device_size,
                   char** program);
}  // namespace moreh::cli
