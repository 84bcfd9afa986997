// Flash attention with register-resident tiles (bf16 in, f32 accumulation; head dims 64 and 128),
// as FlashAttention-2 does it: mma.sync m16n8k16 on tensor cores with the fragment layouts of the
// PTX ISA, so every score, probability and accumulator stays in the registers of the thread that
// owns it (attention_tc.cu, the WMMA version, round-trips them through shared memory because WMMA
// fragments are opaque).
//
// A block has 4 warps; each owns 16 rows of the block's 64-row tile (query rows; in the dk/dv pass
// key rows). The other operand streams through shared memory in tiles, loaded with cp.async into
// two stages so the next tile's load overlaps this tile's products. Per streamed tile a warp
// computes S = A B^T into C fragments (thread (g, t) of the warp holds rows g and g + 8, columns
// 2t and 2t + 1 of each 8-column block), does the softmax arithmetic there (row statistics reduced
// over the 4 threads of a quad), and reuses the same registers, rounded to bf16, as the A fragments
// of the next product (the C layout of two 8-column blocks is the A layout of one 16-deep step);
// the B fragments of that product come from the shared tile through ldmatrix.trans. Fragments read
// from shared tiles all come by ldmatrix (x4: four 8 x 8 matrices per instruction).
// The backward is two passes without atomics, as in attention.cu: per query tile (dq) and per key
// tile (dk, dv, over the group's query heads).
#ifndef MOREH_CUDA_SIMT  // the emulator has its own cp.async (tests/cuda/simt)
#include <cuda_pipeline.h>
#endif

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "kernels/cuda/attention_tc.h"
#include "kernels/cuda/common.cuh"

