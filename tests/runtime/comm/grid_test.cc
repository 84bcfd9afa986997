#include "runtime/comm/grid.h"

#include <gtest/gtest.h>

namespace moreh::comm {
namespace {

TEST(CommGrid, WorkedSixteenRankExample) {
  const CommGrid g = CommGrid::Create(2, 2, 4, "tp-dp-pp").value();
  EXPECT_EQ(g.world_size(), 16);
  EXPECT_EQ(g.Group(Dim::kTp, 5), std::vector<int>({4, 5}));
  EXPECT_EQ(g.Group(Dim::kDp, 5), std::vector<int>({5, 7}));
  EXPECT_EQ(g.Group(Dim::kPp, 5), std::vector<int>({1, 5, 9, 13}));
  EXPECT_EQ(g.Groups(Dim::kPp), (std::vector<std::vector<int>>{
                                    {0, 4, 8, 12}, {1, 5, 9, 13}, {2, 6, 10, 14}, {3, 7, 11, 15}}));
  EXPECT_EQ(g.Groups(Dim::kTp).size(), 8u);
  EXPECT_EQ(g.Coord(13), (GridCoord{1, 0, 3}));
  for (int r = 0; r < 16; ++r) EXPECT_EQ(g.Rank(g.Coord(r)), r);
}

TEST(CommGrid, EveryOrderPartitionsTheRanks) {
  for (const char* order : {"tp-dp-pp", "dp-tp-pp", "pp-dp-tp", "tp-pp-dp"}) {
    const CommGrid g = CommGrid::Create(2, 3, 2, order).value();
    for (Dim d : {Dim::kTp, Dim::kDp, Dim::kPp}) {
      std::vector<int> seen(g.world_size(), 0);
      for (const auto& grp : g.Groups(d)) {
        EXPECT_EQ(static_cast<int>(grp.size()), g.size(d));
        for (int r : grp) {
          ++seen[r];
          // Members share every other coordinate.
          const GridCoord a = g.Coord(grp[0]), b = g.Coord(r);
          if (d != Dim::kTp) EXPECT_EQ(a.tp_rank, b.tp_rank);
          if (d != Dim::kDp) EXPECT_EQ(a.dp_rank, b.dp_rank);
          if (d != Dim::kPp) EXPECT_EQ(a.pp_rank, b.pp_rank);
        }
      }
      for (int c : seen) EXPECT_EQ(c, 1) << order;
    }
  }
  // The fastest dimension is contiguous.
  EXPECT_EQ(CommGrid::Create(2, 2, 2, "dp-tp-pp").value().Group(Dim::kDp, 0),
            std::vector<int>({0, 1}));
}

TEST(CommGrid, BadSizesAndOrdersAreNamed) {
  EXPECT_FALSE(CommGrid::Create(0, 1, 1).ok());
  auto r = CommGrid::Create(1, 1, 1, "tp-tp-pp");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("'tp-tp-pp'"), std::string::npos);
  EXPECT_FALSE(CommGrid::Create(1, 1, 1, "tp-dp").ok());
  EXPECT_FALSE(CommGrid::Create(1, 1, 1, "tp-dp-xx").ok());
}

}  // namespace
}  // namespace moreh::comm
