// CommGrid: the process groups of a (tp, dp, pp) grid, as a pure function of the sizes and an order
// string. The order lists the dimensions fastest-varying first: with "tp-dp-pp" consecutive ranks
// are tensor-parallel peers (they share a node), then data-parallel replicas, then stages, as
// Megatron-LM lays them out. No global state; value type; thread-safe.
//
// Worked example, 16 ranks, tp = 2, dp = 2, pp = 4, order "tp-dp-pp":
//   rank = tp_rank + 2 * (dp_rank + 2 * pp_rank)
//   tp groups: {0,1} {2,3} {4,5} ... {14,15}
//   dp groups: {0,2} {1,3} {4,6} {5,7} ... {13,15}
//   pp groups: {0,4,8,12} {1,5,9,13} {2,6,10,14} {3,7,11,15}
// (docs/comm.md draws it.)
#pragma once

#include <array>
#include <string>
#include <vector>

#include "runtime/core/status.h"

namespace moreh::comm {

enum class Dim { kTp = 0, kDp = 1, kPp = 2 };

struct GridCoord {
  int tp_rank = 0, dp_rank = 0, pp_rank = 0;
  bool operator==(const GridCoord& o) const {
    return tp_rank == o.tp_rank && dp_rank == o.dp_rank && pp_rank == o.pp_rank;
  }
};

class CommGrid {
 public:
  // order: a permutation of "tp", "dp", "pp" joined by '-'. Errors name the bad value.
  static StatusOr<CommGrid> Create(int tp_size, int dp_size, int pp_size,
                                   const std::string& order = "tp-dp-pp");

  int world_size() const { return sizes_[0] * sizes_[1] * sizes_[2]; }
  int size(Dim d) const { return sizes_[static_cast<int>(d)]; }
  GridCoord Coord(int rank) const;
  int Rank(const GridCoord& c) const;
  // The ranks of `rank`'s group along `d`, ordered by their coordinate along d.
  std::vector<int> Group(Dim d, int rank) const;
  // Every group along d, each ordered, groups ordered by their smallest rank.
  std::vector<std::vector<int>> Groups(Dim d) const;

 private:
  std::array<int, 3> sizes_{1, 1, 1};   // indexed by Dim
  std::array<int, 3> order_{0, 1, 2};   // dims, fastest first
  std::array<int, 3> stride_{1, 1, 1};  // rank stride of each Dim
};

}  // namespace moreh::comm