namespace moreh::kernels::cuda {
namespace {

using bf16 = __nv_bfloat16;

constexpr int kWarps = 4, kThreads = 32 * kWarps, kRows = 16 * kWarps;  // the block's own rows
constexpr float kLog2e = 1.4426950408889634f, kLn2 = 0.6931471805599453f;

// Row stride (elements) of a tile in shared memory: 16 bytes of padding put the 8 rows one
// fragment load touches in 8 different bank groups (ldmatrix reads 8 rows of 16 bytes at once).
template <int D>
constexpr int kLd = D + 8;
template <int D>
constexpr size_t TileBytes(int rows) {
  return size_t{static_cast<size_t>(rows)} * kLd<D> * sizeof(bf16);
}

// Two f32 as bf16x2, `lo` in the low half (the lower column of a fragment pair).
__device__ __forceinline__ uint32_t Pack(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  uint32_t bits;
  memcpy(&bits, &v, sizeof bits);  // no type-punned read (a host compiler may reorder one)
  return bits;
}

// c (16 x 8, f32) += a (16 x 16, bf16, row) * b (16 x 8, bf16, col).
__device__ __forceinline__ void Mma(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1) {
#ifdef MOREH_CUDA_SIMT
  ::moreh::simt::MmaM16N8K16Bf16(c, a, b0, b1);
#else
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#endif
}

// Four 8 x 8 bf16 matrices: lanes 8m..8m+7 give the row addresses of matrix m; each thread
// receives, of each matrix, the elements [lane / 4][2(lane % 4)] and [lane / 4][2(lane % 4) + 1]
// of the stored rows: the A fragment of a row-major tile, or the B fragment of an operand stored
// [n][k] (K in S = Q K^T).
__device__ __forceinline__ void LoadMatrixX4(uint32_t r[4], const bf16* row_address) {
#ifdef MOREH_CUDA_SIMT
  ::moreh::simt::LoadMatrixX4(r, row_address, /*trans=*/false);
#else
  const auto addr = static_cast<uint32_t>(__cvta_generic_to_shared(row_address));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
#endif
}

// Four 8 x 8 bf16 matrices transposed: lanes 8m..8m+7 give the row addresses of matrix m; each
// thread receives, of each matrix, the elements [2(lane % 4)][lane / 4] and [2(lane % 4) + 1][lane
// / 4] of the stored rows: the B fragment of a row-major [k][n] operand.
__device__ __forceinline__ void LoadMatrixX4Trans(uint32_t r[4], const bf16* row_address) {
#ifdef MOREH_CUDA_SIMT
  ::moreh::simt::LoadMatrixX4(r, row_address, /*trans=*/true);
#else
  const auto addr = static_cast<uint32_t>(__cvta_generic_to_shared(row_address));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
#endif
}

// Starts copying rows [row0, row0 + ROWS) of a [.., D] matrix with row stride `stride` into a
// shared tile, 16 bytes per cp.async; rows at or past `limit` are zero-filled (nothing is read for
// them). limit > 0.
template <int D, int ROWS>
__device__ __forceinline__ void LoadTileAsync(bf16* tile, const bf16* base, int64_t row0,
                                              int64_t limit, int64_t stride) {
  constexpr int kVec = D / 8;
  for (int idx = threadIdx.x; idx < ROWS * kVec; idx += kThreads) {
    const int r = idx / kVec, c = (idx % kVec) * 8;
    const int64_t row = row0 + r;
    const bool inside = row < limit;
    __pipeline_memcpy_async(tile + r * kLd<D> + c, base + (inside ? row : 0) * stride + c, 16,
                            inside ? 0 : 16);
  }
}

// s (16 x N, C fragments) = a (this warp's 16 rows of a shared tile, 16 x D) times the N rows of
// the shared tile `b` taken as columns: A B^T.
// Fragments by ldmatrix.x4: per 16-deep step one for a's 16 rows, and one per pair of 8-row
// blocks of b (a quarter of the instructions of 32-bit loads; the same bytes).
template <int D, int N>
__device__ __forceinline__ void MulABt(float s[N / 8][4], const bf16* a, const bf16* b) {
  static_assert(N % 16 == 0, "b's 8-row blocks are loaded in pairs");
  const int lane = threadIdx.x % 32;
  // Row addresses: a's row lane % 16 at column 8 (lane / 16) of the step (matrices: rows 0-7 and
  // 8-15 of columns 0-7, then of columns 8-15: a[0..3]); b's row (lane & 7) + 8 (lane / 16) of the
  // block pair at column 8 ((lane / 8) & 1) (matrices: b0, b1 of the first block, then the second).
  const bf16* pa = a + (lane % 16) * kLd<D> + (lane / 16) * 8;
  const bf16* pb = b + ((lane & 7) + (lane >> 4) * 8) * kLd<D> + ((lane >> 3) & 1) * 8;
#pragma unroll
  for (int nt = 0; nt < N / 8; ++nt) s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.0f;
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk) {
    uint32_t fa[4];
    LoadMatrixX4(fa, pa + kk * 16);
#pragma unroll
    for (int nt = 0; nt < N / 8; nt += 2) {
      uint32_t fb[4];
      LoadMatrixX4(fb, pb + nt * 8 * kLd<D> + kk * 16);
      Mma(s[nt], fa, fb[0], fb[1]);
      Mma(s[nt + 1], fa, fb[2], fb[3]);
    }
  }
}

// The C fragments of a 16 x N product, rounded to bf16, as the A fragments of N/16 steps.
template <int N>
__device__ __forceinline__ void ToA(uint32_t a[N / 16][4], const float s[N / 8][4]) {
#pragma unroll
  for (int kk = 0; kk < N / 16; ++kk) {
    a[kk][0] = Pack(s[2 * kk][0], s[2 * kk][1]);
    a[kk][1] = Pack(s[2 * kk][2], s[2 * kk][3]);
    a[kk][2] = Pack(s[2 * kk + 1][0], s[2 * kk + 1][1]);
    a[kk][3] = Pack(s[2 * kk + 1][2], s[2 * kk + 1][3]);
  }
}

// acc (16 x D, C fragments) += p (16 x N, A fragments) times the shared tile b (N rows x D).
template <int D, int N>
__device__ __forceinline__ void MulPB(float acc[D / 8][4], const uint32_t p[N / 16][4],
                                      const bf16* b) {
  const int lane = threadIdx.x % 32;
  const int row = (lane & 7) + ((lane >> 3) & 1) * 8, col = (lane >> 4) * 8;
#pragma unroll
  for (int kk = 0; kk < N / 16; ++kk) {
#pragma unroll
    for (int nt = 0; nt < D / 8; nt += 2) {
      uint32_t r[4];  // b rows kk*16 + [0, 8) and [8, 16) of columns nt*8 and (nt + 1)*8
      LoadMatrixX4Trans(r, b + (kk * 16 + row) * kLd<D> + nt * 8 + col);
      Mma(acc[nt], p[kk], r[0], r[1]);
      Mma(acc[nt + 1], p[kk], r[2], r[3]);
    }
  }
}

// Sum and max over the 4 threads of a quad (the threads holding one row of a C fragment).
__device__ __forceinline__ float QuadSum(float v) {
  v += __shfl_xor_sync(0xffffffffu, v, 1);
  return v + __shfl_xor_sync(0xffffffffu, v, 2);
}
__device__ __forceinline__ float QuadMax(float v) {
  v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 1));
  return fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 2));
}

