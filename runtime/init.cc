#include "runtime/init.h"

#include <cmath>

#include "runtime/core/parallel.h"

namespace moreh::runtime {
namespace {
uint64_t SplitMix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}
}  // namespace

uint64_t NameSeed(uint64_t seed, std::string_view name) {
  uint64_t h = 1469598103934665603ull ^ SplitMix(seed);
  for (unsigned char c : name) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return SplitMix(h);
}

void FillNormal(float* out, int64_t begin, int64_t n, uint64_t seed, std::string_view name,
                float std) {
  const uint64_t base = NameSeed(seed, name);
  ParallelFor(n, 4096, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      // Box-Muller on two counter-based uniforms.
      const uint64_t r1 = SplitMix(base + 2 * static_cast<uint64_t>(begin + i));
      const uint64_t r2 = SplitMix(base + 2 * static_cast<uint64_t>(begin + i) + 1);
      const double u1 = (static_cast<double>(r1 >> 11) + 1.0) * 0x1.0p-53;
      const double u2 = static_cast<double>(r2 >> 11) * 0x1.0p-53;
      out[i] = static_cast<float>(std * std::sqrt(-2.0 * std::log(u1)) *
                                  std::cos(6.283185307179586 * u2));
    }
  });
}

Tensor NormalTensor(const Shape& shape, uint64_t seed, std::string_view name, float std) {
  Tensor t = Tensor::Empty(shape, DType::kF32);
  FillNormal(t.data<float>(), 0, t.numel(), seed, name, std);
  return t;
}

}  // namespace moreh::runtime
