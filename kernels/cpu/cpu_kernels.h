// CPU kernels on raw f32 (and integer index) buffers, in the style of llm.c: plain functions, shape
// letters in the comments, every buffer contiguous row-major. "=" kernels overwrite their outputs,
// "+=" kernels accumulate (stated per function). All kernels are parallel over the process's
// threads (runtime/core/parallel.h) and vectorised; none allocates more than a per-thread tile. The
// CUDA kernels in kernels/cuda/ mirror these names; these are the oracle they are tested against.
//
// Families, one file each: gemm.cc, embedding.cc, elementwise.cc, rmsnorm.cc, rotary.cc,
// attention.cc, swiglu.cc, cross_entropy.cc, reduce.cc, adamw.cc.
#pragma once

#include <cstdint>
#include <vector>

namespace moreh::kernels::cpu {

// --- gemm.cc
// -------------------------------------------------------------------------------------- C[M,N] =
// alpha * op(A) op(B) + beta * C, op(X) = X or X^T; lda/ldb/ldc are row strides.
void Gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
          int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc);

// --- embedding.cc
// --------------------------------------------------------------------------------- out[N,C] =
// weight[ids[i], :]. ids must be in [0, V) (checked by the caller).
void EmbeddingForward(float* out, const float* weight, const int64_t* ids, int64_t n, int64_t c);
// dweight[V,C] = scatter-add of dout[N,C] rows at ids (overwrites dweight).
void EmbeddingBackward(float* dweight, const float* dout, const int64_t* ids, int64_t n, int64_t c,
                       int64_t v);

// --- elementwise.cc
// ------------------------------------------------------------------------------- out[N] = a[N] +
// b[N % nb] (b broadcast over leading dims when nb < n); likewise Mul.
void Add(float* out, const float* a, const float* b, int64_t n, int64_t nb);
void Mul(float* out, const float* a, const float* b, int64_t n, int64_t nb);
void Scale(float* out, const float* x, float s, int64_t n);
// Gemma 2's logit soft-capping: out = cap * tanh(x / cap); backward from the output:
// dx = dy * (1 - (y / cap)^2).
void Softcap(float* out, const float* x, float cap, int64_t n);
void SoftcapBackward(float* dx, const float* dy, const float* y, float cap, int64_t n);

// --- rmsnorm.cc
// ----------------------------------------------------------------------------------- y[N,C] = x *
// rsqrt(mean(x^2) + eps) * (offset + w[C]); Gemma's norms store the weight as an offset from 1.
void RmsNormForward(float* y, const float* x, const float* w, int64_t n, int64_t c, float eps,
                    float offset = 0.0f);
// dx[N,C] = ..., dw[C] = sum over rows (both overwritten).
void RmsNormBackward(float* dx, float* dw, const float* dy, const float* x, const float* w,
                     int64_t n, int64_t c, float eps, float offset = 0.0f);

// --- rotary.cc
// ------------------------------------------------------------------------------------ Hugging Face
// "rotate_half" rotary embedding of x[B,T,H,D] at positions offset+t, in place allowed (y may equal
// x). inverse = rotate by -angle (the backward). Angles computed in f32 as HF does, from the
// frequencies inv_freq[D/2] (RopeInvFreq).
void RotaryForward(float* y, const float* x, int64_t b, int64_t t, int64_t h, int64_t d,
                   const float* inv_freq, int64_t position_offset, bool inverse);

// The rotary frequencies and their scaling (transformers' rope_type: modeling_rope_utils.py).
struct RopeParams {
  double theta = 10000;
  enum Type { kDefault, kLinear, kLlama3 } type = kDefault;
  double factor = 1;                                 // linear, llama3
  double low_freq_factor = 1, high_freq_factor = 4;  // llama3
  int64_t original_max_position = 8192;              // llama3
};
// inv_freq[i] for i < d/2 in f32, as transformers computes it: 1 / theta^(2i/d), divided by factor
// (linear), or Llama 3's: wavelengths beyond original/low_freq_factor divided by factor, below
// original/high_freq_factor kept, smoothly interpolated between.
std::vector<float> RopeInvFreq(int64_t d, const RopeParams& p);

