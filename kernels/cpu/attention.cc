// Causal / padded scaled-dot-product attention, flash-attention style on the CPU.
//
// Layout: q[B,T,H,D], k,v[B,S,Hkv,D] (the projections' natural layout, so no transposes), heads
// grouped: query head h reads key/value head h / (H / Hkv). Each task owns a tile of kBr query rows
// of one (b, h); it walks key tiles of kBc keys with an online softmax, so the largest score buffer
// is one tile row. The backward recomputes the scores from q, k and the saved row log-sum-exp.
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
constexpr int64_t kBr = 64;  // query rows per task
constexpr int64_t kBc = 64;  // keys per tile
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// kt[d * kBc + jj] = k[(j0 + jj) row][d] for jj < nb (transposed key tile: the score loop runs over
// keys in vector lanes).
void LoadTransposed(float* kt, const float* k, int64_t row_stride, int64_t j0, int64_t nb,
                    int64_t d) {
  for (int64_t jj = 0; jj < nb; ++jj) {
    const float* kr = k + (j0 + jj) * row_stride;
    for (int64_t x = 0; x < d; ++x) kt[x * kBc + jj] = kr[x];
  }
}

// s[jj] = scale * sum_d q[d] * kt[d][jj] for jj < cnt, masked keys -> -inf.
inline void Scores(float* s, const float* q, const float* kt, const unsigned char* valid,
                   int64_t cnt, int64_t d, float scale) {
  for (int64_t jj = 0; jj < cnt; ++jj) s[jj] = 0.0f;
  for (int64_t x = 0; x < d; ++x) {
    const float qd = q[x] * scale;
    const float* kr = kt + x * kBc;
#pragma omp simd
    for (int64_t jj = 0; jj < cnt; ++jj) s[jj] += qd * kr[jj];
  }
  for (int64_t jj = 0; jj < cnt; ++jj) s[jj] = valid[jj] ? s[jj] : kNegInf;
}

void LoadValid(unsigned char* valid, const int64_t* key_mask, int64_t b, int64_t s, int64_t j0,
               int64_t nb) {
  for (int64_t jj = 0; jj < nb; ++jj) valid[jj] = key_mask ? key_mask[b * s + j0 + jj] != 0 : 1;
}
}  // namespace

void AttentionForward(float* out, float* lse, const float* q, const float* k, const float* v,
                      const int64_t* key_mask, const AttentionShape& sh) {
  const int64_t B = sh.b, T = sh.t, S = sh.s, H = sh.h, D = sh.d, group = sh.h / sh.hkv;
  const int64_t q_stride = H * D, kv_stride = sh.hkv * D;
  const int64_t tiles = (T + kBr - 1) / kBr;
  ParallelFor(B * H * tiles, 1, [&](int64_t task_begin, int64_t task_end) {
    std::vector<float> kt(D * kBc), s(kBc), acc(kBr * D), m(kBr), l(kBr);
    std::vector<unsigned char> valid(kBc);
    for (int64_t task = task_begin; task < task_end; ++task) {
      const int64_t qi = task % tiles, bh = task / tiles, h = bh % H, b = bh / H;
      const int64_t i0 = qi * kBr, i1 = std::min(T, i0 + kBr);
      const float* kb = k + (b * S * sh.hkv + h / group) * D;
      const float* vb = v + (b * S * sh.hkv + h / group) * D;
      std::fill(acc.begin(), acc.end(), 0.0f);
      std::fill(m.begin(), m.end(), kNegInf);
      std::fill(l.begin(), l.end(), 0.0f);
      const int64_t key_end = sh.causal ? std::min(i1, S) : S;
      for (int64_t j0 = 0; j0 < key_end; j0 += kBc) {
        const int64_t j1 = std::min(key_end, j0 + kBc), nb = j1 - j0;
        LoadTransposed(kt.data(), kb, kv_stride, j0, nb, D);
        LoadValid(valid.data(), key_mask, b, S, j0, nb);
        for (int64_t i = i0; i < i1; ++i) {
          const int64_t cnt = (sh.causal ? std::min(j1, i + 1) : j1) - j0;
          if (cnt <= 0) continue;
          const float* qr = q + (b * T + i) * q_stride + h * D;
          Scores(s.data(), qr, kt.data(), valid.data(), cnt, D, sh.scale);
          float mx = kNegInf;
          for (int64_t jj = 0; jj < cnt; ++jj) mx = std::max(mx, s[jj]);
          if (mx == kNegInf) continue;  // every key of this tile is masked
          const int64_t r = i - i0;
          const float m_new = std::max(m[r], mx);
          const float corr = m[r] == kNegInf ? 0.0f : std::exp(m[r] - m_new);
          float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
          for (int64_t jj = 0; jj < cnt; ++jj) {
            s[jj] = VecExp(s[jj] - m_new);
            sum += s[jj];
          }
          l[r] = l[r] * corr + sum;
          m[r] = m_new;
          float* a = acc.data() + r * D;
#pragma omp simd
          for (int64_t x = 0; x < D; ++x) a[x] *= corr;
          for (int64_t jj = 0; jj < cnt; ++jj) {
            const float p = s[jj];
            const float* vr = vb + (j0 + jj) * kv_stride;
#pragma omp simd
            for (int64_t x = 0; x < D; ++x) a[x] += p * vr[x];
          }
        }
      }
      for (int64_t i = i0; i < i1; ++i) {
        const int64_t r = i - i0;
        float* o = out + (b * T + i) * q_stride + h * D;
        const float inv = l[r] > 0.0f ? 1.0f / l[r] : 0.0f;
        for (int64_t x = 0; x < D; ++x) o[x] = acc[r * D + x] * inv;
        lse[(b * H + h) * T + i] = l[r] > 0.0f ? m[r] + std::log(l[r]) : kNegInf;
      }
    }
  });
}

