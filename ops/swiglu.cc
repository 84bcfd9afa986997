// swiglu(gate, up) = silu(gate) * up; swiglu_backward(dy, gate, up) -> (dgate, dup).
#include "kernels/cpu/cpu_kernels.h"
#include "ops/op.h"

namespace moreh::ops {

const OpDef kSwiGluDef = {
    .kind = OpKind::kSwiGlu,
    .min_inputs = 2,
    .max_inputs = 2,
    .infer =
        [](const InfoList& in, const Attrs&) {
          MOREH_CHECK(*in[0] == *in[1] && IsFloating(in[0]->dtype),
                      "gate and up must have the same float dtype and shape");
          return std::vector<ValueInfo>{*in[0]};
        },
    .cost =
        [](const InfoList& in, const std::vector<ValueInfo>& out, const Attrs&) {
          return Cost{6.0 * Numel(in[0]->shape), BytesOf(in, out)};
        },
    .grad =
        [](GraphBuilder& b, const Node& n, std::span<const int> g) {
          if (g[0] < 0) return std::vector<int>{-1, -1};
          return b.Emit(OpKind::kSwiGluBackward, {g[0], n.inputs[0], n.inputs[1]});
        },
    .kernels = {[](std::span<const Tensor> in, std::span<Tensor> out, const Attrs&) {
      const Tensor gate = AsF32(in[0]), up = AsF32(in[1]);
      WriteF32(out[0], [&](float* y) {
        kernels::cpu::SwiGluForward(y, gate.data<float>(), up.data<float>(), gate.numel());
      });
    }},
};

const OpDef kSwiGluBackwardDef = {
    .kind = OpKind::kSwiGluBackward,
    .min_inputs = 3,
    .max_inputs = 3,
    .infer =
        [](const InfoList& in, const Attrs&) {
          MOREH_CHECK(*in[0] == *in[1] && *in[1] == *in[2] && IsFloating(in[0]->dtype),
                      "dy, gate and up must have the same float dtype and shape");
          return std::vector<ValueInfo>{*in[1], *in[2]};
        },
    .cost =
        [](const InfoList& in, const std::vector<ValueInfo>& out, const Attrs&) {
          return Cost{10.0 * Numel(in[0]->shape), BytesOf(in, out)};
        },
    .grad = nullptr,
    .kernels = {[](std::span<const Tensor> in, std::span<Tensor> out, const Attrs&) {
      const Tensor dy = AsF32(in[0]), gate = AsF32(in[1]), up = AsF32(in[2]);
      WriteF32(out[0], [&](float* dg) {
        WriteF32(out[1], [&](float* du) {
          kernels::cpu::SwiGluBackward(dg, du, dy.data<float>(), gate.data<float>(),
                                       up.data<float>(), gate.numel());
        });
      });
    }},
};

}  // namespace moreh::ops
