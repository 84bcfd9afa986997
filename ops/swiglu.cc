// swiglu(gate, up; activation="silu") = act(gate) * up, act silu (SwiGLU) or gelu_tanh (GeGLU,
// Gemma); swiglu_backward(dy, gate, up; the same attrs) -> (dgate, dup).
#include "kernels/cpu/cpu_kernels.h"
#include "ops/op.h"

namespace moreh::ops {
namespace {
bool Gelu(const Attrs& a) {
  const std::string act = a.Has("activation") ? a.GetString("activation") : "silu";
  MOREH_CHECK(act == "silu" || act == "gelu_tanh", "swiglu: activation '{}' (silu or gelu_tanh)",
              act);
  return act == "gelu_tanh";
}
}  // namespace

const OpDef kSwiGluDef = {
    .kind = OpKind::kSwiGlu,
    .min_inputs = 2,
    .max_inputs = 2,
    .infer =
        [](const InfoList& in, const Attrs& a) {
          Gelu(a);
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
          return b.Emit(OpKind::kSwiGluBackward, {g[0], n.inputs[0], n.inputs[1]}, n.attrs);
        },
    .kernels = {[](std::span<const Tensor> in, std::span<Tensor> out, const Attrs& a) {
      const Tensor gate = AsF32(in[0]), up = AsF32(in[1]);
      WriteF32(out[0], [&](float* y) {
        (Gelu(a) ? kernels::cpu::GeGluForward : kernels::cpu::SwiGluForward)(
            y, gate.data<float>(), up.data<float>(), gate.numel());
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
    .kernels = {[](std::span<const Tensor> in, std::span<Tensor> out, const Attrs& a) {
      const Tensor dy = AsF32(in[0]), gate = AsF32(in[1]), up = AsF32(in[2]);
      WriteF32(out[0], [&](float* dg) {
        WriteF32(out[1], [&](float* du) {
          (Gelu(a) ? kernels::cpu::GeGluBackward : kernels::cpu::SwiGluBackward)(
              dg, du, dy.data<float>(), gate.data<float>(), up.data<float>(), gate.numel());
        });
      });
    }},
};

}  // namespace moreh::ops
