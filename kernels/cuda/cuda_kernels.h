// CUDA kernels on raw device buffers, mirroring kernels/cpu/cpu_kernels.h name for name (one family
// per file, same file names). Differences from the CPU kernels, all forced by the device:
//  - activations and weights may be f32, bf16 or f16 (`dtype`); every kernel computes in f32 and
//    rounds on output. Statistics (log-sum-exps, RMSNorm weight gradients, optimizer states, master
//    weights) are always f32;
//  - every function takes the stream it is queued on and returns at once; errors in the arguments
//    throw moreh::Error before anything is queued, and a failed launch throws with CUDA's message;
//  - reductions that the CPU returns (the cross-entropy sum) land in device memory instead.
// No kernel allocates: scratch the device needs is the caller's (stated per function).
//
// The CPU kernels are the oracle: tests/cuda/kernel_check.cc runs every function here against its
// CPU twin over a list of shapes (scripts/gpu-check).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "kernels/cpu/cpu_kernels.h"
#include "runtime/core/dtype.h"

namespace moreh::kernels::cuda {

using cpu::AdamWParams;
using cpu::AttentionShape;

// --- gemm.cc (cuBLASLt)
// C[M,N] = alpha * op(A) op(B) + beta * C, row-major with row strides lda/ldb/ldc, as the CPU
// Gemm. A and B share `ab` (f32, bf16 or f16); C is `c_type` (f32, or ab). Accumulation is always
// f32; f32 inputs use full f32 unless MOREH_CUDA_ALLOW_TF32=1. One cuBLASLt handle and a 32 MiB
// workspace per thread and device; the algorithm per shape is cached.
void Gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const void* a,
          int64_t lda, const void* b, int64_t ldb, float beta, void* c, int64_t ldc, DType ab,
          DType c_type, cudaStream_t stream);

// --- embedding.cu
// out[N,C] = weight[ids[i], :] (out and weight `dtype`). An id outside [0, V) (the caller checks;
// this is the device's guard) gives a row of NaN.
void EmbeddingForward(void* out, const void* weight, const int64_t* ids, int64_t n, int64_t c,
                      int64_t v, DType dtype, cudaStream_t stream);
// dweight[V,C] (f32) = scatter-add of dout[N,C] rows (`dtype`) at ids; overwrites dweight.
void EmbeddingBackward(float* dweight, const void* dout, const int64_t* ids, int64_t n, int64_t c,
                       int64_t v, DType dtype, cudaStream_t stream);

// --- elementwise.cu
// out[N] = a[N] + b[N % nb]; likewise Mul; out = x * s. One dtype for all operands.
void Add(void* out, const void* a, const void* b, int64_t n, int64_t nb, DType dtype,
         cudaStream_t stream);
void Mul(void* out, const void* a, const void* b, int64_t n, int64_t nb, DType dtype,
         cudaStream_t stream);
void Scale(void* out, const void* x, float s, int64_t n, DType dtype, cudaStream_t stream);
// out = cap * tanh(x / cap); dx = dy * (1 - (y / cap)^2) (Gemma 2's logit soft-capping).
void Softcap(void* out, const void* x, float cap, int64_t n, DType dtype, cudaStream_t stream);
void SoftcapBackward(void* dx, const void* dy, const void* y, float cap, int64_t n, DType dtype,
                     cudaStream_t stream);
// acc[n] (f32) += x[n] (x_type, any float): mixed precision's gradient accumulation.
void AccumulateF32(float* acc, const void* x, DType x_type, int64_t n, cudaStream_t stream);
// Element conversion: any float to any float (round to nearest even), i32 <-> i64.
void Cast(void* out, DType out_type, const void* in, DType in_type, int64_t n, cudaStream_t stream);

// dst[numel(shape)] (contiguous, dst_type) = the strided view of src_base (src_type): shape and
// strides in elements, rank <= 8; any dtype to any dtype (floats round to nearest even, floats to
// integers truncate). The device side of Tensor::CopyFrom.
void StridedCopy(void* dst, DType dst_type, const void* src_base, DType src_type, int rank,
                 const int64_t* shape, const int64_t* strides, int64_t offset, cudaStream_t stream);
// dst[n] (dtype) = value.
void Fill(void* dst, DType dtype, int64_t n, double value, cudaStream_t stream);

// --- rmsnorm.cu
// y[N,C] = x * rsqrt(mean(x^2) + eps) * (offset + w[C]); x, w, y `dtype`.
void RmsNormForward(void* y, const void* x, const void* w, int64_t n, int64_t c, float eps,
                    DType dtype, cudaStream_t stream, float offset = 0.0f);
// dx[N,C] (`dtype`) =, dw[C] (f32) = sum over rows; both overwritten.
void RmsNormBackward(void* dx, float* dw, const void* dy, const void* x, const void* w, int64_t n,
                     int64_t c, float eps, DType dtype, cudaStream_t stream, float offset = 0.0f);

// --- rotary.cu
// Hugging Face rotate_half rotary embedding of x[B,T,H,D] (y may equal x), as the CPU kernel.
// inv_freq[d/2]: host memory (kernels/cpu RopeInvFreq), passed to the kernel by value.
void RotaryForward(void* y, const void* x, int64_t b, int64_t t, int64_t h, int64_t d,
                   const float* inv_freq, int64_t position_offset, bool inverse, DType dtype,
                   cudaStream_t stream);

