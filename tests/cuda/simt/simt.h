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
//   - stream ordering: each stream's work runs later, on its own host thread (simt_streams.cc),
//     with random delays, so a missing wait between streams shows as stale data.
// The tensor-core instructions the attention kernels use are here too (mma.sync, ldmatrix,
// cp.async, WMMA 16x16x16). What it does not model: cuBLASLt (simt_device.cc: the CPU's GEMM);
// timing; the memory model beyond barriers and cp.async groups (a warp-synchronous assumption
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
// WMMA's 16 x 16 x 16 product, each lane holding whole tiles: d = a b + c, the 256 outputs shared
// out among the warp's lanes (8 each) and exchanged.
void Mma16x16x16(float d[256], const float a[256], const float b[256], const float c[256]);
void CpAsyncCommit();
void CpAsyncWaitPrior(int n);
// The order the threads of a block run between two barriers (default: MOREH_SIMT_ORDER, forward
// or reverse).
void SetReverseOrder(bool reverse);

// Runs body() as each thread of each block of the grid (the launch API's job): the configuration
// is checked now, the grid runs on the stream (simt_streams.cc).
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

// Streams (simt_streams.cc): each has its own host thread that runs what was queued on it in
// order, later than the call that queued it (kernels, copies, memsets, event records and waits,
// the emulated GEMM and NCCL operations), as a GPU does; a wait on the host (a synchronize, a
// cudaMemcpy, cudaFree) rethrows the first exception such an operation threw.
// MOREH_SIMT_STREAMS=sync runs each at its call instead. A null stream or cudaStreamLegacy is the
// calling thread's current device's default (legacy) stream.
void Enqueue(cudaStream_t stream, std::function<void()> op);
bool SynchronousStreams();
// How many times a host thread has waited for stream work so far: stream, device and event
// synchronizations, and the calls that wait (cudaMemcpy, copies with host memory, cudaFree). On a
// GPU each drains the queue the host keeps ahead of the device.
uint64_t HostWaits();
// Sets the calling thread's last error (cudaGetLastError) unless e is cudaSuccess; returns e.
cudaError_t RecordError(cudaError_t e);

// The emulator's integer settings: `name` from the environment, `fallback` when unset; anything
// but an integer from lo to hi is an error naming it.
int EnvInt(const char* name, int fallback, int lo, int hi);

// How many devices the emulator has: MOREH_SIMT_DEVICES (1 to 8, default 1). They share the
// host's memory; each host thread has its current device (cudaSetDevice).
int EmulatedDevices();

inline int XorLane(int lane, int m) { return lane ^ m; }

template <typename T>
T ShflXor(unsigned mask, T v, int lane_mask) {
  T out;
  WarpExchange(mask, &v, sizeof(T), XorLane, lane_mask, &out);
  return out;
}

}  // namespace moreh::simt

// nvcuda::wmma for 16 x 16 x 16 tiles (what attention_tc.cu uses), each lane holding the whole
// tile as f32 (the hardware's per-lane layout is opaque and the kernels never look at it). Every
// call is a warp-wide barrier, as the _sync names promise.
namespace nvcuda::wmma {
struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };

template <typename Use, int M, int N, int K, typename T, typename Layout = void>
struct fragment {
  static_assert(M == 16 && N == 16 && K == 16, "the emulator has 16 x 16 x 16 WMMA only");
  float v[256];  // [row][col]
};

template <typename Use, typename T, typename Layout>
void fill_fragment(fragment<Use, 16, 16, 16, T, Layout>& f, float value) {
  ::moreh::simt::SyncWarp();
  for (float& x : f.v) x = value;
}

namespace detail {
inline float ToFloat(float x) { return x; }
inline float ToFloat(__nv_bfloat16 x) { return __bfloat162float(x); }
inline float ToFloat(__half x) { return __half2float(x); }
template <typename T>
void Load(float* v, const T* p, unsigned ldm, bool col_major) {
  ::moreh::simt::SyncWarp();
  for (int r = 0; r < 16; ++r) {
    for (int c = 0; c < 16; ++c)
      v[r * 16 + c] = ToFloat(col_major ? p[c * ldm + r] : p[r * ldm + c]);
  }
}
}  // namespace detail

template <typename Use, typename T, typename Layout>
void load_matrix_sync(fragment<Use, 16, 16, 16, T, Layout>& f, const T* p, unsigned ldm) {
  detail::Load(f.v, p, ldm, std::is_same_v<Layout, col_major>);
}
template <typename T>
void load_matrix_sync(fragment<accumulator, 16, 16, 16, T>& f, const T* p, unsigned ldm,
                      layout_t layout) {
  detail::Load(f.v, p, ldm, layout == mem_col_major);
}
template <typename T>
void store_matrix_sync(T* p, const fragment<accumulator, 16, 16, 16, T>& f, unsigned ldm,
                       layout_t layout) {
  ::moreh::simt::SyncWarp();
  for (int r = 0; r < 16; ++r) {
    for (int c = 0; c < 16; ++c) {
      (layout == mem_col_major ? p[c * ldm + r] : p[r * ldm + c]) = f.v[r * 16 + c];
    }
  }
}
template <typename TA, typename LA, typename TB, typename LB, typename TC>
void mma_sync(fragment<accumulator, 16, 16, 16, TC>& d,
              const fragment<matrix_a, 16, 16, 16, TA, LA>& a,
              const fragment<matrix_b, 16, 16, 16, TB, LB>& b,
              const fragment<accumulator, 16, 16, 16, TC>& c) {
  ::moreh::simt::Mma16x16x16(d.v, a.v, b.v, c.v);
}
}  // namespace nvcuda::wmma

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
