// rms_norm(x[..., C], w[C]; eps, offset=0) -> y = x rsqrt(mean(x^2) + eps) (offset + w);
// rms_norm_backward(dy, x, w; eps, offset) -> (dx, dw).
#include "kernels/cpu/cpu_kernels.h"
#include "ops/op.h"

namespace moreh::ops {
namespace {
void CheckNorm(const ValueInfo& x, const ValueInfo& w) {
  MOREH_CHECK(IsFloating(x.dtype) && x.dtype == w.dtype, "x and weight must share a float dtype");
  MOREH_CHECK(!x.shape.empty() && w.shape.size() == 1 && w.shape[0] == x.shape.back(),
              "weight must be [C] with C = x's last dimension");
}
// offset=1: Gemma's norms scale by (1 + w), the weight stored as an offset from one.
float Offset(const Attrs& a) {
  return static_cast<float>(a.Has("offset") ? a.GetFloat("offset") : 0.0);
}
}  // namespace

const OpDef kRmsNormDef = {
    .kind = OpKind::kRmsNorm,
    .min_inputs = 2,
    .max_inputs = 2,
    .infer =
        [](const InfoList& in, const Attrs& a) {
          CheckNorm(*in[0], *in[1]);
          a.GetFloat("eps");
          return std::vector<ValueInfo>{*in[0]};
        },
    .cost =
        [](const InfoList& in, const std::vector<ValueInfo>& out, const Attrs&) {
          return Cost{4.0 * Numel(in[0]->shape), BytesOf(in, out)};
        },
    .grad =
        [](GraphBuilder& b, const Node& n, std::span<const int> g) {
          if (g[0] < 0) return std::vector<int>{-1, -1};
          return b.Emit(OpKind::kRmsNormBackward, {g[0], n.inputs[0], n.inputs[1]}, n.attrs);
        },
    .kernels = {[](std::span<const Tensor> in, std::span<Tensor> out, const Attrs& a) {
      const Tensor x = AsF32(in[0]), w = AsF32(in[1]);
      const int64_t c = x.shape().back();
      WriteF32(out[0], [&](float* y) {
        kernels::cpu::RmsNormForward(y, x.data<float>(), w.data<float>(), x.numel() / c, c,
                                     static_cast<float>(a.GetFloat("eps")), Offset(a));
      });
    }},
};

const OpDef kRmsNormBackwardDef = {
    .kind = OpKind::kRmsNormBackward,
    .min_inputs = 3,
    .max_inputs = 3,
    .infer =
        [](const InfoList& in, const Attrs&) {
          CheckNorm(*in[1], *in[2]);
          MOREH_CHECK(*in[0] == *in[1], "dy must match x");
          return std::vector<ValueInfo>{*in[1], *in[2]};
        },
    .cost =
        [](const InfoList& in, const std::vector<ValueInfo>& out, const Attrs&) {
          return Cost{8.0 * Numel(in[0]->shape), BytesOf(in, out)};
        },
    .grad = nullptr,
    .kernels = {[](std::span<const Tensor> in, std::span<Tensor> out, const Attrs& a) {
      const Tensor dy = AsF32(in[0]), x = AsF32(in[1]), w = AsF32(in[2]);
      const int64_t c = x.shape().back();
      WriteF32(out[0], [&](float* dx) {
        WriteF32(out[1], [&](float* dw) {
          kernels::cpu::RmsNormBackward(dx, dw, dy.data<float>(), x.data<float>(), w.data<float>(),
                                        x.numel() / c, c, static_cast<float>(a.GetFloat("eps")),
                                        Offset(a));
        });
      });
    }},
};

}  // namespace moreh::ops