// --- attention.cu, attention_tc.cu
// Flash attention: q[B,T,H,D], k,v[B,S,Hkv,D], out[B,T,H,D] (`dtype`: f32 or bf16), lse[B,H,T]
// f32, key_mask[B,S] (nonzero = attend) or null. D <= 256. Scores live in registers and shared
// memory a tile at a time; no T x S matrix is ever written. kAuto runs bf16 with D 64 or 128 (and
// 16-byte aligned tensors) on tensor cores: mma.sync with register-resident tiles
// (attention_mma.cu), or MOREH_CUDA_ATTENTION=wmma the WMMA kernels (attention_tc.cu); everything
// else, and everything with MOREH_CUDA_ATTENTION=simple, on CUDA cores (attention.cu). kMma and
// kWmma throw where unsupported.
enum class AttentionImpl { kAuto, kSimple, kWmma, kMma };
void AttentionForward(void* out, float* lse, const void* q, const void* k, const void* v,
                      const int64_t* key_mask, const AttentionShape& shape, DType dtype,
                      cudaStream_t stream, AttentionImpl impl = AttentionImpl::kAuto);
// dq, dk, dv (`dtype`) =. Two passes, no atomics: one per key tile (dk, dv, summing the query
// heads of a group), one per query tile (dq); both recompute the scores from q, k and lse.
// row_scratch: B * H * T floats of device memory the mma kernels use for dO . O per row (null:
// they allocate their own, stream-ordered).
void AttentionBackward(void* dq, void* dk, void* dv, const void* dout, const void* q, const void* k,
                       const void* v, const void* out, const float* lse, const int64_t* key_mask,
                       const AttentionShape& shape, DType dtype, cudaStream_t stream,
                       AttentionImpl impl = AttentionImpl::kAuto, float* row_scratch = nullptr);

// --- swiglu.cu
// y[N] = silu(gate) * up (gelu: gelu_tanh(gate) * up, Gemma's GeGLU); the backward writes dgate
// and dup.
void SwiGluForward(void* y, const void* gate, const void* up, int64_t n, DType dtype,
                   cudaStream_t stream, bool gelu = false);
void SwiGluBackward(void* dgate, void* dup, const void* dy, const void* gate, const void* up,
                    int64_t n, DType dtype, cudaStream_t stream, bool gelu = false);

// --- cross_entropy.cu
// logits[N,V] (`dtype`), labels[N]. lse[N] =, row_loss[N] = lse - logit[label] (0 for ignored
// rows), sum_count[0] = the sum of row losses and sum_count[1] = the number of counted rows (f64,
// summed in a fixed order), loss[0] = the sum, or with `mean` the sum / count (NaN when no row
// counts, as PyTorch). Each row is read in one pass with an online max; the probabilities are never
// stored. A label outside [0, V) that is not ignore_index gives a NaN loss.
void CrossEntropyForward(float* loss, float* lse, float* row_loss, double* sum_count,
                         const void* logits, const int64_t* labels, int64_t n, int64_t v,
                         int64_t ignore_index, bool mean, DType dtype, cudaStream_t stream);
// dlogits[N,V] (`dtype`) = (softmax(logits) - onehot(label)) * scale, 0 for ignored rows, where
// scale = grad_scale * (*dloss, when dloss is not null) / (the number of counted rows, with
// `mean`). dloss is a device scalar (the loss's incoming gradient); `scratch` is one device float.
void CrossEntropyBackward(void* dlogits, const void* logits, const int64_t* labels,
                          const float* lse, int64_t n, int64_t v, int64_t ignore_index,
                          float grad_scale, const float* dloss, bool mean, float* scratch,
                          DType dtype, cudaStream_t stream);

// --- reduce.cu
// out[outer, inner] = sum over r of x[outer, r, inner], f32 accumulation, one dtype.
void SumMiddle(void* out, const void* x, int64_t outer, int64_t r, int64_t inner, DType dtype,
               cudaStream_t stream);
// *flag (device memory) = 1 where any of x[n] (f32) is inf or NaN; left as it is otherwise.
void FlagNonFinite(int* flag, const float* x, int64_t n, cudaStream_t stream);
// *out (device memory, f64) += the sum of the squares of x[n] (f32), accumulated in f64.
void SumOfSquares(double* out, const float* x, int64_t n, cudaStream_t stream);

// --- adamw.cu
// Fused multi-tensor AdamW (torch.optim.AdamW semantics, as the CPU AdamWStep) over a list of
// tensors in as few launches as their dtypes allow: param, m, v are f32 (master weights and
// states); grad is grad_type (f32, bf16, f16); `copy`, when not null, receives the updated weight
// rounded to copy_type (the bf16 compute weights of mixed precision).
struct AdamWTensor {
  float* param;
  float* m;
  float* v;
  const void* grad;
  DType grad_type;
  void* copy;
  DType copy_type;
  int64_t n;
};
void AdamWStep(const AdamWTensor* tensors, int count, const AdamWParams& p, cudaStream_t stream);

}  // namespace moreh::kernels::cuda
