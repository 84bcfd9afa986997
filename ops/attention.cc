// attention(q[B,T,H,D], k[B,S,Hkv,D], v[B,S,Hkv,D], [key_mask[B,S]]; causal=1, scale=1/sqrt(D),
//           window=0 (sliding window: query i sees keys i - window < j <= i))
//   -> (out[B,T,H,D], lse[B,H,T] f32)
// Fused, flash-attention style: no T x S score matrix is ever stored; lse is saved for the
// backward. attention_backward(dout, q, k, v, out, lse, [key_mask]; same attrs) -> (dq, dk, dv),
// recomputing the scores. key_mask: nonzero = attend (Hugging Face attention_mask); a query row
// that sees no key outputs zeros.
#include <cmath>

#include "kernels/cpu/cpu_kernels.h"
#include "ops/op.h"
#include "ops/op_helpers.h"

namespace moreh::ops {
namespace {
void CheckQkv(const ValueInfo& q, const ValueInfo& k, const ValueInfo& v, const ValueInfo* mask,
              bool causal, int64_t window) {
  MOREH_CHECK(window >= 0 && (window == 0 || causal),
              "attention: window {} must be >= 0, and a window needs the causal mask", window);
  MOREH_CHECK(IsFloating(q.dtype) && q.dtype == k.dtype && q.dtype == v.dtype,
              "q, k, v must share a float dtype");
  MOREH_CHECK(q.shape.size() == 4 && k.shape.size() == 4 && k.shape == v.shape,
              "q must be [B, T, H, D] and k, v the same [B, S, Hkv, D]");
  MOREH_CHECK(q.shape[0] == k.shape[0] && q.shape[3] == k.shape[3], "batch or head size differ");
  MOREH_CHECK(k.shape[2] > 0 && q.shape[2] % k.shape[2] == 0,
              "query heads ({}) must be a multiple of key/value heads ({})", q.shape[2],
              k.shape[2]);
  MOREH_CHECK(!causal || q.shape[1] == k.shape[1], "causal attention needs T == S");
  if (mask) {
    MOREH_CHECK(mask->shape == Shape({k.shape[0], k.shape[1]}),
                "key_mask must be [B, S] = [{}, {}]", k.shape[0], k.shape[1]);
  }
}

Cost AttnCost(const InfoList& in, const std::vector<ValueInfo>& out, const Attrs& a, double mult) {
  const Shape &q = in[0]->shape, &k = in[1]->shape;
  double pairs = static_cast<double>(q[0]) * q[2] * q[1] * k[1];
  if (a.GetInt("causal", 1)) {
    // Row i sees min(i + 1, window) keys.
    const double t = static_cast<double>(q[1]), w = static_cast<double>(a.GetInt("window", 0));
    const double seen = w > 0 && w < t ? w * (w + 1) / 2 + (t - w) * w : t * (t + 1) / 2;
    pairs = static_cast<double>(q[0]) * q[2] * seen;
  }
  return Cost{mult * pairs * q[3], BytesOf(in, out)};
}
}  // namespace

kernels::cpu::AttentionShape AttentionShapeOf(const Shape& q, const Shape& k, const Attrs& a) {
  return {q[0],
          q[1],
          k[1],
          q[2],
          k[2],
          q[3],
          a.GetInt("causal", 1) != 0,
          static_cast<float>(a.Has("scale") ? a.GetFloat("scale")
                                            : 1.0 / std::sqrt(static_cast<double>(q[3]))),
          a.GetInt("window", 0),
          static_cast<float>(a.Has("softcap") ? a.GetFloat("softcap") : 0.0)};
}

const OpDef kAttentionDef = {
    .kind = OpKind::kAttention,
    .min_inputs = 3,
    .max_inputs = 4,
    .infer =
        [](const InfoList& in, const Attrs& a) {
          CheckQkv(*in[0], *in[1], *in[2], in.size() > 3 ? in[3] : nullptr, a.GetInt("causal", 1),
                   a.GetInt("window", 0));
          const Shape& q = in[0]->shape;
          return std::vector<ValueInfo>{*in[0], {DType::kF32, {q[0], q[2], q[1]}}};
        },
    // QK^T and PV: 2 GEMM-like products of 2 FLOPs per multiply-add.
    .cost = [](const InfoList& in, const std::vector<ValueInfo>& out,
               const Attrs& a) { return AttnCost(in, out, a, 4.0); },
    .grad =
        [](GraphBuilder& b, const Node& n, std::span<const int> g) {
          if (g[0] < 0) return std::vector<int>(n.inputs.size(), -1);
          std::vector<int> ins{g[0],        n.inputs[0],  n.inputs[1],
                               n.inputs[2], n.outputs[0], n.outputs[1]};
          if (n.inputs.size() > 3) ins.push_back(n.inputs[3]);
          std::vector<int> r = b.Emit(OpKind::kAttentionBackward, ins, n.attrs);
          if (n.inputs.size() > 3) r.push_back(-1);
          return r;
        },
    .kernels = {[](std::span<const Tensor> in, std::span<Tensor> out, const Attrs& a) {
      const Tensor q = AsF32(in[0]), k = AsF32(in[1]), v = AsF32(in[2]);
      const Tensor mask = in.size() > 3 ? AsI64(in[3]) : Tensor();
      const auto sh = AttentionShapeOf(q.shape(), k.shape(), a);
      WriteF32(out[0], [&](float* o) {
        kernels::cpu::AttentionForward(o, out[1].data<float>(), q.data<float>(), k.data<float>(),
                                       v.data<float>(),
                                       mask.defined() ? mask.data<int64_t>() : nullptr, sh);
      });
    }},
};

const OpDef kAttentionBackwardDef = {
    .kind = OpKind::kAttentionBackward,
    .min_inputs = 6,
    .max_inputs = 7,
    .infer =
        [](const InfoList& in, const Attrs& a) {
          CheckQkv(*in[1], *in[2], *in[3], in.size() > 6 ? in[6] : nullptr, a.GetInt("causal", 1),
                   a.GetInt("window", 0));
          MOREH_CHECK(*in[0] == *in[1] && *in[4] == *in[1], "dout and out must match q");
          const Shape& q = in[1]->shape;
          MOREH_CHECK(in[5]->dtype == DType::kF32 && in[5]->shape == Shape({q[0], q[2], q[1]}),
                      "lse must be f32[B, H, T]");
          return std::vector<ValueInfo>{*in[1], *in[2], *in[3]};
        },
    // Recomputed QK^T, dV, dP, dQ, dK: 5 products.
    .cost =
        [](const InfoList& in, const std::vector<ValueInfo>& out, const Attrs& a) {
          return AttnCost({in[1], in[2]}, out, a, 10.0);
        },
    .grad = nullptr,
    .kernels = {[](std::span<const Tensor> in, std::span<Tensor> out, const Attrs& a) {
      const Tensor dout = AsF32(in[0]), q = AsF32(in[1]), k = AsF32(in[2]), v = AsF32(in[3]),
                   o = AsF32(in[4]), lse = AsF32(in[5]);
      const Tensor mask = in.size() > 6 ? AsI64(in[6]) : Tensor();
      const auto sh = AttentionShapeOf(q.shape(), k.shape(), a);
      WriteF32(out[0], [&](float* dq) {
        WriteF32(out[1], [&](float* dk) {
          WriteF32(out[2], [&](float* dv) {
            kernels::cpu::AttentionBackward(dq, dk, dv, dout.data<float>(), q.data<float>(),
                                            k.data<float>(), v.data<float>(), o.data<float>(),
                                            lse.data<float>(),
                                            mask.defined() ? mask.data<int64_t>() : nullptr, sh);
          });
        });
      });
    }},
};

}  // namespace moreh::ops