// Writes a 16 x D accumulator's rows (times `scale[r]` for rows g and g + 8) as bf16 to
// dst + row * stride, rows at or past `limit` skipped.
template <int D>
__device__ __forceinline__ void StoreRows(bf16* dst, int64_t row0, int64_t limit, int64_t stride,
                                          const float acc[D / 8][4], const float scale[2]) {
  const int lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int64_t row = row0 + g + 8 * r;
    if (row >= limit) continue;
    bf16* out = dst + row * stride + 2 * t;
#pragma unroll
    for (int nt = 0; nt < D / 8; ++nt) {
      *reinterpret_cast<uint32_t*>(out + nt * 8) =
          Pack(acc[nt][2 * r] * scale[r], acc[nt][2 * r + 1] * scale[r]);
    }
  }
}

template <int D>
__device__ __forceinline__ void ZeroAcc(float acc[D / 8][4]) {
#pragma unroll
  for (int nt = 0; nt < D / 8; ++nt) acc[nt][0] = acc[nt][1] = acc[nt][2] = acc[nt][3] = 0.0f;
}

// Keys a query tile [i0, i0 + kRows) may see: all, or with a causal mask those up to its last row.
__device__ __forceinline__ int64_t KeyEnd(const AttentionShape& sh, int64_t i0) {
  return sh.causal ? min(sh.s, i0 + kRows) : sh.s;
}

constexpr int kN = 64;  // keys per streamed tile (forward and dq)

// A stage of the forward and dq passes: K and V tiles of kN keys, then the key mask's entries for
// them (nonzero: the key exists and is not padding), read once per tile, not once per score.
template <int D>
constexpr size_t KvStageBytes() {
  return 2 * TileBytes<D>(kN) + kN * sizeof(int64_t);
}
template <int D>
struct KvStage {
  bf16* k;
  bf16* v;
  int64_t* key_ok;
};
template <int D>
__device__ __forceinline__ KvStage<D> KvStageAt(unsigned char* base, int stage) {
  unsigned char* p = base + stage * KvStageBytes<D>();
  return {reinterpret_cast<bf16*>(p), reinterpret_cast<bf16*>(p + TileBytes<D>(kN)),
          reinterpret_cast<int64_t*>(p + 2 * TileBytes<D>(kN))};
}

// Starts loading keys [j0, j0 + kN) of K and V and their key mask entries into a stage, all with
// cp.async (a plain load of the mask here would stall the loading warps for a global memory
// latency every tile); keys past S get 0. Visible to the block after the wait and its next
// __syncthreads.
template <int D>
__device__ __forceinline__ void LoadKvStage(const KvStage<D>& st, const bf16* kb, const bf16* vb,
                                            int64_t j0, int64_t kv_stride, const int64_t* key_mask,
                                            int64_t b, const AttentionShape& sh) {
  LoadTileAsync<D, kN>(st.k, kb, j0, sh.s, kv_stride);
  LoadTileAsync<D, kN>(st.v, vb, j0, sh.s, kv_stride);
  for (int c = threadIdx.x; c < kN; c += kThreads) {
    const int64_t j = j0 + c;
    const bool inside = j < sh.s;
    if (key_mask == nullptr) {
      st.key_ok[c] = inside;
    } else {
      __pipeline_memcpy_async(st.key_ok + c, key_mask + b * sh.s + (inside ? j : 0), 8,
                              inside ? 0 : 8);
    }
  }
}

