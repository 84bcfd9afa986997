// MeasureGpu (device_info.h): the GPU half of a worker's start-up profile.
#include <cuda_runtime_api.h>

#include <algorithm>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/device_info.h"

namespace moreh::kernels::cuda {

GpuProfile MeasureGpu(int device) {
  int previous = 0;
  MOREH_CUDA_CHECK(cudaGetDevice(&previous));
  MOREH_CUDA_CHECK(cudaSetDevice(device));
  struct Restore {
    int d;
    ~Restore() { cudaSetDevice(d); }
  } restore{previous};
#ifndef MOREH_CUDA_SIMT
  constexpr int64_t kN = 4096;
  constexpr size_t kCopyBytes = 512u << 20;
#else  // the emulated device (tests/cuda/simt) is a CPU: the same measurement, at its size
  constexpr int64_t kN = 256;
  constexpr size_t kCopyBytes = 8u << 20;
#endif
  void *a = nullptr, *b = nullptr, *c = nullptr, *src = nullptr, *dst = nullptr;
  cudaEvent_t start = nullptr, stop = nullptr;
  auto release = [&] {
    for (void* p : {a, b, c, src, dst}) cudaFree(p);
    if (start) cudaEventDestroy(start);
    if (stop) cudaEventDestroy(stop);
  };
  GpuProfile p;
  try {
    MOREH_CUDA_CHECK(cudaMalloc(&a, kN * kN * 2));
    MOREH_CUDA_CHECK(cudaMalloc(&b, kN * kN * 2));
    MOREH_CUDA_CHECK(cudaMalloc(&c, kN * kN * 2));
    MOREH_CUDA_CHECK(cudaMalloc(&src, kCopyBytes));
    MOREH_CUDA_CHECK(cudaMalloc(&dst, kCopyBytes));
    Fill(a, DType::kBF16, kN * kN, 0.5, nullptr);  // not zeros: they run faster than real data
    Fill(b, DType::kBF16, kN * kN, -1.25, nullptr);
    Fill(src, DType::kF32, kCopyBytes / 4, 3.0, nullptr);
    MOREH_CUDA_CHECK(cudaEventCreate(&start));
    MOREH_CUDA_CHECK(cudaEventCreate(&stop));
    auto best_ms = [&](auto&& work) {
      float best = 1e30f;
      for (int i = 0; i < 6; ++i) {
        MOREH_CUDA_CHECK(cudaEventRecord(start));
        work();
        MOREH_CUDA_CHECK(cudaEventRecord(stop));
        MOREH_CUDA_CHECK(cudaEventSynchronize(stop));
        float ms = 0;
        MOREH_CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
        if (i > 0) best = std::min(best, ms);  // the first is the warm-up
      }
      return static_cast<double>(best) * 1e-3;
    };
    const double gemm_s = best_ms([&] {
      Gemm(false, false, kN, kN, kN, 1.0f, a, kN, b, kN, 0.0f, c, kN, DType::kBF16, DType::kBF16,
           nullptr);
    });
    const double copy_s = best_ms(
        [&] { MOREH_CUDA_CHECK(cudaMemcpyAsync(dst, src, kCopyBytes, cudaMemcpyDeviceToDevice)); });
    p.gemm_flops_bf16 = 2.0 * kN * kN * kN / gemm_s;
    p.memory_bandwidth = 2.0 * static_cast<double>(kCopyBytes) / copy_s;
  } catch (...) {
    release();
    throw;
  }
  release();
  return p;
}

}  // namespace moreh::kernels::cuda
