// The operators' CUDA kernels: each unpacks its tensors (device memory, contiguous, as the
// executor guarantees) and queues the kernels of kernels/cuda on the default stream. Shapes and
// attributes mean what they mean on the CPU (ops/<family>.cc); the CPU kernels compute in f32 and
// round on output, and so do these, on bf16/f16 tensors too.
//
// Host round trips that remain (each a small synchronous copy): the index checks of embedding and
// cross-entropy (their ids and labels are read on the host to reject bad input by name) and
// AdamW's hyper-parameters. The communicating ops (tp_*, dp_*) have no CUDA kernel yet: on GPUs
// they need NCCL (runtime/comm/nccl_collectives.h) behind the pipeline runner's hooks.
#include "ops/cuda/cuda_ops.h"

#include <cmath>
#include <mutex>

#include "kernels/cuda/cuda_kernels.h"
#include "ops/op.h"
#include "ops/op_helpers.h"

namespace moreh::ops {
namespace {

namespace gpu = kernels::cuda;
constexpr cudaStream_t kStream = nullptr;

using runtime::Allocator;
using In = std::span<const Tensor>;
using Out = std::span<Tensor>;

// `t` in dtype `dt` on its device (a converted copy when needed).
Tensor AsType(const Tensor& t, DType dt) { return t.dtype() == dt ? t : t.To(dt); }

void MatMul(In in, Out out, const Attrs& at) {
  const bool ta = at.GetInt("trans_a", 0), tb = at.GetInt("trans_b", 0);
  const Tensor& a = in[0];
  const Tensor b = AsType(in[1], a.dtype());
  const MatMulDims d = GetMatMulDims(a.shape(), b.shape(), ta, tb);
  const int64_t lda = ta ? d.m : d.k, ldb = tb ? d.k : d.n;
  const int64_t es = DTypeSize(a.dtype()), os = DTypeSize(out[0].dtype());
  auto* pa = static_cast<const char*>(a.raw_data());
  auto* pb = static_cast<const char*>(b.raw_data());
  auto* pc = static_cast<char*>(out[0].raw_data());
  if (!d.b_batched && !ta) {  // one GEMM over every leading row
    gpu::Gemm(false, tb, d.batch * d.m, d.n, d.k, 1.0f, pa, lda, pb, ldb, 0.0f, pc, d.n, a.dtype(),
              out[0].dtype(), kStream);
    return;
  }
  for (int64_t i = 0; i < d.batch; ++i) {
    gpu::Gemm(ta, tb, d.m, d.n, d.k, 1.0f, pa + i * d.m * d.k * es, lda,
              pb + (d.b_batched ? i * d.k * d.n * es : 0), ldb, 0.0f, pc + i * d.m * d.n * os, d.n,
              a.dtype(), out[0].dtype(), kStream);
  }
}

template <void (*F)(void*, const void*, const void*, int64_t, int64_t, DType, cudaStream_t)>
void Binary(In in, Out out, const Attrs&) {
  F(out[0].raw_data(), in[0].raw_data(), in[1].raw_data(), in[0].numel(), in[1].numel(),
    in[0].dtype(), kStream);
}

void Scale(In in, Out out, const Attrs& a) {
  gpu::Scale(out[0].raw_data(), in[0].raw_data(), static_cast<float>(a.GetFloat("scale")),
             in[0].numel(), in[0].dtype(), kStream);
}

void Softcap(In in, Out out, const Attrs& a) {
  gpu::Softcap(out[0].raw_data(), in[0].raw_data(), static_cast<float>(a.GetFloat("cap")),
               in[0].numel(), in[0].dtype(), kStream);
}

void SoftcapBackward(In in, Out out, const Attrs& a) {
  gpu::SoftcapBackward(out[0].raw_data(), in[0].raw_data(), in[1].raw_data(),
                       static_cast<float>(a.GetFloat("cap")), in[0].numel(), in[0].dtype(),
                       kStream);
}

void Embedding(In in, Out out, const Attrs&) {
  const Tensor& w = in[0];
  const Tensor ids = AsType(in[1], DType::kI64);
  CheckIds(OpKind::kEmbedding, ids.CopyTo(nullptr), w.size(0));
  gpu::EmbeddingForward(out[0].raw_data(), AsType(w, out[0].dtype()).raw_data(),
                        ids.data<int64_t>(), ids.numel(), w.size(1), w.size(0), out[0].dtype(),
                        kStream);
}

void EmbeddingBackward(In in, Out out, const Attrs& a) {
  const Tensor& d = in[0];
  const Tensor ids = AsType(in[1], DType::kI64);
  const int64_t v = a.GetInt("num_embeddings");
  CheckIds(OpKind::kEmbeddingBackward, ids.CopyTo(nullptr), v);
  WriteF32(out[0], [&](float* dw) {
    gpu::EmbeddingBackward(dw, d.raw_data(), ids.data<int64_t>(), ids.numel(), d.shape().back(), v,
                           d.dtype(), kStream);
  });
}

void RmsNorm(In in, Out out, const Attrs& a) {
  const Tensor& x = in[0];
  const int64_t c = x.shape().back();
  gpu::RmsNormForward(out[0].raw_data(), x.raw_data(), in[1].raw_data(), x.numel() / c, c,
                      static_cast<float>(a.GetFloat("eps")), x.dtype(), kStream,
                      static_cast<float>(a.Has("offset") ? a.GetFloat("offset") : 0.0));
}

void RmsNormBackward(In in, Out out, const Attrs& a) {
  const Tensor& x = in[1];
  const int64_t c = x.shape().back();
  WriteF32(out[1], [&](float* dw) {
    gpu::RmsNormBackward(out[0].raw_data(), dw, in[0].raw_data(), x.raw_data(), in[2].raw_data(),
                         x.numel() / c, c, static_cast<float>(a.GetFloat("eps")), x.dtype(),
                         kStream, static_cast<float>(a.Has("offset") ? a.GetFloat("offset") : 0.0));
  });
}

void Rotary(In in, Out out, const Attrs& a) {
  const Shape& s = in[0].shape();
  const std::vector<float> inv = kernels::cpu::RopeInvFreq(s[3], RopeFromAttrs(a));
  gpu::RotaryForward(out[0].raw_data(), in[0].raw_data(), s[0], s[1], s[2], s[3], inv.data(),
                     a.GetInt("position_offset", 0), a.GetInt("inverse", 0) != 0, in[0].dtype(),
                     kStream);
}

void Attention(In in, Out out, const Attrs& a) {
  const Tensor mask = in.size() > 3 ? AsType(in[3], DType::kI64) : Tensor();
  gpu::AttentionForward(out[0].raw_data(), out[1].data<float>(), in[0].raw_data(), in[1].raw_data(),
                        in[2].raw_data(), mask.defined() ? mask.data<int64_t>() : nullptr,
                        AttentionShapeOf(in[0].shape(), in[1].shape(), a), in[0].dtype(), kStream);
}

void AttentionBackward(In in, Out out, const Attrs& a) {
  const Tensor mask = in.size() > 6 ? AsType(in[6], DType::kI64) : Tensor();
  const Tensor lse = AsType(in[5], DType::kF32);
  // dO . O per query row, [B, H, T] like lse, passed from the kernels' dq pass to their dk/dv
  // pass: from the device's allocator, so the device's peak (and the planner's model) see it.
  const Tensor rows = Tensor::Empty(lse.shape(), DType::kF32, out[0].allocator());
  gpu::AttentionBackward(out[0].raw_data(), out[1].raw_data(), out[2].raw_data(), in[0].raw_data(),
                         in[1].raw_data(), in[2].raw_data(), in[3].raw_data(), in[4].raw_data(),
                         lse.data<float>(), mask.defined() ? mask.data<int64_t>() : nullptr,
                         AttentionShapeOf(in[1].shape(), in[2].shape(), a), in[1].dtype(), kStream,
                         gpu::AttentionImpl::kAuto, rows.data<float>());
}

bool Gelu(const Attrs& a) {
  return a.Has("activation") && a.GetString("activation") == "gelu_tanh";
}

void SwiGlu(In in, Out out, const Attrs& a) {
  gpu::SwiGluForward(out[0].raw_data(), in[0].raw_data(), in[1].raw_data(), in[0].numel(),
                     in[0].dtype(), kStream, Gelu(a));
}

void SwiGluBackward(In in, Out out, const Attrs& a) {
  gpu::SwiGluBackward(out[0].raw_data(), out[1].raw_data(), in[0].raw_data(), in[1].raw_data(),
                      in[2].raw_data(), in[1].numel(), in[1].dtype(), kStream, Gelu(a));
}

// The row labels checked on the host and put back on the device.
Tensor DeviceLabels(const Tensor& labels, int64_t v, const Attrs& a, OpKind op, Allocator* device) {
  return CrossEntropyRowLabels(labels.CopyTo(nullptr), v, a, op).CopyTo(device);
}

void CrossEntropy(In in, Out out, const Attrs& a) {
  const Tensor& logits = in[0];
  const int64_t v = logits.shape().back();
  Allocator* dev = out[0].allocator();
  const Tensor labels = DeviceLabels(in[1], v, a, OpKind::kCrossEntropy, dev);
  const int64_t n = labels.numel();
  Tensor rows = Tensor::Empty({n}, DType::kF32, dev);
  Tensor sum_count = Tensor::Empty({4}, DType::kF32, dev);  // two f64
  gpu::CrossEntropyForward(out[0].data<float>(), out[1].data<float>(), rows.data<float>(),
                           static_cast<double*>(sum_count.raw_data()), logits.raw_data(),
                           labels.data<int64_t>(), n, v, a.GetInt("ignore_index", -100),
                           a.GetInt("reduction_sum", 0) == 0, logits.dtype(), kStream);
}

void CrossEntropyBackward(In in, Out out, const Attrs& a) {
  const Tensor& logits = in[1];
  const int64_t v = logits.shape().back();
  Allocator* dev = out[0].allocator();
  const Tensor labels = DeviceLabels(in[2], v, a, OpKind::kCrossEntropyBackward, dev);
  const Tensor dloss = AsType(in[0], DType::kF32), lse = AsType(in[3], DType::kF32);
  Tensor scratch = Tensor::Empty({1}, DType::kF32, dev);
  gpu::CrossEntropyBackward(out[0].raw_data(), logits.raw_data(), labels.data<int64_t>(),
                            lse.data<float>(), labels.numel(), v, a.GetInt("ignore_index", -100),
                            1.0f, dloss.data<float>(), a.GetInt("reduction_sum", 0) == 0,
                            scratch.data<float>(), logits.dtype(), kStream);
}

void SumMiddleF32(float* out, const float* x, int64_t outer, int64_t r, int64_t inner) {
  gpu::SumMiddle(out, x, outer, r, inner, DType::kF32, kStream);
}

void Reduce(In in, Out out, const Attrs& a, bool mean) {
  const std::vector<int> axes = ReduceAxes(in[0].shape(), a);
  Tensor s = SumAxes(in[0], axes, SumMiddleF32);
  if (mean) {
    const int64_t n = ReducedCount(in[0].shape(), axes);
    if (n > 0) {
      Tensor scaled = Tensor::Empty(s.shape(), DType::kF32, out[0].allocator());
      gpu::Scale(scaled.raw_data(), s.raw_data(), 1.0f / static_cast<float>(n), s.numel(),
                 DType::kF32, kStream);
      s = scaled;
    } else {
      s = Tensor::Full(s.shape(), DType::kF32, std::nan(""), out[0].allocator());
    }
  }
  out[0].CopyFrom(s.View(out[0].shape()));
}

void AdamW(In in, Out out, const Attrs& a) {
  const std::vector<float> hp = in[4].ToFloats();  // [lr, step]
  const auto step = static_cast<int64_t>(hp.at(1));
  MOREH_CHECK(step >= 1, "adamw: step must be >= 1, got {}", hp[1]);
  MOREH_CHECK(out[0].dtype() == DType::kF32 && out[1].dtype() == DType::kF32 &&
                  out[2].dtype() == DType::kF32,
              "adamw: parameters and states must be f32 on CUDA (master weights)");
  const gpu::AdamWParams p{hp[0],
                           static_cast<float>(a.GetFloat("beta1")),
                           static_cast<float>(a.GetFloat("beta2")),
                           static_cast<float>(a.GetFloat("eps")),
                           static_cast<float>(a.GetFloat("weight_decay")),
                           step};
  const gpu::AdamWTensor t{out[0].data<float>(), out[1].data<float>(), out[2].data<float>(),
                           in[1].raw_data(),     in[1].dtype(),        nullptr,
                           DType::kF32,          out[0].numel()};
  gpu::AdamWStep(&t, 1, p, kStream);
}

}  // namespace

void RegisterCudaKernels() {
  static std::once_flag once;
  std::call_once(once, [] {
    const Backend b = Backend::kCuda;
    // fill and cast are Tensor operations, which work on device memory as they are.
    RegisterKernel(OpKind::kFill, b,
                   [](In, Out out, const Attrs& a) { out[0].Fill(a.GetFloat("value")); });
    RegisterKernel(OpKind::kCast, b, [](In in, Out out, const Attrs&) { out[0].CopyFrom(in[0]); });
    RegisterKernel(OpKind::kMatMul, b, MatMul);
    RegisterKernel(OpKind::kAdd, b, Binary<gpu::Add>);
    RegisterKernel(OpKind::kMul, b, Binary<gpu::Mul>);
    RegisterKernel(OpKind::kScale, b, Scale);
    RegisterKernel(OpKind::kSoftcap, b, Softcap);
    RegisterKernel(OpKind::kSoftcapBackward, b, SoftcapBackward);
    RegisterKernel(OpKind::kEmbedding, b, Embedding);
    RegisterKernel(OpKind::kEmbeddingBackward, b, EmbeddingBackward);
    RegisterKernel(OpKind::kRmsNorm, b, RmsNorm);
    RegisterKernel(OpKind::kRmsNormBackward, b, RmsNormBackward);
    RegisterKernel(OpKind::kRotary, b, Rotary);
    RegisterKernel(OpKind::kAttention, b, Attention);
    RegisterKernel(OpKind::kAttentionBackward, b, AttentionBackward);
    RegisterKernel(OpKind::kSwiGlu, b, SwiGlu);
    RegisterKernel(OpKind::kSwiGluBackward, b, SwiGluBackward);
    RegisterKernel(OpKind::kCrossEntropy, b, CrossEntropy);
    RegisterKernel(OpKind::kCrossEntropyBackward, b, CrossEntropyBackward);
    RegisterKernel(OpKind::kSum, b,
                   [](In in, Out out, const Attrs& a) { Reduce(in, out, a, false); });
    RegisterKernel(OpKind::kMean, b,
                   [](In in, Out out, const Attrs& a) { Reduce(in, out, a, true); });
    RegisterKernel(OpKind::kAdamW, b, AdamW);
  });
}

}  // namespace moreh::ops
