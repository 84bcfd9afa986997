// `moreh-run plan`: the planner's dry run (see cli/moreh_plan.cc).
#pragma once

namespace moreh::cli {
int PlanMain(int argc, char** argv);
// `moreh-run connect`: the client's connection sequence against the scheduler (or an embedded local
// cluster), then release. Prints the granted devices.
int ConnectMain(int argc, char** argv);
}  // namespace moreh::cli