// --- attention.cc
// --------------------------------------------------------------------------------- Flash-style
// scaled-dot-product attention. q[B,T,H,D], k,v[B,S,Hkv,D] (H % Hkv == 0, grouped-query),
// key_mask[B,S] (nonzero = attend; may be null), causal requires T == S (query t sees keys <= t).
// out[B,T,H,D] =, lse[B,H,T] = log-sum-exp of each score row (-inf where no key is visible; such
// rows output 0). Never holds more than a tile of scores per thread.
struct AttentionShape {
  int64_t b, t, s, h, hkv, d;
  bool causal;
  float scale;
  // Sliding window (Mistral, Gemma 2; causal only): query i sees key j iff 0 <= i - j < window,
  // as transformers' eager and SDPA masks do. 0: no window.
  int64_t window = 0;
  // Gemma 2's attn_logit_softcapping: scores become softcap * tanh(scores / softcap) before the
  // masks and the softmax. 0: none.
  float softcap = 0.0f;
};
// Whether the window lets query i see key j (the causal and padding masks apply besides).
inline bool InWindow(const AttentionShape& sh, int64_t i, int64_t j) {
  return sh.window <= 0 || i - j < sh.window;
}
void AttentionForward(float* out, float* lse, const float* q, const float* k, const float* v,
                      const int64_t* key_mask, const AttentionShape& shape);
// dq, dk, dv = (overwritten). Recomputes the scores from q, k and lse.
void AttentionBackward(float* dq, float* dk, float* dv, const float* dout, const float* q,
                       const float* k, const float* v, const float* out, const float* lse,
                       const int64_t* key_mask, const AttentionShape& shape);

// --- swiglu.cc
// ------------------------------------------------------------------------------------ y[N] =
// silu(gate) * up; backward: dgate, dup (=).
void SwiGluForward(float* y, const float* gate, const float* up, int64_t n);
void SwiGluBackward(float* dgate, float* dup, const float* dy, const float* gate, const float* up,
                    int64_t n);
// Gemma's GeGLU: y = gelu_tanh(gate) * up, gelu_tanh(g) = 0.5 g (1 + tanh(sqrt(2/pi) (g + 0.044715
// g^3))) (PyTorch's gelu(approximate="tanh")); the backward writes dgate and dup.
void GeGluForward(float* y, const float* gate, const float* up, int64_t n);
void GeGluBackward(float* dgate, float* dup, const float* dy, const float* gate, const float* up,
                   int64_t n);

// --- cross_entropy.cc
// ----------------------------------------------------------------------------- logits[N,V],
// labels[N] (ignore_index skipped). lse[N] =; returns the sum of per-row losses and sets *count to
// the number of counted rows. Labels outside [0,V) must be rejected by the caller.
double CrossEntropyForward(float* lse, const float* logits, const int64_t* labels, int64_t n,
                           int64_t v, int64_t ignore_index, int64_t* count);
// dlogits[N,V] = (softmax(logits) - onehot(label)) * grad_scale for counted rows, 0 for ignored.
void CrossEntropyBackward(float* dlogits, const float* logits, const int64_t* labels,
                          const float* lse, int64_t n, int64_t v, int64_t ignore_index,
                          float grad_scale);

// --- reduce.cc
// ------------------------------------------------------------------------------------ out[outer,
// inner] = sum over r of x[outer, r, inner] (x viewed as [outer, r, inner]).
void SumMiddle(float* out, const float* x, int64_t outer, int64_t r, int64_t inner);

// --- adamw.cc
// -------------------------------------------------------------------------------------
// torch.optim.AdamW, one step, in place on param, m, v (all [N]); step counts from 1.
struct AdamWParams {
  float lr, beta1, beta2, eps, weight_decay;
  int64_t step;
};
void AdamWStep(float* param, float* m, float* v, const float* grad, int64_t n,
               const AdamWParams& p);

}  // namespace moreh::kernels::cpu
