#include "runtime/comm/grid.h"

#include <fmt/format.h>

#include <algorithm>
#include <sstream>

namespace moreh::comm {

StatusOr<CommGrid> CommGrid::Create(int tp, int dp, int pp, const std::string& order) {
  if (tp < 1 || dp < 1 || pp < 1) {
    return Status::InvalidArgument(
        fmt::format("CommGrid: sizes must be >= 1 (tp {}, dp {}, pp {})", tp, dp, pp));
  }
  CommGrid g;
  g.sizes_ = {tp, dp, pp};
  std::vector<std::string> parts;
  std::stringstream ss(order);
  std::string part;
  while (std::getline(ss, part, '-')) parts.push_back(part);
  std::array<bool, 3> seen{};
  if (parts.size() != 3) {
    return Status::InvalidArgument("CommGrid: order '" + order +
                                   "' must name tp, dp and pp once each");
  }
  for (int i = 0; i < 3; ++i) {
    int d = parts[i] == "tp" ? 0 : parts[i] == "dp" ? 1 : parts[i] == "pp" ? 2 : -1;
    if (d < 0 || seen[d]) {
      return Status::InvalidArgument("CommGrid: order '" + order +
                                     "' must name tp, dp and pp once each");
    }
    seen[d] = true;
    g.order_[i] = d;
  }
  int stride = 1;
  for (int i = 0; i < 3; ++i) {
    g.stride_[g.order_[i]] = stride;
    stride *= g.sizes_[g.order_[i]];
  }
  return g;
}

GridCoord CommGrid::Coord(int rank) const {
  std::array<int, 3> c{};
  for (int d = 0; d < 3; ++d) c[d] = (rank / stride_[d]) % sizes_[d];
  return {c[0], c[1], c[2]};
}

int CommGrid::Rank(const GridCoord& c) const {
  return c.tp_rank * stride_[0] + c.dp_rank * stride_[1] + c.pp_rank * stride_[2];
}

std::vector<int> CommGrid::Group(Dim d, int rank) const {
  const int di = static_cast<int>(d);
  const int base = rank - ((rank / stride_[di]) % sizes_[di]) * stride_[di];
  std::vector<int> g(sizes_[di]);
  for (int i = 0; i < sizes_[di]; ++i) g[i] = base + i * stride_[di];
  return g;
}

std::vector<std::vector<int>> CommGrid::Groups(Dim d) const {
  std::vector<std::vector<int>> out;
  std::vector<bool> done(world_size(), false);
  for (int r = 0; r < world_size(); ++r) {
    if (done[r]) continue;
    out.push_back(Group(d, r));
    for (int x : out.back()) done[x] = true;
  }
  return out;
}

}  // namespace moreh::comm
