// A SIMT emulator for the CUDA kernels, so that the build machines (no GPU) run them too.
//
// The kernel sources (kernels/cuda/*.cu) are compiled as C++ for the host with this header forced
// in first (-include). Each kernel launch runs its grid one block at a time; each thread of the
// block is a fiber (its own stack) that runs until it reaches a barrier (__syncthreads, a warp
// shuffle, __syncwarp) or returns, and a barrier opens when every thread of the block (of the
// warp) that has not returned waits at it. What this checks that a GPU would not show as plainly:
//   - every index computed by the kernels (device buffers are host allocations of the exact size:
//     under AddressSanitizer an access one element past an end stops the run);
//   - barriers: threads of a block waiting at different kinds of barrier (a shuffle against a
//     __syncthreads) is reported as a deadlock naming the kernel and the block;
//   - missing barriers: the scheduler always resumes the first ready thread in the run order,
//     thread order or (MOREH_SIMT_ORDER=reverse) its reverse, so early threads run as far ahead
//     as their barriers allow; a value read or overwritten without the barrier it needs is
//     stale in one of the two orders;
//   - launch configurations: block size, grid size and dynamic shared memory are checked against
//     a Hopper GPU's limits, the 48 KiB default included (a kernel needing more without
//     cudaFuncSetAttribute fails here as it would there).
// What it does not model: tensor-core instructions (mma, ldmatrix, cp.async, WMMA) and cuBLASLt
// (simt_device.cc); timing; the memory model beyond barriers (a warp-synchronous assumption
// without __syncwarp is caught only when the order exposes it); partial-warp masks (refused).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <tuple>
#include <type_traits>
#include <utility>

namespace moreh::simt {

// The running thread's coordinates.
struct ThreadCoords {
  uint3 thread_idx{0, 0, 0};
  uint3 block_idx{0, 0, 0};
  dim3 block_dim{1, 1, 1};
  dim3 grid_dim{1, 1, 1};
};
// The running thread's (set by the scheduler before it resumes a thread).
extern const ThreadCoords* g_current;
inline const ThreadCoords& Current() { return *g_current; }

void SyncThreads();
int SyncThreadsAnd(int predicate);
int SyncThreadsOr(int predicate);
void SyncWarp(unsigned mask = 0xffffffffu);
// Every lane of `mask` passes `bytes` bytes; each gets those of lane src_lane(its lane).
void WarpExchange(unsigned mask, const void* value, size_t bytes, int (*src_lane)(int, int),
                  int arg, void* out);
void* DynamicShared();
// The tensor-core instructions the mma attention uses (kernels/cuda/attention_mma.cu), each a
// warp-wide exchange: mma.sync.m16n8k16 (bf16 in, f32 accumulation) and ldmatrix.x4 (.trans)
// with the PTX ISA's fragment layouts; cp.async with its commit groups.
void MmaM16N8K16Bf16(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1);
void LoadMatrixX4(uint32_t r[4], const void* row_address, bool trans);
void CpAsync(void* dst, const void* src, size_t bytes, size_t zero_fill = 0);
void CpAsyncCommit();
void CpAsyncWaitPrior(int n);
// The order the threads of a block run between two barriers (default: MOREH_SIMT_ORDER, forward
// or reverse).
void SetReverseOrder(bool reverse);

// Runs body() as each thread of each block of the grid (the launch API's job).
void Launch(const char* kernel, dim3 grid, dim3 block, size_t smem, cudaStream_t stream,
            const void* kernel_id, std::function<void()> body);

// MOREH_CUDA_LAUNCH's host side: the kernel's arguments are copied as a launch copies them.
template <typename... P>
class Launcher {
 public:
  Launcher(dim3 grid, dim3 block, size_t smem, cudaStream_t stream, void (*kernel)(P...),
           const char* name)
      : grid_(grid), block_(block), smem_(smem), stream_(stream), kernel_(kernel), name_(name) {}
  template <typename... A>
  void operator()(A&&... args) const {
    std::tuple<std::decay_t<P>...> params(static_cast<P>(std::forward<A>(args))...);
    void (*kernel)(P...) = kernel_;
    Launch(name_, grid_, block_, smem_, stream_, reinterpret_cast<const void*>(kernel),
           [kernel, params] { std::apply(kernel, params); });
  }

 private:
  dim3 grid_, block_;
  size_t smem_;
  cudaStream_t stream_;
  void (*kernel_)(P...);
  const char* name_;
};

template <typename... P>
Launcher<P...> MakeLauncher(dim3 grid, dim3 block, size_t smem, cudaStream_t stream,
                            void (*kernel)(P...), const char* name) {
  return Launcher<P...>(grid, block, smem, stream, kernel, name);
}

inline int XorLane(int lane, int m) { return lane ^ m; }

template <typename T>
T ShflXor(unsigned mask, T v, int lane_mask) {
  T out;
  WarpExchange(mask, &v, sizeof(T), XorLane, lane_mask, &out);
  return out;
}

}  // namespace moreh::simt

// Device qualifiers become plain C++. __shared__ variables are static (one block runs at a time):
// a block starts with what the last block left there, as on a GPU (dynamic shared memory starts
// as 0xff bytes: NaN, -1).
#undef __global__
#undef __device__
#undef __host__
#undef __forceinline__
#undef __launch_bounds__
#undef __shared__
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static

#define threadIdx (::moreh::simt::Current().thread_idx)
#define blockIdx (::moreh::simt::Current().block_idx)
#define blockDim (::moreh::simt::Current().block_dim)
#define gridDim (::moreh::simt::Current().grid_dim)

#define __syncthreads ::moreh::simt::SyncThreads
#define __syncthreads_and ::moreh::simt::SyncThreadsAnd
#define __syncthreads_or ::moreh::simt::SyncThreadsOr
#define __syncwarp ::moreh::simt::SyncWarp
#define __shfl_xor_sync ::moreh::simt::ShflXor
#define __pipeline_memcpy_async ::moreh::simt::CpAsync
#define __pipeline_commit ::moreh::simt::CpAsyncCommit
#define __pipeline_wait_prior ::moreh::simt::CpAsyncWaitPrior

inline float __int_as_float(int x) {
  float f;
  std::memcpy(&f, &x, sizeof f);
  return f;
}
inline int __float_as_int(float f) {
  int x;
  std::memcpy(&x, &f, sizeof x);
  return x;
}
// cuda_runtime.h's typed overload (declared there for nvcc only).
template <typename... P>
cudaError_t cudaFuncSetAttribute(void (*kernel)(P...), cudaFuncAttribute attr, int value) {
  return cudaFuncSetAttribute(reinterpret_cast<const void*>(kernel), attr, value);
}

// The device's global math functions.
using std::isfinite;
using std::isinf;
using std::isnan;

// The device's min and max (any two arithmetic types).
template <typename A, typename B>
std::common_type_t<A, B> min(A a, B b) {
  return a < b ? a : b;
}
template <typename A, typename B>
std::common_type_t<A, B> max(A a, B b) {
  return a < b ? b : a;
}
// One block runs at a time and its threads switch only at barriers, so a read-modify-write is
// atomic.
template <typename T>
T atomicAdd(T* p, T v) {
  const T old = *p;
  *p = old + v;
  return old;
}
