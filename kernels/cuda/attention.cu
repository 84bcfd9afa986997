// Flash attention on CUDA cores (f32 arithmetic; bf16 or f32 storage), forward and backward.
//
// Layout as on the CPU: q[B,T,H,D], k,v[B,S,Hkv,D], out[B,T,H,D], lse[B,H,T]; query head h reads
// key/value head h / (H / Hkv). A block has 128 threads; each row of the block's tile (a query row
// in the forward and the dq pass, a key row in the dk/dv pass) is owned by kTpr = kMaxD / 32
// neighbouring threads, and each of them holds 32 of the row's head dimensions in registers,
// interleaved (dimension sub + kTpr * e) so that neighbours read neighbouring shared-memory words.
// A dot product is 32 multiply-adds per thread and a log2(kTpr)-step shuffle. The other operand
// streams through shared memory kTile rows at a time. Scores exist only in registers, a tile at a
// time; nothing of size T x S is ever stored. The backward recomputes the probabilities from q, k
// and the saved row log-sum-exp, and makes no use of atomics (repeatable to the bit).
#include <string>
#include <type_traits>

#include "kernels/cuda/attention_tc.h"
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/cuda_kernels.h"

namespace moreh::kernels::cuda {
namespace {

constexpr int kThreads = 128;
constexpr int kPer = 32;  // head dimensions per thread

template <int kMaxD>
struct Tiling {
  static constexpr int kTpr = kMaxD / kPer;             // threads per owned row
  static constexpr int kRows = kThreads / kTpr;         // owned rows per block
  static constexpr int kTile = kMaxD <= 128 ? 32 : 16;  // streamed rows per shared-memory tile
};

// Sum over the kTpr threads that own one row (neighbouring lanes of one warp).
template <int kTpr>
__device__ __forceinline__ float RowSum(float v) {
#pragma unroll
  for (int o = kTpr / 2; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// Loads `count` rows (of `d` values, row stride `stride`) starting at row0 into tile[kTile][kMaxD]
// as f32, zero past `limit` rows or `d` columns.
template <typename T, int kMaxD, int kTile>
__device__ __forceinline__ void LoadTile(float (*tile)[kMaxD], const T* base, int64_t row0,
                                         int64_t limit, int64_t stride, int64_t d) {
  for (int idx = threadIdx.x; idx < kTile * kMaxD; idx += kThreads) {
    const int r = idx / kMaxD, c = idx % kMaxD;
    const int64_t row = row0 + r;
    tile[r][c] = (row < limit && c < d) ? ToF32(base[row * stride + c]) : 0.0f;
  }
}

// Loads this thread's 32 dimensions of one row (zero where the row or dimension does not exist).
template <typename T, int kTpr>
__device__ __forceinline__ void LoadOwn(float (&dst)[kPer], const T* row, bool ok, int sub,
                                        int64_t d) {
#pragma unroll
  for (int e = 0; e < kPer; ++e) {
    const int64_t c = sub + kTpr * e;
    dst[e] = (ok && c < d) ? ToF32(row[c]) : 0.0f;
  }
}

template <int kTpr, int kMaxD>
__device__ __forceinline__ float DotOwn(const float (&own)[kPer], const float* other, int sub) {
  float p = 0.0f;
#pragma unroll
  for (int e = 0; e < kPer; ++e) p += own[e] * other[sub + kTpr * e];
  return RowSum<kTpr>(p);
}

// grid (ceil(T / kRows), H, B)
template <typename T, int kMaxD>
__global__ void __launch_bounds__(kThreads)
    AttentionForwardKernel(T* out, float* lse, const T* q, const T* k, const T* v,
                           const int64_t* key_mask, AttentionShape sh) {
  using Tl = Tiling<kMaxD>;
  constexpr int kTpr = Tl::kTpr, kTile = Tl::kTile;
  __shared__ float ks[kTile][kMaxD];
  __shared__ float vs[kTile][kMaxD];
  const int sub = threadIdx.x % kTpr;
  const int64_t b = blockIdx.z, h = blockIdx.y, i0 = static_cast<int64_t>(blockIdx.x) * Tl::kRows;
  const int64_t i = i0 + threadIdx.x / kTpr;
  const int64_t D = sh.d, kv_stride = sh.hkv * D;
  const int64_t kvh = h / (sh.h / sh.hkv);
  const bool row_ok = i < sh.t;
  float qr[kPer], acc[kPer];
  LoadOwn<T, kTpr>(qr, q + ((b * sh.t + (row_ok ? i : 0)) * sh.h + h) * D, row_ok, sub, D);
#pragma unroll
  for (int e = 0; e < kPer; ++e) acc[e] = 0.0f;
  float m = kNegInf, l = 0.0f;
  const T* kb = k + b * sh.s * kv_stride + kvh * D;
  const T* vb = v + b * sh.s * kv_stride + kvh * D;
  const int64_t key_end = sh.causal ? min(sh.s, i0 + Tl::kRows) : sh.s;
  for (int64_t j0 = 0; j0 < key_end; j0 += kTile) {
    __syncthreads();  // the previous tile's readers are done
    LoadTile<T, kMaxD, kTile>(ks, kb, j0, sh.s, kv_stride, D);
    LoadTile<T, kMaxD, kTile>(vs, vb, j0, sh.s, kv_stride, D);
    __syncthreads();
    float s[kTile];
    float tile_max = kNegInf;
#pragma unroll
    for (int jj = 0; jj < kTile; ++jj) {
      const float dot = Cap(sh, DotOwn<kTpr, kMaxD>(qr, ks[jj], sub) * sh.scale);
      s[jj] = KeyVisible(sh, key_mask, b, i, j0 + jj) ? dot : kNegInf;
      tile_max = fmaxf(tile_max, s[jj]);
    }
    const float m_new = fmaxf(m, tile_max);
    if (m_new == kNegInf) continue;      // nothing visible to this row yet
    const float corr = expf(m - m_new);  // 0 when m is -inf (l and acc are 0 then)
    float sum = 0.0f;
#pragma unroll
    for (int jj = 0; jj < kTile; ++jj) {
      s[jj] = expf(s[jj] - m_new);
      sum += s[jj];
    }
    l = l * corr + sum;
    m = m_new;
#pragma unroll
    for (int e = 0; e < kPer; ++e) acc[e] *= corr;
#pragma unroll
    for (int jj = 0; jj < kTile; ++jj) {
      const float p = s[jj];
#pragma unroll
      for (int e = 0; e < kPer; ++e) acc[e] += p * vs[jj][sub + kTpr * e];
    }
  }
  if (!row_ok) return;
  const float inv = l > 0.0f ? 1.0f / l : 0.0f;
  T* orow = out + ((b * sh.t + i) * sh.h + h) * D;
#pragma unroll
  for (int e = 0; e < kPer; ++e) {
    const int64_t c = sub + kTpr * e;
    if (c < D) orow[c] = FromF32<T>(acc[e] * inv);
  }
  if (sub == 0) lse[(b * sh.h + h) * sh.t + i] = l > 0.0f ? m + logf(l) : kNegInf;
}

// dq: grid (ceil(T / kRows), H, B); the thread group of a query row walks the visible keys.
//   P = exp(scale q.k - lse), dP = dout.v, dS = P (dP - Drow), dq = scale sum dS k,
//   Drow = dout . out (the softmax's backward term).
template <typename T, int kMaxD>
__global__ void __launch_bounds__(kThreads)
    AttentionBackwardDqKernel(T* dq, const T* dout, const T* q, const T* k, const T* v,
                              const T* out, const float* lse, const int64_t* key_mask,
                              AttentionShape sh) {
  using Tl = Tiling<kMaxD>;
  constexpr int kTpr = Tl::kTpr, kTile = Tl::kTile;
  __shared__ float ks[kTile][kMaxD];
  __shared__ float vs[kTile][kMaxD];
  const int sub = threadIdx.x % kTpr;
  const int64_t b = blockIdx.z, h = blockIdx.y, i0 = static_cast<int64_t>(blockIdx.x) * Tl::kRows;
  const int64_t i = i0 + threadIdx.x / kTpr;
  const int64_t D = sh.d, kv_stride = sh.hkv * D;
  const int64_t kvh = h / (sh.h / sh.hkv);
  const bool row_ok = i < sh.t;
  const int64_t row_off = ((b * sh.t + (row_ok ? i : 0)) * sh.h + h) * D;
  float qr[kPer], dor[kPer], acc[kPer];
  LoadOwn<T, kTpr>(qr, q + row_off, row_ok, sub, D);
  LoadOwn<T, kTpr>(dor, dout + row_off, row_ok, sub, D);
  LoadOwn<T, kTpr>(acc, out + row_off, row_ok, sub, D);  // out, for Drow
  float drow = 0.0f;
#pragma unroll
  for (int e = 0; e < kPer; ++e) {
    drow += dor[e] * acc[e];
    acc[e] = 0.0f;
  }
  drow = RowSum<kTpr>(drow);
  const float row_lse = row_ok ? lse[(b * sh.h + h) * sh.t + i] : kNegInf;
  const T* kb = k + b * sh.s * kv_stride + kvh * D;
  const T* vb = v + b * sh.s * kv_stride + kvh * D;
  const int64_t key_end = sh.causal ? min(sh.s, i0 + Tl::kRows) : sh.s;
  for (int64_t j0 = 0; j0 < key_end; j0 += kTile) {
    __syncthreads();
    LoadTile<T, kMaxD, kTile>(ks, kb, j0, sh.s, kv_stride, D);
    LoadTile<T, kMaxD, kTile>(vs, vb, j0, sh.s, kv_stride, D);
    __syncthreads();
#pragma unroll 4
    for (int jj = 0; jj < kTile; ++jj) {
      const float sc = Cap(sh, DotOwn<kTpr, kMaxD>(qr, ks[jj], sub) * sh.scale);
      const float dp = DotOwn<kTpr, kMaxD>(dor, vs[jj], sub);
      const bool vis = row_lse != kNegInf && KeyVisible(sh, key_mask, b, i, j0 + jj);
      const float p = vis ? expf(sc - row_lse) : 0.0f;
      const float ds = p * (dp - drow) * CapGrad(sh, sc);
#pragma unroll
      for (int e = 0; e < kPer; ++e) acc[e] += ds * ks[jj][sub + kTpr * e];
    }
  }
  if (!row_ok) return;
  T* dst = dq + row_off;
#pragma unroll
  for (int e = 0; e < kPer; ++e) {
    const int64_t c = sub + kTpr * e;
    if (c < D) dst[c] = FromF32<T>(acc[e] * sh.scale);
  }
}

// dk, dv: grid (ceil(S / kRows), Hkv, B); the thread group of a key row walks the query rows (of
// every query head in its group) that see it: dv = sum P dout, dk = scale sum dS q.
template <typename T, int kMaxD>
__global__ void __launch_bounds__(kThreads)
    AttentionBackwardDkvKernel(T* dk, T* dv, const T* dout, const T* q, const T* k, const T* v,
                               const T* out, const float* lse, const int64_t* key_mask,
                               AttentionShape sh) {
  using Tl = Tiling<kMaxD>;
  constexpr int kTpr = Tl::kTpr, kTile = Tl::kTile;
  __shared__ float qs[kTile][kMaxD];
  __shared__ float dos[kTile][kMaxD];
  __shared__ float lse_s[kTile], drow_s[kTile];
  const int sub = threadIdx.x % kTpr;
  const int64_t b = blockIdx.z, kvh = blockIdx.y;
  const int64_t j0 = static_cast<int64_t>(blockIdx.x) * Tl::kRows, j = j0 + threadIdx.x / kTpr;
  const int64_t D = sh.d, q_stride = sh.h * D, kv_stride = sh.hkv * D, group = sh.h / sh.hkv;
  const bool key_ok = j < sh.s;
  const int64_t key_off = (b * sh.s + (key_ok ? j : 0)) * kv_stride + kvh * D;
  float kr[kPer], vr[kPer], dk_acc[kPer], dv_acc[kPer];
  LoadOwn<T, kTpr>(kr, k + key_off, key_ok, sub, D);
  LoadOwn<T, kTpr>(vr, v + key_off, key_ok, sub, D);
#pragma unroll
  for (int e = 0; e < kPer; ++e) dk_acc[e] = dv_acc[e] = 0.0f;
  // Query rows that can see a key of this block start at j0 under the causal mask.
  const int64_t q_begin = sh.causal ? (j0 / kTile) * kTile : 0;
  for (int64_t hh = 0; hh < group; ++hh) {
    const int64_t h = kvh * group + hh;
    const T* qb = q + (b * sh.t * sh.h + h) * D;
    const T* dob = dout + (b * sh.t * sh.h + h) * D;
    const T* ob = out + (b * sh.t * sh.h + h) * D;
    for (int64_t i0 = q_begin; i0 < sh.t; i0 += kTile) {
      __syncthreads();
      LoadTile<T, kMaxD, kTile>(qs, qb, i0, sh.t, q_stride, D);
      LoadTile<T, kMaxD, kTile>(dos, dob, i0, sh.t, q_stride, D);
      // Drow for the tile's query rows: kThreads / kTile threads per row, then a shuffle.
      {
        constexpr int kPerRow = kThreads / kTile;  // 4 or 8 neighbouring lanes
        const int r = threadIdx.x / kPerRow, part = threadIdx.x % kPerRow;
        const int64_t i = i0 + r;
        float acc = 0.0f;
        if (i < sh.t) {
          const T* orow = ob + i * q_stride;
          const T* drow = dob + i * q_stride;
          for (int64_t c = part; c < D; c += kPerRow) acc += ToF32(drow[c]) * ToF32(orow[c]);
        }
#pragma unroll
        for (int o = kPerRow / 2; o > 0; o >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, o);
        if (part == 0) {
          drow_s[r] = acc;
          lse_s[r] = i < sh.t ? lse[(b * sh.h + h) * sh.t + i] : kNegInf;
        }
      }
      __syncthreads();
#pragma unroll 4
      for (int ii = 0; ii < kTile; ++ii) {
        const int64_t i = i0 + ii;
        const float sc = Cap(sh, DotOwn<kTpr, kMaxD>(kr, qs[ii], sub) * sh.scale);
        const float dp = DotOwn<kTpr, kMaxD>(vr, dos[ii], sub);
        const float row_lse = lse_s[ii];
        const bool vis = key_ok && row_lse != kNegInf && KeyVisible(sh, key_mask, b, i, j);
        const float p = vis ? expf(sc - row_lse) : 0.0f;
        const float ds = p * (dp - drow_s[ii]) * CapGrad(sh, sc);
#pragma unroll
        for (int e = 0; e < kPer; ++e) {
          dv_acc[e] += p * dos[ii][sub + kTpr * e];
          dk_acc[e] += ds * qs[ii][sub + kTpr * e];
        }
      }
    }
  }
  if (!key_ok) return;
  T* dkr = dk + key_off;
  T* dvr = dv + key_off;
#pragma unroll
  for (int e = 0; e < kPer; ++e) {
    const int64_t c = sub + kTpr * e;
    if (c < D) {
      dkr[c] = FromF32<T>(dk_acc[e] * sh.scale);
      dvr[c] = FromF32<T>(dv_acc[e]);
    }
  }
}

void CheckShape(const AttentionShape& sh, DType dtype, const char* what) {
  MOREH_CHECK(sh.b >= 0 && sh.t >= 0 && sh.s >= 0 && sh.h > 0 && sh.hkv > 0 && sh.h % sh.hkv == 0,
              "cuda::{}: bad shape b={} t={} s={} h={} hkv={}", what, sh.b, sh.t, sh.s, sh.h,
              sh.hkv);
  MOREH_CHECK(sh.d > 0 && sh.d <= 256, "cuda::{}: head dim {} (1 to 256 supported)", what, sh.d);
  MOREH_CHECK(!sh.causal || sh.t == sh.s, "cuda::{}: causal attention needs T == S ({} vs {})",
              what, sh.t, sh.s);
  MOREH_CHECK(dtype == DType::kF32 || dtype == DType::kBF16, "cuda::{}: dtype {} (f32 or bf16)",
              what, DTypeName(dtype));
  MOREH_CHECK(sh.h <= 65535 && sh.b <= 65535, "cuda::{}: {} heads x {} batch exceed the grid", what,
              sh.h, sh.b);
}

// Calls f(T{}, std::integral_constant<int, kMaxD>{}) for the smallest supported kMaxD >= d.
template <typename F>
void Dispatch(const AttentionShape& sh, DType dtype, F&& f) {
  auto by_dim = [&](auto tag) {
    if (sh.d <= 64) {
      f(tag, std::integral_constant<int, 64>{});
    } else if (sh.d <= 128) {
      f(tag, std::integral_constant<int, 128>{});
    } else {
      f(tag, std::integral_constant<int, 256>{});
    }
  };
  if (dtype == DType::kF32) {
    by_dim(float{});
  } else {
    by_dim(__nv_bfloat16{});
  }
}

unsigned Tiles(int64_t n, int rows) { return static_cast<unsigned>((n + rows - 1) / rows); }

const char* ImplName(AttentionImpl impl) {
  switch (impl) {
    case AttentionImpl::kMma:
      return "mma";
    case AttentionImpl::kWmma:
      return "wmma";
    case AttentionImpl::kSimple:
      return "simple";
    default:
      return "auto";
  }
}

// The implementation that runs: kAuto is MOREH_CUDA_ATTENTION's choice where supported, else the
// CUDA-core kernels; an explicit tensor-core choice throws where unsupported.
AttentionImpl Resolve(AttentionImpl impl, const AttentionShape& sh, DType dtype,
                      std::initializer_list<const void*> ptrs, const char* what) {
  if (impl == AttentionImpl::kSimple) return impl;
  const bool automatic = impl == AttentionImpl::kAuto;
  if (automatic) impl = DefaultAttentionImpl();
  if (impl == AttentionImpl::kSimple || TensorCoreAttentionSupported(impl, sh, dtype, ptrs)) {
    return impl;
  }
  MOREH_CHECK(automatic,
              "cuda::{}: the {} tensor-core kernels need bf16, head dim 64 or 128, no "
              "soft-capping, 16-byte "
              "aligned tensors and enough shared memory (got {}, d={})",
              what, ImplName(impl), DTypeName(dtype), sh.d);
  return AttentionImpl::kSimple;
}

bool Aligned16(std::initializer_list<const void*> ptrs) {
  for (const void* p : ptrs) {
    if (reinterpret_cast<uintptr_t>(p) % 16 != 0) return false;
  }
  return true;
}

}  // namespace

bool TensorCoreAttentionSupported(AttentionImpl impl, const AttentionShape& sh, DType dtype,
                                  std::initializer_list<const void*> ptrs) {
  // Soft-capped scores (Gemma 2) run on the CUDA-core kernels only.
  if (dtype != DType::kBF16 || (sh.d != 64 && sh.d != 128) || !Aligned16(ptrs) || sh.softcap > 0) {
    return false;
  }
  // The largest of the implementation's kernels must fit the current GPU's shared memory
  // (Hopper: 227 KiB; smaller on other generations, which then run the CUDA-core kernels).
  const size_t needed =
      impl == AttentionImpl::kWmma ? WmmaAttentionSmemBytes(sh.d) : MmaAttentionSmemBytes(sh.d);
  int device = 0, optin = 0;
  MOREH_CUDA_CHECK(cudaGetDevice(&device));
  MOREH_CUDA_CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  return static_cast<size_t>(optin) >= needed;
}

AttentionImpl DefaultAttentionImpl() {
  static const AttentionImpl impl = [] {
    const char* e = std::getenv("MOREH_CUDA_ATTENTION");
    const std::string v = e == nullptr ? "" : e;
    if (v.empty() || v == "mma") return AttentionImpl::kMma;
    if (v == "wmma") return AttentionImpl::kWmma;
    if (v == "simple") return AttentionImpl::kSimple;
    throw Error(
        fmt::format("MOREH_CUDA_ATTENTION='{}': expected mma (the default), wmma or simple", v));
  }();
  return impl;
}

void LaunchAttentionForward(AttentionForwardKernelFn kernel, size_t smem, int rows, int threads,
                            void* out, float* lse, const void* q, const void* k, const void* v,
                            const int64_t* key_mask, const AttentionShape& sh,
                            cudaStream_t stream) {
  AllowDynamicSmem(kernel, smem);
  const dim3 grid(Tiles(sh.t, rows), static_cast<unsigned>(sh.h), static_cast<unsigned>(sh.b));
  MOREH_CUDA_LAUNCH(grid, threads, smem, stream, kernel)
  (static_cast<__nv_bfloat16*>(out), lse, static_cast<const __nv_bfloat16*>(q),
   static_cast<const __nv_bfloat16*>(k), static_cast<const __nv_bfloat16*>(v), key_mask, sh);
  MOREH_CUDA_CHECK_LAUNCH();
}

void LaunchAttentionBackward(AttentionDqKernelFn dq_kernel, size_t dq_smem,
                             AttentionDkvKernelFn dkv_kernel, size_t dkv_smem, int rows,
                             int threads, void* dq, void* dk, void* dv, const void* dout,
                             const void* q, const void* k, const void* v, const void* out,
                             const float* lse, const int64_t* key_mask, float* drow,
                             const AttentionShape& sh, cudaStream_t stream) {
  using bf16 = __nv_bfloat16;
  AllowDynamicSmem(dq_kernel, dq_smem);
  AllowDynamicSmem(dkv_kernel, dkv_smem);
  const auto* pdout = static_cast<const bf16*>(dout);
  const auto* pq = static_cast<const bf16*>(q);
  const auto* pk = static_cast<const bf16*>(k);
  const auto* pv = static_cast<const bf16*>(v);
  const auto* po = static_cast<const bf16*>(out);
  const dim3 q_grid(Tiles(sh.t, rows), static_cast<unsigned>(sh.h), static_cast<unsigned>(sh.b));
  MOREH_CUDA_LAUNCH(q_grid, threads, dq_smem, stream, dq_kernel)
  (static_cast<bf16*>(dq), pdout, pq, pk, pv, po, lse, key_mask, drow, sh);
  MOREH_CUDA_CHECK_LAUNCH();
  if (sh.s == 0) return;
  const dim3 kv_grid(Tiles(sh.s, rows), static_cast<unsigned>(sh.hkv), static_cast<unsigned>(sh.b));
  MOREH_CUDA_LAUNCH(kv_grid, threads, dkv_smem, stream, dkv_kernel)
  (static_cast<bf16*>(dk), static_cast<bf16*>(dv), pdout, pq, pk, pv, po, lse, key_mask, drow, sh);
  MOREH_CUDA_CHECK_LAUNCH();
}

void AttentionForward(void* out, float* lse, const void* q, const void* k, const void* v,
                      const int64_t* key_mask, const AttentionShape& sh, DType dtype,
                      cudaStream_t stream, AttentionImpl impl) {
  CheckShape(sh, dtype, "AttentionForward");
  impl = Resolve(impl, sh, dtype, {out, q, k, v}, "AttentionForward");
  if (sh.b == 0 || sh.t == 0) return;
  if (impl == AttentionImpl::kMma) {
    AttentionForwardMma(out, lse, q, k, v, key_mask, sh, stream);
    return;
  }
  if (impl == AttentionImpl::kWmma) {
    AttentionForwardTensorCores(out, lse, q, k, v, key_mask, sh, stream);
    return;
  }
  Dispatch(sh, dtype, [&](auto tag, auto dim) {
    using T = decltype(tag);
    constexpr int kMaxD = decltype(dim)::value;
    const dim3 grid(Tiles(sh.t, Tiling<kMaxD>::kRows), static_cast<unsigned>(sh.h),
                    static_cast<unsigned>(sh.b));
    MOREH_CUDA_LAUNCH(grid, kThreads, 0, stream, AttentionForwardKernel<T, kMaxD>)
    (static_cast<T*>(out), lse, static_cast<const T*>(q), static_cast<const T*>(k),
     static_cast<const T*>(v), key_mask, sh);
  });
  MOREH_CUDA_CHECK_LAUNCH();
}

void AttentionBackward(void* dq, void* dk, void* dv, const void* dout, const void* q, const void* k,
                       const void* v, const void* out, const float* lse, const int64_t* key_mask,
                       const AttentionShape& sh, DType dtype, cudaStream_t stream,
                       AttentionImpl impl, float* row_scratch) {
  CheckShape(sh, dtype, "AttentionBackward");
  impl = Resolve(impl, sh, dtype, {dq, dk, dv, dout, q, k, v, out}, "AttentionBackward");
  if (sh.b == 0) return;
  const size_t kv_bytes = static_cast<size_t>(sh.b * sh.s * sh.hkv * sh.d) * DTypeSize(dtype);
  if (sh.t == 0) {  // no query: the key and value gradients are zero
    MOREH_CUDA_CHECK(cudaMemsetAsync(dk, 0, kv_bytes, stream));
    MOREH_CUDA_CHECK(cudaMemsetAsync(dv, 0, kv_bytes, stream));
    return;
  }
  if (impl == AttentionImpl::kMma) {
    // dO . O per query row, written by the dq pass and read by the dk/dv pass: the caller's
    // buffer, or one of our own for the duration (stream-ordered, so no synchronisation).
    float* drow = row_scratch;
    if (drow == nullptr) {
      MOREH_CUDA_CHECK(cudaMallocAsync(reinterpret_cast<void**>(&drow),
                                       static_cast<size_t>(sh.b * sh.h * sh.t) * sizeof(float),
                                       stream));
    }
    AttentionBackwardMma(dq, dk, dv, dout, q, k, v, out, lse, key_mask, drow, sh, stream);
    if (row_scratch == nullptr) MOREH_CUDA_CHECK(cudaFreeAsync(drow, stream));
    return;
  }
  if (impl == AttentionImpl::kWmma) {
    AttentionBackwardTensorCores(dq, dk, dv, dout, q, k, v, out, lse, key_mask, nullptr, sh,
                                 stream);
    return;
  }
  Dispatch(sh, dtype, [&](auto tag, auto dim) {
    using T = decltype(tag);
    constexpr int kMaxD = decltype(dim)::value;
    constexpr int kRows = Tiling<kMaxD>::kRows;
    const dim3 q_grid(Tiles(sh.t, kRows), static_cast<unsigned>(sh.h), static_cast<unsigned>(sh.b));
    MOREH_CUDA_LAUNCH(q_grid, kThreads, 0, stream, AttentionBackwardDqKernel<T, kMaxD>)
    (static_cast<T*>(dq), static_cast<const T*>(dout), static_cast<const T*>(q),
     static_cast<const T*>(k), static_cast<const T*>(v), static_cast<const T*>(out), lse, key_mask,
     sh);
    MOREH_CUDA_CHECK_LAUNCH();
    if (sh.s == 0) return;
    const dim3 kv_grid(Tiles(sh.s, kRows), static_cast<unsigned>(sh.hkv),
                       static_cast<unsigned>(sh.b));
    MOREH_CUDA_LAUNCH(kv_grid, kThreads, 0, stream, AttentionBackwardDkvKernel<T, kMaxD>)
    (static_cast<T*>(dk), static_cast<T*>(dv), static_cast<const T*>(dout),
     static_cast<const T*>(q), static_cast<const T*>(k), static_cast<const T*>(v),
     static_cast<const T*>(out), lse, key_mask, sh);
    MOREH_CUDA_CHECK_LAUNCH();
  });
}

}  // namespace moreh::kernels::cuda
