#include "runtime/device.h"

#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "runtime/core/error.h"
#include "runtime/core/parallel.h"

#ifdef MOREH_WITH_CUDA
#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/device_allocator.h"
#endif

namespace moreh::runtime {

Allocator* DeviceAllocator(const std::string& spec) {
  if (spec.empty() || spec == "cpu" || spec == "cpu:0") return CpuAllocator();
  if (spec.rfind("cuda:", 0) == 0) {
    const std::string index = spec.substr(5);
    const bool digits = !index.empty() && index.size() < 4 &&
                        index.find_first_not_of("0123456789") == std::string::npos;
    MOREH_CHECK(digits, "device '{}': expected cpu or cuda:N", spec);
#ifdef MOREH_WITH_CUDA
    return kernels::cuda::CudaAllocator(std::stoi(index));
#else
    throw Error(
        fmt::format("device '{}': this build has no CUDA backend (MOREH_ENABLE_CUDA)", spec));
#endif
  }
  throw Error(fmt::format("device '{}': expected cpu or cuda:N", spec));
}

Allocator* DefaultDevice() {
  const char* env = std::getenv("MOREH_DEVICE");
  return DeviceAllocator(env ? env : "");
}

bool ComputeDTypeFromEnv(DType* out) {
  const char* env = std::getenv("MOREH_COMPUTE_DTYPE");
  if (env == nullptr || *env == '\0') return false;
  MOREH_CHECK(ParseDType(env, out) && IsFloating(*out),
              "MOREH_COMPUTE_DTYPE='{}': expected f32, bf16 or f16", env);
  return true;
}

DType ComputeDType(const Allocator* device) {
  DType dt;
  if (ComputeDTypeFromEnv(&dt)) return dt;
  return device != nullptr && !device->host_accessible() ? DType::kBF16 : DType::kF32;
}

#ifndef MOREH_WITH_CUDA
namespace {
[[noreturn]] void NoCuda(const char* what) {
  throw Error(
      fmt::format("{}: a tensor in device memory, and this build has no CUDA backend", what));
}
}  // namespace
#endif

void AddInto(const Tensor& acc, const Tensor& x) {
  MOREH_CHECK(acc.dtype() == DType::kF32 && acc.is_contiguous() && acc.numel() == x.numel(),
              "AddInto: {} += {}", acc.ToString(), x.ToString());
  MOREH_CHECK(IsFloating(x.dtype()), "AddInto: {} is not a float tensor", x.ToString());
  MOREH_CHECK(acc.on_host() == x.on_host(), "AddInto: {} on {} into {} on {}", x.ToString(),
              x.allocator()->device_name(), acc.ToString(), acc.allocator()->device_name());
  // A gradient in the compute dtype is widened element by element (no f32 copy of it).
  const Tensor g = x.Contiguous();
  float* a = acc.data<float>();
  if (acc.on_host()) {
    if (g.dtype() == DType::kF32) {
      kernels::cpu::Add(a, a, g.data<float>(), g.numel(), g.numel());
      return;
    }
    const uint16_t* h = g.data_u16();
    const bool bf16 = g.dtype() == DType::kBF16;
    ParallelFor(g.numel(), 1 << 14, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) a[i] += bf16 ? BF16ToF32(h[i]) : F16ToF32(h[i]);
    });
    return;
  }
#ifdef MOREH_WITH_CUDA
  kernels::cuda::AccumulateF32(a, g.raw_data(), g.dtype(), g.numel(), nullptr);
#else
  NoCuda("AddInto");
#endif
}

bool AllFinite(const Tensor& x) {
  MOREH_CHECK(x.dtype() == DType::kF32 && x.is_contiguous(), "AllFinite: {} must be contiguous f32",
              x.ToString());
  if (x.on_host()) {
    const float* p = x.data<float>();
    std::atomic<bool> finite{true};
    ParallelFor(x.numel(), 1 << 16, [&](int64_t b, int64_t e) {
      bool ok = true;
      for (int64_t i = b; i < e; ++i) ok &= std::isfinite(p[i]);
      if (!ok) finite = false;
    });
    return finite;
  }
#ifdef MOREH_WITH_CUDA
  const Tensor flag = Tensor::Zeros({1}, DType::kI32, x.allocator());
  kernels::cuda::FlagNonFinite(flag.data<int32_t>(), x.data<float>(), x.numel(), nullptr);
  return flag.CopyTo(nullptr).data<int32_t>()[0] == 0;
#else
  NoCuda("AllFinite");
#endif
}

double SumOfSquares(const Tensor& x, int64_t begin, int64_t end) {
  MOREH_CHECK(x.dtype() == DType::kF32 && x.is_contiguous(),
              "SumOfSquares: {} must be contiguous f32", x.ToString());
  MOREH_CHECK(0 <= begin && begin <= end && end <= x.numel(), "SumOfSquares: [{}, {}) outside {}",
              begin, end, x.ToString());
  if (begin == end) return 0.0;
  const float* p = x.data<float>() + begin;
  if (x.on_host()) {
    // Fixed blocks summed in order: the same result whatever the thread count.
    constexpr int64_t kBlock = 1 << 16;
    const int64_t n = end - begin, blocks = (n + kBlock - 1) / kBlock;
    std::vector<double> partial(static_cast<size_t>(blocks), 0.0);
    ParallelFor(blocks, 1, [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        double s = 0.0;
        for (int64_t i = b * kBlock; i < std::min(n, (b + 1) * kBlock); ++i) {
          s += static_cast<double>(p[i]) * p[i];
        }
        partial[static_cast<size_t>(b)] = s;
      }
    });
    double total = 0.0;
    for (double s : partial) total += s;
    return total;
  }
#ifdef MOREH_WITH_CUDA
  const Tensor out = Tensor::Zeros({1}, DType::kI64, x.allocator());  // 8 bytes: one f64 0.0
  kernels::cuda::SumOfSquares(static_cast<double*>(out.raw_data()), p, end - begin, nullptr);
  double total = 0.0;
  std::memcpy(&total, out.CopyTo(nullptr).raw_data(), sizeof total);
  return total;
#else
  NoCuda("SumOfSquares");
#endif
}

void ScaleInPlace(const Tensor& x, float s) {
  MOREH_CHECK(x.dtype() == DType::kF32 && x.is_contiguous(),
              "ScaleInPlace: {} must be contiguous f32", x.ToString());
  float* p = x.data<float>();
  if (x.on_host()) {
    kernels::cpu::Scale(p, p, s, x.numel());
    return;
  }
#ifdef MOREH_WITH_CUDA
  kernels::cuda::Scale(p, p, s, x.numel(), DType::kF32, nullptr);
#else
  NoCuda("ScaleInPlace");
#endif
}

void AdamWStepOn(const Tensor& where, float* param, float* m, float* v, const float* grad,
                 int64_t n, const kernels::cpu::AdamWParams& p) {
  if (where.on_host()) {
    kernels::cpu::AdamWStep(param, m, v, grad, n, p);
    return;
  }
#ifdef MOREH_WITH_CUDA
  const kernels::cuda::AdamWTensor t{param, m, v, grad, DType::kF32, nullptr, DType::kF32, n};
  kernels::cuda::AdamWStep(&t, 1, p, nullptr);
#else
  NoCuda("AdamWStepOn");
#endif
}

}  // namespace moreh::runtime