// With P = exp(S - lse), Di = rowsum(dO * O):
//   dV = P^T dO,  dP = dO V^T,  dS = P * (dP - Di),  dQ = scale dS K,  dK = scale dS^T Q.
// One task per (b, kv head): it owns dk/dv of that head and dq of the query heads in its group.
void AttentionBackward(float* dq, float* dk, float* dv, const float* dout, const float* q,
                       const float* k, const float* v, const float* out, const float* lse,
                       const int64_t* key_mask, const AttentionShape& sh) {
  const int64_t B = sh.b, T = sh.t, S = sh.s, H = sh.h, Hkv = sh.hkv, D = sh.d;
  const int64_t group = H / Hkv, q_stride = H * D, kv_stride = Hkv * D;
  ParallelFor(B * Hkv, 1, [&](int64_t task_begin, int64_t task_end) {
    std::vector<float> kt(D * kBc), vt(D * kBc), s(kBc), dp(kBc), dk_acc(kBc * D), dv_acc(kBc * D);
    std::vector<float> di(group * T);
    std::vector<unsigned char> valid(kBc);
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
        const int64_t j1 = std::min(S, j0 + kBc), nb = j1 - j0;
        LoadTransposed(kt.data(), kb, kv_stride, j0, nb, D);
        LoadTransposed(vt.data(), vb, kv_stride, j0, nb, D);
        LoadValid(valid.data(), key_mask, b, S, j0, nb);
        std::fill(dk_acc.begin(), dk_acc.end(), 0.0f);
        std::fill(dv_acc.begin(), dv_acc.end(), 0.0f);
        for (int64_t g = 0; g < group; ++g) {
          const int64_t h = kvh * group + g;
          for (int64_t i = sh.causal ? j0 : 0; i < T; ++i) {
            const int64_t cnt = (sh.causal ? std::min(j1, i + 1) : j1) - j0;
            const float row_lse = lse[(b * H + h) * T + i];
            if (cnt <= 0 || row_lse == kNegInf) continue;
            const int64_t off = (b * T + i) * q_stride + h * D;
            const float* qr = q + off;
            const float* dor = dout + off;
            Scores(s.data(), qr, kt.data(), valid.data(), cnt, D, sh.scale);
            for (int64_t jj = 0; jj < cnt; ++jj) dp[jj] = 0.0f;
            for (int64_t x = 0; x < D; ++x) {
              const float g_x = dor[x];
              const float* vr = vt.data() + x * kBc;
#pragma omp simd
              for (int64_t jj = 0; jj < cnt; ++jj) dp[jj] += g_x * vr[jj];
            }
            const float d_i = di[g * T + i];
#pragma omp simd
            for (int64_t jj = 0; jj < cnt; ++jj) {
              const float p = VecExp(s[jj] - row_lse);
              s[jj] = p;                      // P
              dp[jj] = p * (dp[jj] - d_i);    // dS
            }
            float* dqr = dq + off;
            for (int64_t jj = 0; jj < cnt; ++jj) {
              const float p = s[jj], ds = dp[jj] * sh.scale;
              float* dva = dv_acc.data() + jj * D;
              float* dka = dk_acc.data() + jj * D;
              const float* kr = kb + (j0 + jj) * kv_stride;
#pragma omp simd
              for (int64_t x = 0; x < D; ++x) {
                dva[x] += p * dor[x];
                dka[x] += ds * qr[x];
                dqr[x] += ds * kr[x];
              }
            }
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
