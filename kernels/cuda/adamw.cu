// Fused multi-tensor AdamW: one launch updates up to kPerLaunch tensors (of one gradient dtype and
// one copy dtype), each cut into chunks of kChunk elements, one block per chunk. The tensors'
// pointers travel in the kernel's parameters, so nothing is copied to the device first.
#include <cmath>
#include <map>
#include <utility>
#include <vector>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/cuda_kernels.h"

namespace moreh::kernels::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kPerLaunch = 24;
constexpr int64_t kChunk = 1 << 16;

struct Batch {
  float* param[kPerLaunch];
  float* m[kPerLaunch];
  float* v[kPerLaunch];
  const void* grad[kPerLaunch];
  void* copy[kPerLaunch];
  int64_t n[kPerLaunch];
  int64_t first_chunk[kPerLaunch + 1];  // block b works on tensor t where first_chunk[t] <= b
  int count;
};

struct Coefficients {
  float step_size, sqrt_bc2, decay, beta1, beta2, eps;
};

template <typename TG, typename TC>
__global__ void __launch_bounds__(kThreads) AdamWKernel(Batch batch, Coefficients k) {
  const int64_t block = blockIdx.x;
  int t = 0;
  while (t + 1 < batch.count && batch.first_chunk[t + 1] <= block) ++t;
  const int64_t begin = (block - batch.first_chunk[t]) * kChunk;
  const int64_t end = min(begin + kChunk, batch.n[t]);
  float* param = batch.param[t];
  float* m = batch.m[t];
  float* v = batch.v[t];
  const TG* grad = static_cast<const TG*>(batch.grad[t]);
  TC* copy = static_cast<TC*>(batch.copy[t]);
  for (int64_t i = begin + threadIdx.x; i < end; i += blockDim.x) {
    const float g = ToF32(grad[i]);
    const float mi = k.beta1 * m[i] + (1.0f - k.beta1) * g;
    const float vi = k.beta2 * v[i] + (1.0f - k.beta2) * g * g;
    m[i] = mi;
    v[i] = vi;
    const float denom = sqrtf(vi) / k.sqrt_bc2 + k.eps;
    const float p = param[i] * k.decay - k.step_size * mi / denom;
    param[i] = p;
    if (copy != nullptr) copy[i] = FromF32<TC>(p);
  }
}

void Launch(const Batch& batch, DType grad_type, DType copy_type, const Coefficients& k,
            cudaStream_t stream) {
  const int64_t blocks = batch.first_chunk[batch.count];
  if (blocks == 0) return;
  DispatchFloat(grad_type, "AdamWStep", [&](auto gtag) {
    using TG = decltype(gtag);
    DispatchFloat(copy_type, "AdamWStep", [&](auto ctag) {
      using TC = decltype(ctag);
      AdamWKernel<TG, TC><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(batch, k);
    });
  });
  MOREH_CUDA_CHECK_LAUNCH();
}

}  // namespace

void AdamWStep(const AdamWTensor* tensors, int count, const AdamWParams& p, cudaStream_t stream) {
  MOREH_CHECK(p.step >= 1, "cuda::AdamWStep: step {} (steps count from 1)", p.step);
  const double bc1 = 1.0 - std::pow(static_cast<double>(p.beta1), static_cast<double>(p.step));
  const double bc2 = 1.0 - std::pow(static_cast<double>(p.beta2), static_cast<double>(p.step));
  const Coefficients k{static_cast<float>(p.lr / bc1),
                       static_cast<float>(std::sqrt(bc2)),
                       1.0f - p.lr * p.weight_decay,
                       p.beta1,
                       p.beta2,
                       p.eps};
  // Group by (gradient dtype, copy dtype): each group is one kernel instantiation.
  std::map<std::pair<DType, DType>, std::vector<const AdamWTensor*>> groups;
  for (int i = 0; i < count; ++i) {
    const AdamWTensor& t = tensors[i];
    MOREH_CHECK(t.n >= 0, "cuda::AdamWStep: tensor {} has {} elements", i, t.n);
    MOREH_CHECK(IsFloating(t.grad_type) && (!t.copy || IsFloating(t.copy_type)),
                "cuda::AdamWStep: tensor {}: gradient {} / copy {} (float dtypes)", i,
                DTypeName(t.grad_type), DTypeName(t.copy_type));
    if (t.n == 0) continue;
    const DType copy_type = t.copy ? t.copy_type : DType::kF32;
    groups[{t.grad_type, copy_type}].push_back(&t);
  }
  for (const auto& [types, list] : groups) {
    Batch batch{};
    for (const AdamWTensor* t : list) {
      if (batch.count == kPerLaunch) {
        Launch(batch, types.first, types.second, k, stream);
        batch = Batch{};
      }
      const int i = batch.count++;
      batch.param[i] = t->param;
      batch.m[i] = t->m;
      batch.v[i] = t->v;
      batch.grad[i] = t->grad;
      batch.copy[i] = t->copy;
      batch.n[i] = t->n;
      batch.first_chunk[i + 1] = batch.first_chunk[i] + (t->n + kChunk - 1) / kChunk;
    }
    Launch(batch, types.first, types.second, k, stream);
  }
}

}  // namespace moreh::kernels::cuda