// The forward and dq passes' barrier at the top of each streamed tile (after the cp.async wait),
// which also answers whether the tile is interior: every one of the block's rows exists and sees
// every one of the tile's keys, so no mask needs applying (and each row's lse is finite). The
// first kN threads copied one key's mask entry each; the barrier ANDs their verdicts.
__device__ __forceinline__ bool InteriorTile(const int64_t* key_ok, int64_t i0, int64_t j0,
                                             const AttentionShape& sh) {
  const bool keys_ok = __syncthreads_and(threadIdx.x >= kN || key_ok[threadIdx.x] != 0);
  return keys_ok && i0 + kRows <= sh.t && (!sh.causal || j0 + kN - 1 <= i0) &&
         (sh.window <= 0 || i0 + kRows - 1 - j0 < sh.window);
}

// grid (ceil(T / 64), H, B). Shared: Q tile, then two stages of (K, V) tiles.
template <int D>
__global__ void __launch_bounds__(kThreads)
    MmaForwardKernel(bf16* out, float* lse, const bf16* q, const bf16* k, const bf16* v,
                     const int64_t* key_mask, AttentionShape sh) {
  unsigned char* smem = DynamicShared<unsigned char>();
  bf16* qs = reinterpret_cast<bf16*>(smem);
  unsigned char* stages = smem + TileBytes<D>(kRows);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const int64_t b = blockIdx.z, h = blockIdx.y, i0 = static_cast<int64_t>(blockIdx.x) * kRows;
  const int64_t q_stride = sh.h * D, kv_stride = sh.hkv * D, kvh = h / (sh.h / sh.hkv);
  const bf16* kb = k + b * sh.s * kv_stride + kvh * D;
  const bf16* vb = v + b * sh.s * kv_stride + kvh * D;
  const int tiles = static_cast<int>((KeyEnd(sh, i0) + kN - 1) / kN);
  if (tiles > 0) {
    LoadTileAsync<D, kRows>(qs, q + (b * sh.t * sh.h + h) * D, i0, sh.t, q_stride);
    LoadKvStage<D>(KvStageAt<D>(stages, 0), kb, vb, 0, kv_stride, key_mask, b, sh);
  }
  __pipeline_commit();
  const int64_t row[2] = {i0 + warp * 16 + g, i0 + warp * 16 + g + 8};
  const float scale_log2 = sh.scale * kLog2e;  // scores in base 2: exp2f is one instruction
  float o[D / 8][4];
  ZeroAcc<D>(o);
  float m[2] = {kNegInf, kNegInf}, l[2] = {0.0f, 0.0f};  // l: this thread's part of the row sum
  for (int jt = 0; jt < tiles; ++jt) {
    const int64_t j0 = static_cast<int64_t>(jt) * kN;
    const KvStage<D> st = KvStageAt<D>(stages, jt % 2);
    __pipeline_wait_prior(0);
    // Tile jt is in for every thread; tile jt - 1 (the other stage) is read.
    const bool interior = InteriorTile(st.key_ok, i0, j0, sh);
    if (jt + 1 < tiles) {
      LoadKvStage<D>(KvStageAt<D>(stages, (jt + 1) % 2), kb, vb, j0 + kN, kv_stride, key_mask, b,
                     sh);
    }
    __pipeline_commit();
    float s[kN / 8][4];
    MulABt<D, kN>(s, qs + warp * 16 * kLd<D>, st.k);
    float mx[2] = {kNegInf, kNegInf};
    if (interior) {
#pragma unroll
      for (int nt = 0; nt < kN / 8; ++nt) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          s[nt][e] *= scale_log2;
          mx[e / 2] = fmaxf(mx[e / 2], s[nt][e]);
        }
      }
    } else {
#pragma unroll
      for (int nt = 0; nt < kN / 8; ++nt) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int r = e / 2, c = nt * 8 + 2 * t + (e & 1);
          // Rows past T compute too (their results are never stored).
          const bool vis = st.key_ok[c] && (!sh.causal || j0 + c <= row[r]) &&
                           (sh.window <= 0 || row[r] - (j0 + c) < sh.window);
          const float x = vis ? s[nt][e] * scale_log2 : kNegInf;
          s[nt][e] = x;
          mx[r] = fmaxf(mx[r], x);
        }
      }
    }
    float corr[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const float m_new = fmaxf(m[r], QuadMax(mx[r]));
      corr[r] = m_new == kNegInf ? 1.0f : exp2f(m[r] - m_new);
      m[r] = m_new;
    }
    float sum[2] = {0.0f, 0.0f};
