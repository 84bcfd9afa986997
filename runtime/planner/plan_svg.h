// A picture of a plan for people who would rather look: devices grouped by node and coloured by
// pipeline stage (labelled with their data- and tensor-parallel ranks), and one memory bar per
// stage against the budget and the device's capacity. Returns a standalone SVG document.
#pragma once

#include <string>

#include "runtime/planner/planner.h"

namespace moreh::planner {
std::string PlanToSvg(const Plan& plan, const ClusterSpec& cluster);
}  // namespace moreh::planner
