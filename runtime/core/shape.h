// Shapes and strides: vectors of int64_t, outermost dimension first. Strides count elements.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace moreh {

using Shape = std::vector<int64_t>;

int64_t Numel(const Shape& shape);
Shape ContiguousStrides(const Shape& shape);
std::string ShapeToString(const Shape& shape);  // "[2, 3, 4]"
// Maps a possibly negative axis into [0, rank); returns -1 when out of range.
int NormalizeAxis(int64_t axis, int rank);

}  // namespace moreh
