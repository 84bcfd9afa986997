// Causal / padded scaled-dot-product attention, flash-attention style on the CPU.
//
// Layout: q[B,T,H,D], k,v[B,S,Hkv,D] (the projections' natural layout, so no transposes), heads
// grouped: query head h reads key/value head h / (H / Hkv). Work is cut into tiles of kBr query
// rows x kBc keys; each tile's products (Q K^T, P V, and in the backward dP, dQ, dK, dV) are small
// single-threaded GEMMs on strided views, and the softmax runs online across key tiles, so the
// largest score buffer is one kBr x kBc tile per thread. The backward recomputes the scores from
// q, k and the saved row log-sum-exp.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cpu/vec_math.h"
#include "runtime/core/parallel.h"

namespace moreh::kernels::cpu {
namespace {
constexpr int64_t kBr = 64;  // query rows per tile
constexpr int64_t kBc = 64;  // keys per tile
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// Keys of tile [j0, j0 + nb) visible to query row i: [begin, end) filtered by the padding mask.
inline int64_t VisibleEnd(const AttentionShape& sh, int64_t i, int64_t j0, int64_t nb) {
  return sh.causal ? std::min(j0 + nb, i + 1) : j0 + nb;
}
inline int64_t VisibleBegin(const AttentionShape& sh, int64_t i, int64_t j0) {
  return sh.window > 0 ? std::max(j0, i - sh.window + 1) : j0;
}
// The first key tile any of rows [i0, ...) can see (the sliding window's lower edge).
inline int64_t FirstKeyTile(const AttentionShape& sh, int64_t i0) {
  return sh.window > 0 ? std::max<int64_t>(0, i0 - sh.window + 1) / kBc * kBc : 0;
}

// Gemma 2's soft-capping of a tile's scores (before the masks), in place.
void CapTile(float* s, int64_t rows, int64_t nb, float cap) {
  if (cap <= 0.0f) return;
  const float inv = 1.0f / cap;
  for (int64_t r = 0; r < rows; ++r) {
    float* row = s + r * kBc;
#pragma omp simd
    for (int64_t jj = 0; jj < nb; ++jj) row[jj] = cap * VecTanh(row[jj] * inv);
  }
}

// Sets s[r][jj] = -inf for keys that row r may not see.
void MaskTile(float* s, int64_t rows, int64_t nb, int64_t i0, int64_t j0, const int64_t* key_mask,
              int64_t b, const AttentionShape& sh) {
  for (int64_t r = 0; r < rows; ++r) {
    float* row = s + r * kBc;
    const int64_t end = VisibleEnd(sh, i0 + r, j0, nb) - j0;
    const int64_t begin = std::min(VisibleBegin(sh, i0 + r, j0) - j0, nb);
    for (int64_t jj = 0; jj < begin; ++jj) row[jj] = kNegInf;
    for (int64_t jj = std::max<int64_t>(end, 0); jj < nb; ++jj) row[jj] = kNegInf;
    if (key_mask) {
      const int64_t* km = key_mask + b * sh.s + j0;
      for (int64_t jj = begin; jj < std::min(end, nb); ++jj) {
        if (km[jj] == 0) row[jj] = kNegInf;
      }
    }
  }
}
}  // namespace

void AttentionForward(float* out, float* lse, const float* q, const float* k, const float* v,
                      const int64_t* key_mask, const AttentionShape& sh) {
  const int64_t B = sh.b, T = sh.t, S = sh.s, H = sh.h, D = sh.d, group = sh.h / sh.hkv;
  const int64_t q_stride = H * D, kv_stride = sh.hkv * D;
  const int64_t tiles = (T + kBr - 1) / kBr;
  ParallelFor(B * H * tiles, 1, [&](int64_t task_begin, int64_t task_end) {
    std::vector<float> s(kBr * kBc), acc(kBr * D), m(kBr), l(kBr);
    for (int64_t task = task_begin; task < task_end; ++task) {
      const int64_t qi = task % tiles, bh = task / tiles, h = bh % H, b = bh / H;
      const int64_t i0 = qi * kBr, rows = std::min(T, i0 + kBr) - i0;
      const float* qt = q + (b * T + i0) * q_stride + h * D;
      const float* kb = k + (b * S * sh.hkv + h / group) * D;
      const float* vb = v + (b * S * sh.hkv + h / group) * D;
      std::fill(acc.begin(), acc.end(), 0.0f);
      std::fill(m.begin(), m.end(), kNegInf);
      std::fill(l.begin(), l.end(), 0.0f);
      const int64_t key_end = sh.causal ? std::min(i0 + rows, S) : S;
      for (int64_t j0 = FirstKeyTile(sh, i0); j0 < key_end; j0 += kBc) {
        const int64_t nb = std::min(key_end, j0 + kBc) - j0;
        // S = scale * Q K^T for the tile.
        Gemm(false, true, rows, nb, D, sh.scale, qt, q_stride, kb + j0 * kv_stride, kv_stride, 0.0f,
             s.data(), kBc);
        CapTile(s.data(), rows, nb, sh.softcap);
        MaskTile(s.data(), rows, nb, i0, j0, key_mask, b, sh);
        for (int64_t r = 0; r < rows; ++r) {
          float* row = s.data() + r * kBc;
          float mx = kNegInf;
          for (int64_t jj = 0; jj < nb; ++jj) mx = std::max(mx, row[jj]);
          if (mx == kNegInf) {  // nothing visible in this tile: contributes nothing
            std::fill(row, row + nb, 0.0f);
            continue;
          }
          const float m_new = std::max(m[r], mx);
          const float corr = m[r] == kNegInf ? 0.0f : std::exp(m[r] - m_new);
          float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
          for (int64_t jj = 0; jj < nb; ++jj) {
            row[jj] = VecExp(row[jj] - m_new);
            sum += row[jj];
          }
          l[r] = l[r] * corr + sum;
          m[r] = m_new;
          float* a = acc.data() + r * D;
#pragma omp simd
          for (int64_t x = 0; x < D; ++x) a[x] *= corr;
        }
        // O += P V
        Gemm(false, false, rows, D, nb, 1.0f, s.data(), kBc, vb + j0 * kv_stride, kv_stride, 1.0f,
             acc.data(), D);
      }
      for (int64_t r = 0; r < rows; ++r) {
        float* o = out + (b * T + i0 + r) * q_stride + h * D;
        const float inv = l[r] > 0.0f ? 1.0f / l[r] : 0.0f;
        for (int64_t x = 0; x < D; ++x) o[x] = acc[r * D + x] * inv;
        lse[(b * H + h) * T + i0 + r] = l[r] > 0.0f ? m[r] + std::log(l[r]) : kNegInf;
      }
    }
  });
}

// With P = exp(S - lse), Di = rowsum(dO * O):
//   dV = P^T dO,  dP = dO V^T,  dS = P * (dP - Di),  dQ = scale dS K,  dK = scale dS^T Q.
// One task per (b, kv head): it owns dk/dv of that head and dq of the query heads in its group,
// so no two threads write the same element.
void AttentionBackward(float* dq, float* dk, float* dv, const float* dout, const float* q,
                       const float* k, const float* v, const float* out, const float* lse,
                       const int64_t* key_mask, const AttentionShape& sh) {
  const int64_t B = sh.b, T = sh.t, S = sh.s, H = sh.h, Hkv = sh.hkv, D = sh.d;
  const int64_t group = H / Hkv, q_stride = H * D, kv_stride = Hkv * D;
  ParallelFor(B * Hkv, 1, [&](int64_t task_begin, int64_t task_end) {
    std::vector<float> p(kBr * kBc), dp(kBr * kBc), dk_acc(kBc * D), dv_acc(kBc * D);
    std::vector<float> di(group * T);
    for (int64_t task = task_begin; task < task_end; ++task) {
      const int64_t b = task / Hkv, kvh = task % Hkv;
      const float* kb = k + (b * S * Hkv + kvh) * D;
      const float* vb = v + (b * S * Hkv + kvh) * D;
      for (int64_t g = 0; g < group; ++g) {
        const int64_t h = kvh * group + g;
        for (int64_t i = 0; i < T; ++i) {
          const int64_t off = (b * T + i) * q_stride + h * D;
          float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
          for (int64_t x = 0; x < D; ++x) acc += dout[off + x] * out[off + x];
          di[g * T + i] = acc;
          std::memset(dq + off, 0, static_cast<size_t>(D) * sizeof(float));
        }
      }
      for (int64_t j0 = 0; j0 < S; j0 += kBc) {
        const int64_t nb = std::min(S, j0 + kBc) - j0;
        const float* kt = kb + j0 * kv_stride;
        const float* vt = vb + j0 * kv_stride;
        std::fill(dk_acc.begin(), dk_acc.end(), 0.0f);
        std::fill(dv_acc.begin(), dv_acc.end(), 0.0f);
        for (int64_t g = 0; g < group; ++g) {
          const int64_t h = kvh * group + g;
          const int64_t first = sh.causal ? j0 / kBr * kBr : 0;
          // With a window, rows past j0 + nb - 1 + window see none of these keys.
          const int64_t last = sh.window > 0 ? std::min(T, j0 + nb - 1 + sh.window) : T;
          for (int64_t i0 = first; i0 < last; i0 += kBr) {
            const int64_t rows = std::min(T, i0 + kBr) - i0;
            const float* qt = q + (b * T + i0) * q_stride + h * D;
            const float* dot = dout + (b * T + i0) * q_stride + h * D;
            float* dqt = dq + (b * T + i0) * q_stride + h * D;
            const float* lse_t = lse + (b * H + h) * T + i0;
            Gemm(false, true, rows, nb, D, sh.scale, qt, q_stride, kt, kv_stride, 0.0f, p.data(),
                 kBc);
            CapTile(p.data(), rows, nb, sh.softcap);
            MaskTile(p.data(), rows, nb, i0, j0, key_mask, b, sh);
            Gemm(false, true, rows, nb, D, 1.0f, dot, q_stride, vt, kv_stride, 0.0f, dp.data(),
                 kBc);
            for (int64_t r = 0; r < rows; ++r) {
              float* pr = p.data() + r * kBc;
              float* dpr = dp.data() + r * kBc;
              const float row_lse = lse_t[r];
              const float d_i = di[g * T + i0 + r];
              if (row_lse == kNegInf) {
                std::fill(pr, pr + nb, 0.0f);
                std::fill(dpr, dpr + nb, 0.0f);
                continue;
              }
#pragma omp simd
              for (int64_t jj = 0; jj < nb; ++jj) {
                const float pv = VecExp(pr[jj] - row_lse);  // masked: exp(-inf) = 0
                dpr[jj] = pv * (dpr[jj] - d_i) * sh.scale;  // scale * dS
              }
              if (sh.softcap > 0.0f) {  // through the cap: d tanh = 1 - tanh^2
                const float inv = 1.0f / sh.softcap;
#pragma omp simd
                for (int64_t jj = 0; jj < nb; ++jj) {
                  const float t = pr[jj] == kNegInf ? 0.0f : pr[jj] * inv;
                  dpr[jj] *= 1.0f - t * t;
                }
              }
#pragma omp simd
              for (int64_t jj = 0; jj < nb; ++jj) pr[jj] = VecExp(pr[jj] - row_lse);
            }
            // dV += P^T dO; dK += (scale dS)^T Q; dQ += (scale dS) K
            Gemm(true, false, nb, D, rows, 1.0f, p.data(), kBc, dot, q_stride, 1.0f, dv_acc.data(),
                 D);
            Gemm(true, false, nb, D, rows, 1.0f, dp.data(), kBc, qt, q_stride, 1.0f, dk_acc.data(),
                 D);
            Gemm(false, false, rows, D, nb, 1.0f, dp.data(), kBc, kt, kv_stride, 1.0f, dqt,
                 q_stride);
          }
        }
        for (int64_t jj = 0; jj < nb; ++jj) {
          std::memcpy(dk + (b * S + j0 + jj) * kv_stride + kvh * D, dk_acc.data() + jj * D,
                      static_cast<size_t>(D) * sizeof(float));
          std::memcpy(dv + (b * S + j0 + jj) * kv_stride + kvh * D, dv_acc.data() + jj * D,
                      static_cast<size_t>(D) * sizeof(float));
        }
      }
    }
  });
}

}  // namespace moreh::kernels::cpu
