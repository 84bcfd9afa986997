// Times cuda::Gemm (cuBLASLt, bf16 in, bf16 out, f32 accumulation) at M = N = K (8192 by default)
// on random data: 5 warm-ups, then `--reps` products each timed with CUDA events; prints the
// median as JSON. Input sets rotate (three of them) so that no run reads a cached operand.
//   gemm_bench [--size N] [--reps R]
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/device_info.h"
#include "runtime/core/dtype.h"

using moreh::DType;
namespace gpu = moreh::kernels::cuda;

int main(int argc, char** argv) {
  int64_t n = 8192;
  int reps = 30;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i];
    if (a == "--size")
      n = std::stoll(argv[i + 1]);
    else if (a == "--reps")
      reps = std::stoi(argv[i + 1]);
  }
  if (gpu::DeviceCount() == 0) {
    std::printf("SKIP: no CUDA device on this machine\n");
    return 77;
  }
  try {
    constexpr int kSets = 3;
    std::vector<void*> a(kSets), b(kSets), c(kSets);
    std::mt19937 rng(7);
    std::normal_distribution<float> dist(0.0f, 1.0f);
    std::vector<uint16_t> host(static_cast<size_t>(n * n));
    for (int s = 0; s < kSets; ++s) {
      for (void** p : {&a[s], &b[s], &c[s]}) {
        MOREH_CUDA_CHECK(cudaMalloc(p, host.size() * 2));
      }
      for (void* p : {a[s], b[s]}) {
        for (auto& h : host) h = moreh::F32ToBF16(dist(rng));
        MOREH_CUDA_CHECK(cudaMemcpy(p, host.data(), host.size() * 2, cudaMemcpyHostToDevice));
      }
    }
    cudaEvent_t start, stop;
    MOREH_CUDA_CHECK(cudaEventCreate(&start));
    MOREH_CUDA_CHECK(cudaEventCreate(&stop));
    auto run = [&](int i) {
      const int s = i % kSets;
      gpu::Gemm(false, false, n, n, n, 1.0f, a[s], n, b[s], n, 0.0f, c[s], n, DType::kBF16,
                DType::kBF16, nullptr);
    };
    for (int i = 0; i < 5; ++i) run(i);
    std::vector<float> ms(reps);
    for (int i = 0; i < reps; ++i) {
      MOREH_CUDA_CHECK(cudaEventRecord(start));
      run(i);
      MOREH_CUDA_CHECK(cudaEventRecord(stop));
      MOREH_CUDA_CHECK(cudaEventSynchronize(stop));
      MOREH_CUDA_CHECK(cudaEventElapsedTime(&ms[i], start, stop));
    }
    std::sort(ms.begin(), ms.end());
    const double median = ms[reps / 2];
    const double tflops = 2.0 * n * n * n / (median * 1e-3) / 1e12;
    std::printf("{\"size\": %lld, \"median_ms\": %.4f, \"tflops\": %.1f, \"device\": \"%s\"}\n",
                static_cast<long long>(n), median, tflops, gpu::DeviceName(0).c_str());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "gemm_bench: %s\n", e.what());
    return 1;
  }
  return 0;
}