#pragma unroll
    for (int nt = 0; nt < kN / 8; ++nt) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int r = e / 2;
        const float p = m[r] == kNegInf ? 0.0f : exp2f(s[nt][e] - m[r]);
        s[nt][e] = p;
        sum[r] += p;
      }
    }
#pragma unroll
    for (int r = 0; r < 2; ++r) l[r] = l[r] * corr[r] + sum[r];
#pragma unroll
    for (int nt = 0; nt < D / 8; ++nt) {
      o[nt][0] *= corr[0];
      o[nt][1] *= corr[0];
      o[nt][2] *= corr[1];
      o[nt][3] *= corr[1];
    }
    uint32_t pa[kN / 16][4];
    ToA<kN>(pa, s);
    MulPB<D, kN>(o, pa, st.v);
  }
  __pipeline_wait_prior(0);
  float inv[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    l[r] = QuadSum(l[r]);
    inv[r] = l[r] > 0.0f ? 1.0f / l[r] : 0.0f;
    if (t == 0 && row[r] < sh.t) {
      lse[(b * sh.h + h) * sh.t + row[r]] = l[r] > 0.0f ? m[r] * kLn2 + logf(l[r]) : kNegInf;
    }
  }
  StoreRows<D>(out + (b * sh.t * sh.h + h) * D, i0 + warp * 16, sh.t, q_stride, o, inv);
}

// dout . out of row `row` (both [.., D] with row stride `stride`), summed by the 4 threads of a
// quad, each over a quarter of D; 0 past `limit`.
template <int D>
__device__ __forceinline__ float RowDotQuad(const bf16* dout, const bf16* out, int64_t row,
                                            int64_t limit, int64_t stride) {
  const int t = threadIdx.x % 4;
  float acc = 0.0f;
  if (row < limit) {
    const bf16* a = dout + row * stride + t * (D / 4);
    const bf16* c = out + row * stride + t * (D / 4);
#pragma unroll 8
    for (int x = 0; x < D / 4; ++x) acc += __bfloat162float(a[x]) * __bfloat162float(c[x]);
  }
  return QuadSum(acc);
}

