// Deterministic parameter initialisation: a parameter's values depend only on the seed and its
// name, never on where (which device, stage or shard) it is created, so every parallel
// configuration starts from the same model.
#pragma once

#include <cstdint>
#include <string_view>

#include "runtime/core/tensor.h"

namespace moreh::runtime {

uint64_t NameSeed(uint64_t seed, std::string_view name);
// Normal(0, std) values for `name`; element i is a pure function of (seed, name, i), so a shard
// [begin, begin + n) can be generated alone.
void FillNormal(float* out, int64_t begin, int64_t n, uint64_t seed, std::string_view name,
                float std);
Tensor NormalTensor(const Shape& shape, uint64_t seed, std::string_view name, float std);

}  // namespace moreh::runtime
