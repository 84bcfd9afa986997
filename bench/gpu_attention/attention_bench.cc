// Times cuda::AttentionForward and AttentionBackward (bf16, causal) at a Llama shape for each
// implementation (mma: register-resident tensor-core tiles; wmma; simple: CUDA cores): 3 warm-ups,
// then `--reps` forward and forward + backward passes each timed with CUDA events; prints one JSON
// line per implementation with the medians and TFLOP/s (causal: half the T x S products; the
// backward counted as 2.5 forwards, as FlashAttention reports it).
// With --key-mask 1 the kernels also get an all-ones [B, S] key mask, as training passes one (the
// batch's attention_mask): the masked path's cost.
//   attention_bench [--batch B] [--seq T] [--heads H] [--kv-heads HKV] [--head-dim D] [--reps R]
//                   [--impls mma,wmma,simple] [--key-mask 0|1]
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/device_info.h"
#include "runtime/core/dtype.h"

using moreh::DType;
namespace gpu = moreh::kernels::cuda;

namespace {

void* DeviceRandom(size_t n, std::mt19937& rng) {
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::vector<uint16_t> host(n);
  for (auto& h : host) h = moreh::F32ToBF16(dist(rng));
  void* p = nullptr;
  MOREH_CUDA_CHECK(cudaMalloc(&p, n * 2));
  MOREH_CUDA_CHECK(cudaMemcpy(p, host.data(), n * 2, cudaMemcpyHostToDevice));
  return p;
}

float Median(std::vector<float> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  int64_t b = 4, t = 2048, h = 32, hkv = 4, d = 64;
  int reps = 20;
  bool with_mask = false;
  std::string impls = "mma,wmma,simple";
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i], v = argv[i + 1];
    if (a == "--batch")
      b = std::stoll(v);
    else if (a == "--seq")
      t = std::stoll(v);
    else if (a == "--heads")
      h = std::stoll(v);
    else if (a == "--kv-heads")
      hkv = std::stoll(v);
    else if (a == "--head-dim")
      d = std::stoll(v);
    else if (a == "--reps")
      reps = std::stoi(v);
    else if (a == "--impls")
      impls = v;
    else if (a == "--key-mask" && (v == "0" || v == "1"))
      with_mask = v == "1";
    else {
      std::fprintf(stderr, "attention_bench: unknown option '%s %s' (--key-mask takes 0 or 1)\n",
                   a.c_str(), v.c_str());
      return 2;
    }
  }
  if (gpu::DeviceCount() == 0) {
    std::printf("SKIP: no CUDA device on this machine\n");
    return 77;
  }
  try {
    const moreh::kernels::cpu::AttentionShape sh{
        b, t, t, h, hkv, d, true, 1.0f / std::sqrt(static_cast<float>(d))};
    std::mt19937 rng(7);
    const size_t nq = b * t * h * d, nk = b * t * hkv * d;
    void* q = DeviceRandom(nq, rng);
    void* k = DeviceRandom(nk, rng);
    void* v = DeviceRandom(nk, rng);
    void* dout = DeviceRandom(nq, rng);
    void *out = nullptr, *dq = nullptr, *dk = nullptr, *dv = nullptr;
    float* lse = nullptr;
    MOREH_CUDA_CHECK(cudaMalloc(&out, nq * 2));
    MOREH_CUDA_CHECK(cudaMalloc(&dq, nq * 2));
    MOREH_CUDA_CHECK(cudaMalloc(&dk, nk * 2));
    MOREH_CUDA_CHECK(cudaMalloc(&dv, nk * 2));
    MOREH_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&lse), b * h * t * sizeof(float)));
    int64_t* mask = nullptr;
    if (with_mask) {
      const std::vector<int64_t> ones(b * t, 1);
      MOREH_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&mask), ones.size() * 8));
      MOREH_CUDA_CHECK(cudaMemcpy(mask, ones.data(), ones.size() * 8, cudaMemcpyHostToDevice));
    }
    cudaEvent_t e0, e1, e2;
    MOREH_CUDA_CHECK(cudaEventCreate(&e0));
    MOREH_CUDA_CHECK(cudaEventCreate(&e1));
    MOREH_CUDA_CHECK(cudaEventCreate(&e2));
    const double fwd_flop = 4.0 * b * h * t * t * d / 2;  // causal
    std::stringstream list(impls);
    std::string name;
    while (std::getline(list, name, ',')) {
      gpu::AttentionImpl impl;
      if (name == "mma")
        impl = gpu::AttentionImpl::kMma;
      else if (name == "wmma")
        impl = gpu::AttentionImpl::kWmma;
      else if (name == "simple")
        impl = gpu::AttentionImpl::kSimple;
      else
        throw std::runtime_error("unknown implementation '" + name + "'");
      auto forward = [&] {
        gpu::AttentionForward(out, lse, q, k, v, mask, sh, DType::kBF16, nullptr, impl);
      };
      auto backward = [&] {
        gpu::AttentionBackward(dq, dk, dv, dout, q, k, v, out, lse, mask, sh, DType::kBF16, nullptr,
                               impl);
      };
      for (int i = 0; i < 3; ++i) {
        forward();
        backward();
      }
      std::vector<float> fwd_ms(reps), bwd_ms(reps);
      for (int i = 0; i < reps; ++i) {
        MOREH_CUDA_CHECK(cudaEventRecord(e0));
        forward();
        MOREH_CUDA_CHECK(cudaEventRecord(e1));
        backward();
        MOREH_CUDA_CHECK(cudaEventRecord(e2));
        MOREH_CUDA_CHECK(cudaEventSynchronize(e2));
        MOREH_CUDA_CHECK(cudaEventElapsedTime(&fwd_ms[i], e0, e1));
        MOREH_CUDA_CHECK(cudaEventElapsedTime(&bwd_ms[i], e1, e2));
      }
      const double f = Median(fwd_ms), bw = Median(bwd_ms);
      std::printf(
          "{\"impl\": \"%s%s\", \"forward_ms\": %.4f, \"backward_ms\": %.4f, \"forward_tflops\": "
          "%.1f, \"backward_tflops\": %.1f, \"total_ms\": %.4f, \"device\": \"%s\"}\n",
          name.c_str(), with_mask ? "_masked" : "", f, bw, fwd_flop / (f * 1e-3) / 1e12,
          2.5 * fwd_flop / (bw * 1e-3) / 1e12, f + bw, gpu::DeviceName(0).c_str());
      std::fflush(stdout);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "attention_bench: %s\n", e.what());
    return 1;
  }
  return 0;
}