// dq: grid (ceil(T / 64), H, B). Per key tile: S = Q K^T, dP = dO V^T, dS = P (dP - Drow),
// dQ += dS K; dq = scale dQ. Shared: Q and dO tiles, then two stages of (K, V). Also writes each
// row's Drow = dO . O to drow_out ([B, H, T]) for the dk/dv pass, which runs after it.
template <int D>
__global__ void __launch_bounds__(kThreads)
    MmaBackwardDqKernel(bf16* dq, const bf16* dout, const bf16* q, const bf16* k, const bf16* v,
                        const bf16* out, const float* lse, const int64_t* key_mask, float* drow_out,
                        AttentionShape sh) {
  unsigned char* smem = DynamicShared<unsigned char>();
  bf16* qs = reinterpret_cast<bf16*>(smem);
  bf16* dos = qs + kRows * kLd<D>;
  unsigned char* stages = smem + 2 * TileBytes<D>(kRows);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const int64_t b = blockIdx.z, h = blockIdx.y, i0 = static_cast<int64_t>(blockIdx.x) * kRows;
  const int64_t q_stride = sh.h * D, kv_stride = sh.hkv * D, kvh = h / (sh.h / sh.hkv);
  const bf16* kb = k + b * sh.s * kv_stride + kvh * D;
  const bf16* vb = v + b * sh.s * kv_stride + kvh * D;
  const int64_t head_off = (b * sh.t * sh.h + h) * D;
  const int tiles = static_cast<int>((KeyEnd(sh, i0) + kN - 1) / kN);
  if (tiles > 0) {
    LoadTileAsync<D, kRows>(qs, q + head_off, i0, sh.t, q_stride);
    LoadTileAsync<D, kRows>(dos, dout + head_off, i0, sh.t, q_stride);
    LoadKvStage<D>(KvStageAt<D>(stages, 0), kb, vb, 0, kv_stride, key_mask, b, sh);
  }
  __pipeline_commit();
  const int64_t row[2] = {i0 + warp * 16 + g, i0 + warp * 16 + g + 8};
  const float scale_log2 = sh.scale * kLog2e;
  float drow[2], lse2[2];  // per row: dout . out, and the log-sum-exp in base 2
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    drow[r] = RowDotQuad<D>(dout + head_off, out + head_off, row[r], sh.t, q_stride);
    lse2[r] = row[r] < sh.t ? lse[(b * sh.h + h) * sh.t + row[r]] * kLog2e : kNegInf;
    if (t == 0 && row[r] < sh.t) drow_out[(b * sh.h + h) * sh.t + row[r]] = drow[r];  // for dk/dv
  }
  float acc[D / 8][4];
  ZeroAcc<D>(acc);
  for (int jt = 0; jt < tiles; ++jt) {
    const int64_t j0 = static_cast<int64_t>(jt) * kN;
    const KvStage<D> st = KvStageAt<D>(stages, jt % 2);
    __pipeline_wait_prior(0);
    const bool interior = InteriorTile(st.key_ok, i0, j0, sh);
    if (jt + 1 < tiles) {
      LoadKvStage<D>(KvStageAt<D>(stages, (jt + 1) % 2), kb, vb, j0 + kN, kv_stride, key_mask, b,
                     sh);
    }
    __pipeline_commit();
    float s[kN / 8][4], dp[kN / 8][4];
    MulABt<D, kN>(s, qs + warp * 16 * kLd<D>, st.k);
    MulABt<D, kN>(dp, dos + warp * 16 * kLd<D>, st.v);
    if (interior) {  // every row sees every key, so its lse is finite
#pragma unroll
      for (int nt = 0; nt < kN / 8; ++nt) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int r = e / 2;
          s[nt][e] = exp2f(s[nt][e] * scale_log2 - lse2[r]) * (dp[nt][e] - drow[r]);
        }
      }
    } else {
#pragma unroll
      for (int nt = 0; nt < kN / 8; ++nt) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int r = e / 2, c = nt * 8 + 2 * t + (e & 1);
          // lse is -inf for rows past T and rows that see no key.
          const bool vis = lse2[r] != kNegInf && st.key_ok[c] && (!sh.causal || j0 + c <= row[r]) &&
                           (sh.window <= 0 || row[r] - (j0 + c) < sh.window);
          const float p = vis ? exp2f(s[nt][e] * scale_log2 - lse2[r]) : 0.0f;
          s[nt][e] = p * (dp[nt][e] - drow[r]);  // dS
        }
      }
    }
    uint32_t dsa[kN / 16][4];
    ToA<kN>(dsa, s);
    MulPB<D, kN>(acc, dsa, st.k);
  }
  __pipeline_wait_prior(0);
  const float scale[2] = {sh.scale, sh.scale};
  StoreRows<D>(dq + head_off, i0 + warp * 16, sh.t, q_stride, acc, scale);
}

// Query rows per streamed tile of the dk/dv pass: fewer at D = 128, where the dK and dV
// accumulators take 128 registers.
template <int D>
constexpr int kDkvN = D == 128 ? 32 : 64;

