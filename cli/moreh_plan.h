// `moreh-run plan`: the planner's dry run (see cli/moreh_plan.cc).
#pragma once

namespace moreh::cli {
int PlanMain(int argc, char** argv);
}  // namespace moreh::cli
