// Fused multi-tensor AdamW: one launch updates up to kPerLaunch tensors (of one gradient dtype and
// one copy dtype), each cut into chunks of kChunk elements, one block per chunk. The tensors'
// pointers travel in the kernel's parameters, so nothing is copied to the device first. Each thread
// updates 4 elements per access (16 bytes of f32, vectorized.cuh) where the tensors are aligned.
#include <cmath>
#include <map>
#include <tuple>
#include <vector>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/vectorized.cuh"

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

// The update of elements [i, i + N) of one tensor (vectorized.cuh's N-element accesses).
template <typename TG, typename TC>
struct Update {
  float* param;
  float* m;
  float* v;
  const TG* grad;
  TC* copy;
  template <int N>
  __device__ void Apply(int64_t i, const Coefficients& k) const {
    Vec<float, N> p = LoadVec<N>(param + i), mv = LoadVec<N>(m + i), vv = LoadVec<N>(v + i);
    const Vec<TG, N> g = LoadVec<N>(grad + i);
    Vec<TC, N> c;
#pragma unroll
    for (int j = 0; j < N; ++j) {
      const float gj = ToF32(g.v[j]);
      mv.v[j] = k.beta1 * mv.v[j] + (1.0f - k.beta1) * gj;
      vv.v[j] = k.beta2 * vv.v[j] + (1.0f - k.beta2) * gj * gj;
      const float denom = sqrtf(vv.v[j]) / k.sqrt_bc2 + k.eps;
      p.v[j] = p.v[j] * k.decay - k.step_size * mv.v[j] / denom;
      c.v[j] = FromF32<TC>(p.v[j]);
    }
    StoreVec<N>(m + i, mv);
    StoreVec<N>(v + i, vv);
    StoreVec<N>(param + i, p);
    if (copy != nullptr) StoreVec<N>(copy + i, c);
  }
};

// N = 4 (16 bytes of f32) when every pointer of every tensor in the batch is aligned for it,
// else 1.
template <int N, typename TG, typename TC>
__global__ void __launch_bounds__(kThreads) AdamWKernel(Batch batch, Coefficients k) {
  const int64_t block = blockIdx.x;
  int t = 0;
  while (t + 1 < batch.count && batch.first_chunk[t + 1] <= block) ++t;
  const int64_t begin = (block - batch.first_chunk[t]) * kChunk;  // a multiple of N
  const int64_t end = min(begin + kChunk, batch.n[t]);
  const Update<TG, TC> u{batch.param[t], batch.m[t], batch.v[t],
                         static_cast<const TG*>(batch.grad[t]), static_cast<TC*>(batch.copy[t])};
  const int64_t vectors = (end - begin) / N;
  for (int64_t c = threadIdx.x; c < vectors; c += blockDim.x) u.template Apply<N>(begin + c * N, k);
  if constexpr (N > 1) {
    const int64_t i = begin + vectors * N + threadIdx.x;
    if (i < end) u.template Apply<1>(i, k);
  }
}

constexpr int kVec = VecWidth(sizeof(float));

// Whether every pointer of t can be accessed as kVec-element vectors.
bool VectorAligned(const AdamWTensor& t) {
  const auto ok = [](const void* p, DType type) {
    return reinterpret_cast<uintptr_t>(p) % (kVec * DTypeSize(type)) == 0;
  };
  return ok(t.param, DType::kF32) && ok(t.m, DType::kF32) && ok(t.v, DType::kF32) &&
         ok(t.grad, t.grad_type) && (t.copy == nullptr || ok(t.copy, t.copy_type));
}

void Launch(const Batch& batch, DType grad_type, DType copy_type, bool aligned,
            const Coefficients& k, cudaStream_t stream) {
  const int64_t blocks = batch.first_chunk[batch.count];
  if (blocks == 0) return;
  DispatchFloat(grad_type, "AdamWStep", [&](auto gtag) {
    using TG = decltype(gtag);
    DispatchFloat(copy_type, "AdamWStep", [&](auto ctag) {
      using TC = decltype(ctag);
      const unsigned grid = static_cast<unsigned>(blocks);
      if (aligned) {
        MOREH_CUDA_LAUNCH(grid, kThreads, 0, stream, AdamWKernel<kVec, TG, TC>)(batch, k);
      } else {
        MOREH_CUDA_LAUNCH(grid, kThreads, 0, stream, AdamWKernel<1, TG, TC>)(batch, k);
      }
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
  // Group by (gradient dtype, copy dtype, vector alignment): each group is one kernel
  // instantiation.
  std::map<std::tuple<DType, DType, bool>, std::vector<const AdamWTensor*>> groups;
  for (int i = 0; i < count; ++i) {
    const AdamWTensor& t = tensors[i];
    MOREH_CHECK(t.n >= 0, "cuda::AdamWStep: tensor {} has {} elements", i, t.n);
    MOREH_CHECK(IsFloating(t.grad_type) && (!t.copy || IsFloating(t.copy_type)),
                "cuda::AdamWStep: tensor {}: gradient {} / copy {} (float dtypes)", i,
                DTypeName(t.grad_type), DTypeName(t.copy_type));
    if (t.n == 0) continue;
    const DType copy_type = t.copy ? t.copy_type : DType::kF32;
    groups[{t.grad_type, copy_type, VectorAligned(t)}].push_back(&t);
  }
  for (const auto& [types, list] : groups) {
    Batch batch{};
    for (const AdamWTensor* t : list) {
      if (batch.count == kPerLaunch) {
        Launch(batch, std::get<0>(types), std::get<1>(types), std::get<2>(types), k, stream);
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
    Launch(batch, std::get<0>(types), std::get<1>(types), std::get<2>(types), k, stream);
  }
}

}  // namespace moreh::kernels::cuda