// dk, dv: grid (ceil(S / 64), Hkv, B). Each warp owns 16 keys; per query tile of each query head
// in the group: S^T = K Q^T, dP^T = V dO^T, P^T, dS^T = P^T (dP^T - Drow), dV += P^T dO,
// dK += dS^T Q; dk = scale dK. Shared: K and V tiles, then two stages of (Q, dO, lse, Drow).
template <int D>
__global__ void __launch_bounds__(kThreads)
    MmaBackwardDkvKernel(bf16* dk, bf16* dv, const bf16* dout, const bf16* q, const bf16* k,
                         const bf16* v, const bf16* out, const float* lse, const int64_t* key_mask,
                         const float* drow, AttentionShape sh) {
  constexpr int N = kDkvN<D>;
  constexpr size_t kStageBytes = 2 * TileBytes<D>(N) + 2 * N * sizeof(float);
  unsigned char* smem = DynamicShared<unsigned char>();
  bf16* ks = reinterpret_cast<bf16*>(smem);
  bf16* vs = ks + kRows * kLd<D>;
  unsigned char* stage_base = smem + 2 * TileBytes<D>(kRows);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const int64_t b = blockIdx.z, kvh = blockIdx.y, j0 = static_cast<int64_t>(blockIdx.x) * kRows;
  const int64_t q_stride = sh.h * D, kv_stride = sh.hkv * D, group = sh.h / sh.hkv;
  const int64_t q_begin = sh.causal ? j0 : 0;  // earlier query rows see none of these keys
  const int64_t q_tiles = q_begin < sh.t ? (sh.t - q_begin + N - 1) / N : 0;
  const int64_t tiles = group * q_tiles;  // (head in group, query tile), the query tile fastest
  // Stage s holds Q (N rows), dO (N rows), lse in base 2 (N), Drow (N).
  auto stage_q = [&](int64_t it) {
    return reinterpret_cast<bf16*>(stage_base + (it % 2) * kStageBytes);
  };
  auto stage_do = [&](int64_t it) { return stage_q(it) + N * kLd<D>; };
  auto stage_lse = [&](int64_t it) {
    return reinterpret_cast<float*>(stage_base + (it % 2) * kStageBytes + 2 * TileBytes<D>(N));
  };
  auto head = [&](int64_t it) { return kvh * group + it / q_tiles; };  // query head of tile it
  auto head_off = [&](int64_t it) { return (b * sh.t * sh.h + head(it)) * D; };
  auto tile_i0 = [&](int64_t it) { return q_begin + (it % q_tiles) * N; };
  // The tile's rows of Q and dO, their lse (from the forward) and Drow (from the dq pass), all
  // with cp.async; rows past T are zero-filled.
  auto load_stage = [&](int64_t it) {
    const int64_t i0 = tile_i0(it);
    LoadTileAsync<D, N>(stage_q(it), q + head_off(it), i0, sh.t, q_stride);
    LoadTileAsync<D, N>(stage_do(it), dout + head_off(it), i0, sh.t, q_stride);
    const int64_t rows = (b * sh.h + head(it)) * sh.t;
    for (int rr = threadIdx.x; rr < N; rr += kThreads) {
      const int64_t iq = i0 + rr;
      const bool inside = iq < sh.t;
      const int64_t at = rows + (inside ? iq : 0);
      __pipeline_memcpy_async(stage_lse(it) + rr, lse + at, 4, inside ? 0 : 4);
      __pipeline_memcpy_async(stage_lse(it) + N + rr, drow + at, 4, inside ? 0 : 4);
    }
  };
  if (tiles > 0) {
    LoadTileAsync<D, kRows>(ks, k + b * sh.s * kv_stride + kvh * D, j0, sh.s, kv_stride);
    LoadTileAsync<D, kRows>(vs, v + b * sh.s * kv_stride + kvh * D, j0, sh.s, kv_stride);
    load_stage(0);
  }
  __pipeline_commit();
  const int64_t key[2] = {j0 + warp * 16 + g, j0 + warp * 16 + g + 8};
  bool key_ok[2];  // exists and is not padding
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    key_ok[r] = key[r] < sh.s && (key_mask == nullptr || key_mask[b * sh.s + key[r]] != 0);
  }
  // Whether all of the block's 64 keys exist and are not padding (the warps' 16 keys each).
  const bool block_keys_ok = __syncthreads_and(key_ok[0] && key_ok[1]);
  const float scale_log2 = sh.scale * kLog2e;
  float dk_acc[D / 8][4], dv_acc[D / 8][4];
  ZeroAcc<D>(dk_acc);
  ZeroAcc<D>(dv_acc);
  for (int64_t it = 0; it < tiles; ++it) {
    const int64_t i0 = tile_i0(it);
    const bf16* qs = stage_q(it);
    const bf16* dos = stage_do(it);
    const float* lse_s = stage_lse(it);
    const float* drow_s = lse_s + N;
    __pipeline_wait_prior(0);
    __syncthreads();  // this stage is in; the other stage's readers (tile it - 1) are done
    if (it + 1 < tiles) load_stage(it + 1);
    __pipeline_commit();
    // Interior: every query row of the tile exists and sees every key of the block (so its
    // lse is finite).
    const bool interior = block_keys_ok && i0 + N <= sh.t && (!sh.causal || j0 + kRows - 1 <= i0) &&
                          (sh.window <= 0 || i0 + N - 1 - j0 < sh.window);
    float st[N / 8][4], dpt[N / 8][4];
    MulABt<D, N>(st, ks + warp * 16 * kLd<D>, qs);
    MulABt<D, N>(dpt, vs + warp * 16 * kLd<D>, dos);
    if (interior) {
#pragma unroll
      for (int nt = 0; nt < N / 8; ++nt) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int c = nt * 8 + 2 * t + (e & 1);
          const float p = exp2f(st[nt][e] * scale_log2 - lse_s[c] * kLog2e);
          st[nt][e] = p;
          dpt[nt][e] = p * (dpt[nt][e] - drow_s[c]);  // dS^T
        }
      }
    } else {
#pragma unroll
      for (int nt = 0; nt < N / 8; ++nt) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int c = nt * 8 + 2 * t + (e & 1);
          const float row_lse = lse_s[c];
          // lse is -inf for rows that see no key (and zero-filled for rows past T).
          const bool vis = i0 + c < sh.t && row_lse != kNegInf && key_ok[e / 2] &&
                           (!sh.causal || key[e / 2] <= i0 + c) &&
                           (sh.window <= 0 || i0 + c - key[e / 2] < sh.window);
          const float p = vis ? exp2f(st[nt][e] * scale_log2 - row_lse * kLog2e) : 0.0f;
          st[nt][e] = p;
          dpt[nt][e] = p * (dpt[nt][e] - drow_s[c]);  // dS^T
        }
      }
    }
    uint32_t pa[N / 16][4], dsa[N / 16][4];
    ToA<N>(pa, st);
    ToA<N>(dsa, dpt);
    MulPB<D, N>(dv_acc, pa, dos);
    MulPB<D, N>(dk_acc, dsa, qs);
  }
  __pipeline_wait_prior(0);
  const float one[2] = {1.0f, 1.0f}, scale[2] = {sh.scale, sh.scale};
  const int64_t kv_off = b * sh.s * kv_stride + kvh * D;
  StoreRows<D>(dk + kv_off, j0 + warp * 16, sh.s, kv_stride, dk_acc, scale);
  StoreRows<D>(dv + kv_off, j0 + warp * 16, sh.s, kv_stride, dv_acc, one);
}

