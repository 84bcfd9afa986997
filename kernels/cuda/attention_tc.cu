// Flash attention on tensor cores (bf16 in, f32 accumulation; head dims 64 and 128): the fast path
// behind AttentionForward / AttentionBackward (attention.cu keeps the CUDA-core version for other
// shapes and dtypes, and as the fallback: MOREH_CUDA_ATTENTION=simple).
//
// A block has 4 warps; each warp owns 16 rows of the block's 64-row tile and multiplies 16x16x16
// bf16 fragments (WMMA) against 64-row tiles of the other operand streamed through shared memory.
// Products land in per-warp shared-memory scratch, where the softmax (forward: online, per key
// tile; backward: from the saved log-sum-exp) runs in f32 with two lanes per row; the probabilities
// (and in the backward dS) are rounded to bf16 for the next product, as FlashAttention-2 does.
// Accumulators (O, dQ, dK, dV) live in f32 shared memory. The backward is two passes without
// atomics, as in attention.cu: per key tile (dK, dV over the group's query heads) and per query
// tile (dQ).
#ifndef MOREH_CUDA_SIMT  // the emulator has its own nvcuda::wmma (tests/cuda/simt)
#include <mma.h>
#endif

#include <algorithm>

#include "kernels/cuda/attention_tc.h"
#include "kernels/cuda/common.cuh"

