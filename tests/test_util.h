// Helpers shared by the unit tests: seeded random tensors (never all zeros) and error checks.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "runtime/core/tensor.h"

namespace moreh::testing {

// A fresh seed per process unless MOREH_TEST_SEED is set; printed by tests that use it.
uint64_t TestSeed();

inline runtime::Tensor RandomTensor(const Shape& shape, std::mt19937_64& rng, float scale = 1.0f,
                                    DType dtype = DType::kF32) {
  std::normal_distribution<float> n(0.0f, scale);
  std::vector<float> v(static_cast<size_t>(Numel(shape)));
  for (float& x : v) x = n(rng);
  return runtime::Tensor::FromFloats(v, shape, dtype);
}

inline runtime::Tensor RandomInts(const Shape& shape, std::mt19937_64& rng, int64_t hi) {
  std::uniform_int_distribution<int64_t> u(0, hi - 1);
  std::vector<int64_t> v(static_cast<size_t>(Numel(shape)));
  for (auto& x : v) x = u(rng);
  return runtime::Tensor::FromVector(v, shape);
}

// max |a - b| / max(max |b|, 1e-30); infinite when the sizes differ or an element is NaN or
// infinite where the other is not (std::max would drop a NaN and report no error).
inline double MaxRelError(const std::vector<float>& a, const std::vector<double>& b) {
  constexpr double kInf = std::numeric_limits<double>::infinity();
  if (a.size() != b.size()) return kInf;
  double num = 0, den = 1e-30;
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::isfinite(b[i])) den = std::max(den, std::fabs(b[i]));
    if (a[i] == b[i]) continue;  // equal, infinities included
    const double d = std::fabs(static_cast<double>(a[i]) - b[i]);
    if (!std::isfinite(d)) return kInf;
    num = std::max(num, d);
  }
  return num / den;
}

}  // namespace moreh::testing

// Expects `stmt` to throw moreh::Error whose message contains every string in `parts`.
#define EXPECT_ERROR_MENTIONS(stmt, ...)                                      \
  do {                                                                        \
    try {                                                                     \
      stmt;                                                                   \
      ADD_FAILURE() << "expected moreh::Error from " #stmt;                   \
    } catch (const ::moreh::Error& e) {                                       \
      for (const std::string& part : std::vector<std::string>{__VA_ARGS__}) { \
        EXPECT_NE(std::string(e.what()).find(part), std::string::npos)        \
            << "message lacks '" << part << "': " << e.what();                \
      }                                                                       \
    }                                                                         \
  } while (0)