template <int D>
constexpr size_t ForwardSmem() {
  return TileBytes<D>(kRows) + 2 * KvStageBytes<D>();
}
template <int D>
constexpr size_t DqSmem() {
  return 2 * TileBytes<D>(kRows) + 2 * KvStageBytes<D>();
}
template <int D>
constexpr size_t DkvSmem() {
  return 2 * TileBytes<D>(kRows) + 2 * (2 * TileBytes<D>(kDkvN<D>) + 2 * kDkvN<D> * sizeof(float));
}

template <int D>
void Forward(void* out, float* lse, const void* q, const void* k, const void* v,
             const int64_t* key_mask, const AttentionShape& sh, cudaStream_t stream) {
  LaunchAttentionForward(MmaForwardKernel<D>, ForwardSmem<D>(), kRows, kThreads, out, lse, q, k, v,
                         key_mask, sh, stream);
}

template <int D>
void Backward(void* dq, void* dk, void* dv, const void* dout, const void* q, const void* k,
              const void* v, const void* out, const float* lse, const int64_t* key_mask,
              float* drow, const AttentionShape& sh, cudaStream_t stream) {
  LaunchAttentionBackward(MmaBackwardDqKernel<D>, DqSmem<D>(), MmaBackwardDkvKernel<D>,
                          DkvSmem<D>(), kRows, kThreads, dq, dk, dv, dout, q, k, v, out, lse,
                          key_mask, drow, sh, stream);
}

}  // namespace

size_t MmaAttentionSmemBytes(int64_t d) {
  if (d == 64) return std::max({ForwardSmem<64>(), DqSmem<64>(), DkvSmem<64>()});
  return std::max({ForwardSmem<128>(), DqSmem<128>(), DkvSmem<128>()});
}

void AttentionForwardMma(void* out, float* lse, const void* q, const void* k, const void* v,
                         const int64_t* key_mask, const AttentionShape& sh, cudaStream_t stream) {
  if (sh.d == 64) {
    Forward<64>(out, lse, q, k, v, key_mask, sh, stream);
  } else {
    Forward<128>(out, lse, q, k, v, key_mask, sh, stream);
  }
}

void AttentionBackwardMma(void* dq, void* dk, void* dv, const void* dout, const void* q,
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
