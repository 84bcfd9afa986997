// moreh::option: the user's switches. The one a user needs is
//   moreh::option::enable_advanced_parallelization();
// or MOREH_ENABLE_ADVANCED_PARALLELIZATION=1|0 in the environment, which wins when set.
// Thread-safe.
#pragma once

namespace moreh::option {

void enable_advanced_parallelization();
void disable_advanced_parallelization();
// The effective choice: the environment variable when set, else the last call above (default off).
bool advanced_parallelization_enabled();

}  // namespace moreh::option
