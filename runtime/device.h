// The device a program's tensors compute on when the job runs in-process (not on worker daemons):
// MOREH_DEVICE=cpu (the default; the CPU device, capacity MOREH_CPU_DEVICE_MEMORY) or cuda:N (GPU
// N, CUDA builds; capacity MOREH_CUDA_DEVICE_MEMORY or its free memory). The lazy runtime runs
// each step's graph there; parameters, gradients and optimizer states move there with the first
// step and stay.
#pragma once

#include <string>

#include "kernels/cpu/cpu_kernels.h"
#include "runtime/core/allocator.h"
#include "runtime/core/tensor.h"

namespace moreh::runtime {

// "cpu", "cpu:0" or "cuda:N". Throws moreh::Error naming the spec when it is not one of them, when
// this build has no CUDA, or when GPU N does not exist.
Allocator* DeviceAllocator(const std::string& spec);
// DeviceAllocator(MOREH_DEVICE), or the CPU when unset.
Allocator* DefaultDevice();

// MOREH_COMPUTE_DTYPE (f32, bf16 or f16) into *out; false when it is unset. Throws moreh::Error
// naming any other value.
bool ComputeDTypeFromEnv(DType* out);
// The dtype a program computes in on `device`: MOREH_COMPUTE_DTYPE when set, else bf16 on a GPU
// (mixed precision: bf16 copies of the f32 master weights, bf16 activations, f32 loss) and f32 on
// the CPU (whose kernels compute in f32 anyway).
DType ComputeDType(const Allocator* device);

// Kernels that code outside the graph (the pipeline runner) runs on a tensor wherever it lives:
// the CPU kernel for host memory, the CUDA kernel for a GPU's (on the calling thread's device).
// acc (f32, contiguous) += x (any float dtype, same number of elements).
void AddInto(const Tensor& acc, const Tensor& x);
// Whether every element of x (f32, contiguous) is finite (the loss scaler's overflow check).
bool AllFinite(const Tensor& x);
// The sum of the squares of x[begin, end) (x f32, contiguous), accumulated in f64 (the gradient
// clipping's norm).
double SumOfSquares(const Tensor& x, int64_t begin, int64_t end);
// x (f32, contiguous) *= s, in place.
void ScaleInPlace(const Tensor& x, float s);
// AdamW (torch semantics) on n elements of f32 param/m/v/grad, all in the memory of `where`.
void AdamWStepOn(const Tensor& where, float* param, float* m, float* v, const float* grad,
                 int64_t n, const kernels::cpu::AdamWParams& p);

}  // namespace moreh::runtime