namespace moreh::kernels::cuda {
namespace {

namespace wmma = nvcuda::wmma;
using bf16 = __nv_bfloat16;

constexpr int kWarps = 4, kThreads = 128, kTile = 64;  // rows per block tile and per streamed tile
constexpr int kLS = kTile + 4;                         // f32 row stride of a warp's 16 x 64 scratch
constexpr int kLP = kTile + 8;  // bf16 row stride of a warp's 16 x 64 scratch

template <int D>
struct Layout {
  static constexpr int kLD = D + 8;  // bf16 row stride of 64-row tiles (padding against conflicts)
  static constexpr int kLO = D + 4;  // f32 row stride of a warp's 16 x D accumulator
  static constexpr size_t kTileBytes = size_t{kTile} * kLD * sizeof(bf16);
  static constexpr size_t kWarpF32 = size_t{16} * kLS * sizeof(float);  // per warp, 16 x 64 f32
  static constexpr size_t kWarpBf16 = size_t{16} * kLP * sizeof(bf16);  // per warp, 16 x 64 bf16
  static constexpr size_t kWarpAcc = size_t{16} * kLO * sizeof(float);  // per warp, 16 x D f32
};

using FragA = wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major>;
using FragBRow = wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::row_major>;
using FragBCol = wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::col_major>;
using FragC = wmma::fragment<wmma::accumulator, 16, 16, 16, float>;

// Loads rows [row0, row0 + 64) of a [rows, D] matrix with row stride `stride` (elements) into a
// tile with row stride kLD, 16 bytes at a time; zero past `limit`.
template <int D>
__device__ __forceinline__ void LoadTile(bf16* tile, const bf16* base, int64_t row0, int64_t limit,
                                         int64_t stride) {
  constexpr int kVec = D / 8;
  for (int idx = threadIdx.x; idx < kTile * kVec; idx += kThreads) {
    const int r = idx / kVec, c = (idx % kVec) * 8;
    const int64_t row = row0 + r;
    uint4 v = make_uint4(0, 0, 0, 0);
    if (row < limit) v = *reinterpret_cast<const uint4*>(base + row * stride + c);
    *reinterpret_cast<uint4*>(tile + r * Layout<D>::kLD + c) = v;
  }
}

// out (16 x 64 f32, row stride kLS) = A (16 x D rows of a tile) times the 64 rows of `b` taken as
// columns (A B^T): both operands row-major tiles with row stride kLD.
template <int D>
__device__ __forceinline__ void MulABt(float* out, const bf16* a, const bf16* b) {
  constexpr int kLD = Layout<D>::kLD;
  FragC acc[kTile / 16];
#pragma unroll
  for (int n = 0; n < kTile / 16; ++n) wmma::fill_fragment(acc[n], 0.0f);
#pragma unroll
  for (int kk = 0; kk < D; kk += 16) {
    FragA fa;
    wmma::load_matrix_sync(fa, a + kk, kLD);
#pragma unroll
    for (int n = 0; n < kTile / 16; ++n) {
      FragBCol fb;  // B[k][n] = b[n][k]: column-major with leading dimension kLD
      wmma::load_matrix_sync(fb, b + n * 16 * kLD + kk, kLD);
      wmma::mma_sync(acc[n], fa, fb, acc[n]);
    }
  }
#pragma unroll
  for (int n = 0; n < kTile / 16; ++n) {
    wmma::store_matrix_sync(out + n * 16, acc[n], kLS, wmma::mem_row_major);
  }
}

// acc (16 x D f32, row stride kLO) += p (16 x 64 bf16, row stride kLP) times the tile b (64 x D).
template <int D>
__device__ __forceinline__ void AccumulatePB(float* acc, const bf16* p, const bf16* b) {
  constexpr int kLD = Layout<D>::kLD, kLO = Layout<D>::kLO;
  FragA fa[kTile / 16];
#pragma unroll
  for (int k = 0; k < kTile / 16; ++k) wmma::load_matrix_sync(fa[k], p + k * 16, kLP);
#pragma unroll
  for (int n = 0; n < D / 16; ++n) {
    FragC c;
    wmma::load_matrix_sync(c, acc + n * 16, kLO, wmma::mem_row_major);
#pragma unroll
    for (int k = 0; k < kTile / 16; ++k) {
      FragBRow fb;
      wmma::load_matrix_sync(fb, b + k * 16 * kLD + n * 16, kLD);
      wmma::mma_sync(c, fa[k], fb, c);
    }
    wmma::store_matrix_sync(acc + n * 16, c, kLO, wmma::mem_row_major);
  }
}

template <int D>
__device__ __forceinline__ void ZeroWarpAcc(float* acc) {
  for (int idx = threadIdx.x % 32; idx < 16 * D; idx += 32) {
    acc[(idx / D) * Layout<D>::kLO + idx % D] = 0.0f;
  }
  __syncwarp();  // other lanes read these (when no key tile runs, nothing else orders them)
}

// grid (ceil(T / 64), H, B)
template <int D>
__global__ void __launch_bounds__(kThreads)
    ForwardKernel(bf16* out, float* lse, const bf16* q, const bf16* k, const bf16* v,
                  const int64_t* key_mask, AttentionShape sh) {
  using L = Layout<D>;
  unsigned char* smem = DynamicShared<unsigned char>();
  bf16* qs = reinterpret_cast<bf16*>(smem);
  bf16* ks = reinterpret_cast<bf16*>(smem + L::kTileBytes);
  bf16* vs = reinterpret_cast<bf16*>(smem + 2 * L::kTileBytes);
  unsigned char* warp_base = smem + 3 * L::kTileBytes;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  float* s_w = reinterpret_cast<float*>(warp_base + warp * L::kWarpF32);
  bf16* p_w = reinterpret_cast<bf16*>(warp_base + kWarps * L::kWarpF32 + warp * L::kWarpBf16);
  float* o_w = reinterpret_cast<float*>(warp_base + kWarps * (L::kWarpF32 + L::kWarpBf16) +
                                        warp * L::kWarpAcc);
  const int64_t b = blockIdx.z, h = blockIdx.y, i0 = static_cast<int64_t>(blockIdx.x) * kTile;
  const int64_t q_stride = sh.h * D, kv_stride = sh.hkv * D, kvh = h / (sh.h / sh.hkv);
  LoadTile<D>(qs, q + (b * sh.t * sh.h + h) * D, i0, sh.t, q_stride);
  ZeroWarpAcc<D>(o_w);
  const int r = lane / 2, half = lane % 2;  // two lanes per row of the warp's 16
  const int64_t i = i0 + warp * 16 + r;
  float m = kNegInf, l = 0.0f;
  const bf16* kb = k + b * sh.s * kv_stride + kvh * D;
  const bf16* vb = v + b * sh.s * kv_stride + kvh * D;
  const int64_t key_end = sh.causal ? min(sh.s, i0 + kTile) : sh.s;
  for (int64_t j0 = 0; j0 < key_end; j0 += kTile) {
    __syncthreads();  // the previous tiles' readers are done
    LoadTile<D>(ks, kb, j0, sh.s, kv_stride);
    LoadTile<D>(vs, vb, j0, sh.s, kv_stride);
    __syncthreads();
    MulABt<D>(s_w, qs + warp * 16 * L::kLD, ks);
    __syncwarp();
    float* srow = s_w + r * kLS;
    float mx = kNegInf;
    for (int c = half * 32; c < half * 32 + 32; ++c) {
      const float sv = KeyVisible(sh, key_mask, b, i, j0 + c) ? srow[c] * sh.scale : kNegInf;
      srow[c] = sv;
      mx = fmaxf(mx, sv);
    }
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
    const float m_new = fmaxf(m, mx);
    const float corr = m_new == kNegInf ? 1.0f : expf(m - m_new);
    float sum = 0.0f;
    for (int c = half * 32; c < half * 32 + 32; ++c) {
      const float p = m_new == kNegInf ? 0.0f : expf(srow[c] - m_new);
      sum += p;
      p_w[r * kLP + c] = __float2bfloat16_rn(p);
    }
    sum += __shfl_xor_sync(0xffffffffu, sum, 1);
    l = l * corr + sum;
    m = m_new;
    for (int c = half * (D / 2); c < half * (D / 2) + D / 2; ++c) o_w[r * L::kLO + c] *= corr;
    __syncwarp();
    AccumulatePB<D>(o_w, p_w, vs);
    __syncwarp();
  }
  if (i >= sh.t) return;
  const float inv = l > 0.0f ? 1.0f / l : 0.0f;
  bf16* orow = out + ((b * sh.t + i) * sh.h + h) * D;
  for (int c = half * (D / 2); c < half * (D / 2) + D / 2; ++c) {
    orow[c] = __float2bfloat16_rn(o_w[r * L::kLO + c] * inv);
  }
  if (half == 0) lse[(b * sh.h + h) * sh.t + i] = l > 0.0f ? m + logf(l) : kNegInf;
}

// Drow = dout . out for row i (two lanes, each half of D), summed over the pair.
template <int D>
__device__ __forceinline__ float RowDot(const bf16* dout_row, const bf16* out_row, int half,
                                        bool ok) {
  float acc = 0.0f;
  if (ok) {
    for (int c = half * (D / 2); c < half * (D / 2) + D / 2; ++c) {
      acc += __bfloat162float(dout_row[c]) * __bfloat162float(out_row[c]);
    }
  }
  return acc + __shfl_xor_sync(0xffffffffu, acc, 1);
}

// dq: grid (ceil(T / 64), H, B). Per key tile: S = Q K^T, dP = dO V^T, dS = P (dP - Drow),
// dQ += dS K; dq = scale dQ.
template <int D>
__global__ void __launch_bounds__(kThreads)
    BackwardDqKernel(bf16* dq, const bf16* dout, const bf16* q, const bf16* k, const bf16* v,
                     const bf16* out, const float* lse, const int64_t* key_mask,
                     float* /*drow: computed here*/, AttentionShape sh) {
  using L = Layout<D>;
  unsigned char* smem = DynamicShared<unsigned char>();
  bf16* qs = reinterpret_cast<bf16*>(smem);
  bf16* dos = reinterpret_cast<bf16*>(smem + L::kTileBytes);
  bf16* ks = reinterpret_cast<bf16*>(smem + 2 * L::kTileBytes);
  bf16* vs = reinterpret_cast<bf16*>(smem + 3 * L::kTileBytes);
  unsigned char* warp_base = smem + 4 * L::kTileBytes;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  float* s_w = reinterpret_cast<float*>(warp_base + warp * L::kWarpF32);
  float* dp_w = reinterpret_cast<float*>(warp_base + (kWarps + warp) * L::kWarpF32);
  bf16* ds_w = reinterpret_cast<bf16*>(warp_base + 2 * kWarps * L::kWarpF32 + warp * L::kWarpBf16);
  float* acc_w = reinterpret_cast<float*>(warp_base + kWarps * (2 * L::kWarpF32 + L::kWarpBf16) +
                                          warp * L::kWarpAcc);
  const int64_t b = blockIdx.z, h = blockIdx.y, i0 = static_cast<int64_t>(blockIdx.x) * kTile;
  const int64_t q_stride = sh.h * D, kv_stride = sh.hkv * D, kvh = h / (sh.h / sh.hkv);
  LoadTile<D>(qs, q + (b * sh.t * sh.h + h) * D, i0, sh.t, q_stride);
  LoadTile<D>(dos, dout + (b * sh.t * sh.h + h) * D, i0, sh.t, q_stride);
  ZeroWarpAcc<D>(acc_w);
  const int r = lane / 2, half = lane % 2;
  const int64_t i = i0 + warp * 16 + r;
  const bool row_ok = i < sh.t;
  const int64_t row_off = ((b * sh.t + (row_ok ? i : 0)) * sh.h + h) * D;
  const float drow = RowDot<D>(dout + row_off, out + row_off, half, row_ok);
  const float row_lse = row_ok ? lse[(b * sh.h + h) * sh.t + i] : kNegInf;
  const bf16* kb = k + b * sh.s * kv_stride + kvh * D;
  const bf16* vb = v + b * sh.s * kv_stride + kvh * D;
  const int64_t key_end = sh.causal ? min(sh.s, i0 + kTile) : sh.s;
  for (int64_t j0 = 0; j0 < key_end; j0 += kTile) {
    __syncthreads();
    LoadTile<D>(ks, kb, j0, sh.s, kv_stride);
    LoadTile<D>(vs, vb, j0, sh.s, kv_stride);
    __syncthreads();
    MulABt<D>(s_w, qs + warp * 16 * L::kLD, ks);
    MulABt<D>(dp_w, dos + warp * 16 * L::kLD, vs);
    __syncwarp();
    for (int c = half * 32; c < half * 32 + 32; ++c) {
      const bool vis = row_lse != kNegInf && KeyVisible(sh, key_mask, b, i, j0 + c);
      const float p = vis ? expf(s_w[r * kLS + c] * sh.scale - row_lse) : 0.0f;
      ds_w[r * kLP + c] = __float2bfloat16_rn(p * (dp_w[r * kLS + c] - drow));
    }
    __syncwarp();
    AccumulatePB<D>(acc_w, ds_w, ks);
    __syncwarp();
  }
  if (!row_ok) return;
  bf16* dst = dq + row_off;
  for (int c = half * (D / 2); c < half * (D / 2) + D / 2; ++c) {
    dst[c] = __float2bfloat16_rn(acc_w[r * L::kLO + c] * sh.scale);
  }
}

// dk, dv: grid (ceil(S / 64), Hkv, B). Each warp owns 16 keys; per query tile of each query head
// in the group: S^T = K Q^T, dP^T = V dO^T, P^T, dS^T = P^T (dP^T - Drow), dV += P^T dO,
// dK += dS^T Q; dk = scale dK.
template <int D>
__global__ void __launch_bounds__(kThreads)
    BackwardDkvKernel(bf16* dk, bf16* dv, const bf16* dout, const bf16* q, const bf16* k,
                      const bf16* v, const bf16* out, const float* lse, const int64_t* key_mask,
                      const float* /*drow: computed here*/, AttentionShape sh) {
  using L = Layout<D>;
  unsigned char* smem = DynamicShared<unsigned char>();
  bf16* ks = reinterpret_cast<bf16*>(smem);
  bf16* vs = reinterpret_cast<bf16*>(smem + L::kTileBytes);
  bf16* qs = reinterpret_cast<bf16*>(smem + 2 * L::kTileBytes);
  bf16* dos = reinterpret_cast<bf16*>(smem + 3 * L::kTileBytes);
  float* lse_s = reinterpret_cast<float*>(smem + 4 * L::kTileBytes);
  float* drow_s = lse_s + kTile;
  unsigned char* warp_base = smem + 4 * L::kTileBytes + 2 * kTile * sizeof(float);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  float* st_w = reinterpret_cast<float*>(warp_base + warp * L::kWarpF32);
  float* dpt_w = reinterpret_cast<float*>(warp_base + (kWarps + warp) * L::kWarpF32);
  bf16* pt_w = reinterpret_cast<bf16*>(warp_base + 2 * kWarps * L::kWarpF32 + warp * L::kWarpBf16);
  bf16* dst_w = reinterpret_cast<bf16*>(warp_base + 2 * kWarps * L::kWarpF32 +
                                        (kWarps + warp) * L::kWarpBf16);
  unsigned char* acc_base = warp_base + 2 * kWarps * (L::kWarpF32 + L::kWarpBf16);
  float* dk_w = reinterpret_cast<float*>(acc_base + warp * L::kWarpAcc);
  float* dv_w = reinterpret_cast<float*>(acc_base + (kWarps + warp) * L::kWarpAcc);
  const int64_t b = blockIdx.z, kvh = blockIdx.y, j0 = static_cast<int64_t>(blockIdx.x) * kTile;
  const int64_t q_stride = sh.h * D, kv_stride = sh.hkv * D, group = sh.h / sh.hkv;
  LoadTile<D>(ks, k + b * sh.s * kv_stride + kvh * D, j0, sh.s, kv_stride);
  LoadTile<D>(vs, v + b * sh.s * kv_stride + kvh * D, j0, sh.s, kv_stride);
  ZeroWarpAcc<D>(dk_w);
  ZeroWarpAcc<D>(dv_w);
  const int r = lane / 2, half = lane % 2;
  const int64_t j = j0 + warp * 16 + r;        // this lane pair's key
  const int64_t q_begin = sh.causal ? j0 : 0;  // earlier query rows see none of these keys
  for (int64_t hh = 0; hh < group; ++hh) {
    const int64_t h = kvh * group + hh;
    const bf16* qb = q + (b * sh.t * sh.h + h) * D;
    const bf16* dob = dout + (b * sh.t * sh.h + h) * D;
    const bf16* ob = out + (b * sh.t * sh.h + h) * D;
    for (int64_t i0 = q_begin; i0 < sh.t; i0 += kTile) {
      __syncthreads();
      LoadTile<D>(qs, qb, i0, sh.t, q_stride);
      LoadTile<D>(dos, dob, i0, sh.t, q_stride);
      // Drow and lse of the tile's 64 query rows: each warp 16 rows, two lanes per row.
      {
        const int64_t iq = i0 + warp * 16 + r;
        const bool ok = iq < sh.t;
        const float d =
            RowDot<D>(dob + (ok ? iq : 0) * q_stride, ob + (ok ? iq : 0) * q_stride, half, ok);
        if (half == 0) {
          drow_s[warp * 16 + r] = d;
          lse_s[warp * 16 + r] = ok ? lse[(b * sh.h + h) * sh.t + iq] : kNegInf;
        }
      }
      __syncthreads();
      MulABt<D>(st_w, ks + warp * 16 * L::kLD, qs);
      MulABt<D>(dpt_w, vs + warp * 16 * L::kLD, dos);
      __syncwarp();
      for (int c = half * 32; c < half * 32 + 32; ++c) {
        const int64_t iq = i0 + c;
        const float row_lse = lse_s[c];
        const bool vis = row_lse != kNegInf && KeyVisible(sh, key_mask, b, iq, j);
        const float p = vis ? expf(st_w[r * kLS + c] * sh.scale - row_lse) : 0.0f;
        pt_w[r * kLP + c] = __float2bfloat16_rn(p);
        dst_w[r * kLP + c] = __float2bfloat16_rn(p * (dpt_w[r * kLS + c] - drow_s[c]));
      }
      __syncwarp();
      AccumulatePB<D>(dv_w, pt_w, dos);
      AccumulatePB<D>(dk_w, dst_w, qs);
      __syncwarp();
    }
  }
  if (j >= sh.s) return;
  bf16* dkr = dk + (b * sh.s + j) * kv_stride + kvh * D;
  bf16* dvr = dv + (b * sh.s + j) * kv_stride + kvh * D;
  for (int c = half * (D / 2); c < half * (D / 2) + D / 2; ++c) {
    dkr[c] = __float2bfloat16_rn(dk_w[r * L::kLO + c] * sh.scale);
    dvr[c] = __float2bfloat16_rn(dv_w[r * L::kLO + c]);
  }
}

template <int D>
constexpr size_t ForwardSmem() {
  using L = Layout<D>;
  return 3 * L::kTileBytes + kWarps * (L::kWarpF32 + L::kWarpBf16 + L::kWarpAcc);
}
template <int D>
constexpr size_t DqSmem() {
  using L = Layout<D>;
  return 4 * L::kTileBytes + kWarps * (2 * L::kWarpF32 + L::kWarpBf16 + L::kWarpAcc);
}
template <int D>
constexpr size_t DkvSmem() {
  using L = Layout<D>;
  return 4 * L::kTileBytes + 2 * kTile * sizeof(float) +
         2 * kWarps * (L::kWarpF32 + L::kWarpBf16 + L::kWarpAcc);
}

template <int D>
void Forward(void* out, float* lse, const void* q, const void* k, const void* v,
             const int64_t* key_mask, const AttentionShape& sh, cudaStream_t stream) {
  LaunchAttentionForward(ForwardKernel<D>, ForwardSmem<D>(), kTile, kThreads, out, lse, q, k, v,
                         key_mask, sh, stream);
}

template <int D>
void Backward(void* dq, void* dk, void* dv, const void* dout, const void* q, const void* k,
              const void* v, const void* out, const float* lse, const int64_t* key_mask,
              float* drow, const AttentionShape& sh, cudaStream_t stream) {
  LaunchAttentionBackward(BackwardDqKernel<D>, DqSmem<D>(), BackwardDkvKernel<D>, DkvSmem<D>(),
                          kTile, kThreads, dq, dk, dv, dout, q, k, v, out, lse, key_mask, drow, sh,
                          stream);
}

}  // namespace

size_t WmmaAttentionSmemBytes(int64_t d) {
  if (d == 64) return std::max({ForwardSmem<64>(), DqSmem<64>(), DkvSmem<64>()});
  return std::max({ForwardSmem<128>(), DqSmem<128>(), DkvSmem<128>()});
}

void AttentionForwardTensorCores(void* out, float* lse, const void* q, const void* k, const void* v,
                                 const int64_t* key_mask, const AttentionShape& sh,
                                 cudaStream_t stream) {
  if (sh.d == 64) {
    Forward<64>(out, lse, q, k, v, key_mask, sh, stream);
  } else {
    Forward<128>(out, lse, q, k, v, key_mask, sh, stream);
  }
}

void AttentionBackwardTensorCores(void* dq, void* dk, void* dv, const void* dout, const void* q,
                                  const void* k, const void* v, const void* out, const float* lse,
                                  const int64_t* key_mask, float* drow, const AttentionShape& sh,
                                  cudaStream_t stream) {
  if (sh.d == 64) {
    Backward<64>(dq, dk, dv, dout, q, k, v, out, lse, key_mask, drow, sh, stream);
  } else {
    Backward<128>(dq, dk, dv, dout, q, k, v, out, lse, key_mask, drow, sh, stream);
  }
}

}  // namespace moreh::kernels::cuda
