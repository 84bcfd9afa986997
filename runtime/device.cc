#include "runtime/device.h"

#include <cstdlib>

#include "runtime/core/error.h"

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

namespace {
[[noreturn]] void NoCuda(const char* what) {
  throw Error(
      fmt::format("{}: a tensor in device memory, and this build has no CUDA backend", what));
}
}  // namespace

void AddInto(const Tensor& acc, const Tensor& x) {
  MOREH_CHECK(acc.dtype() == DType::kF32 && acc.is_contiguous() && acc.numel() == x.numel(),
              "AddInto: {} += {}", acc.ToString(), x.ToString());
  if (acc.on_host()) {
    const Tensor g = x.dtype() == DType::kF32 ? x.Contiguous() : x.To(DType::kF32);
    float* a = acc.data<float>();
    kernels::cpu::Add(a, a, g.data<float>(), g.numel(), g.numel());
    return;
  }
#ifdef MOREH_WITH_CUDA
  const Tensor g =
      x.dtype() == DType::kF32 && x.is_contiguous() ? x : x.To(DType::kF32).Contiguous();
  kernels::cuda::Add(acc.raw_data(), acc.raw_data(), g.raw_data(), g.numel(), g.numel(),
                     DType::kF32, nullptr);
#else
  NoCuda("AddInto");
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
