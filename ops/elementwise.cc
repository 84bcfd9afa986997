// add(a, b), mul(a, b): same shape, or b's shape a suffix of a's (b broadcast over a's leading
// dims); scale(x; scale) = x * scale.
#include "kernels/cpu/cpu_kernels.h"
#include "ops/op.h"

namespace moreh::ops {
namespace {
std::vector<ValueInfo> InferBinary(const InfoList& in, const Attrs&) {
  const Shape &a = in[0]->shape, &b = in[1]->shape;
  MOREH_CHECK(in[0]->dtype == in[1]->dtype && IsFloating(in[0]->dtype),
              "operands must have the same float dtype");
  MOREH_CHECK(b.size() <= a.size() && Shape(a.end() - b.size(), a.end()) == b,
              "shapes do not match (b must equal a or a suffix of it)");
  return {{in[0]->dtype, a}};
}

Cost ElementwiseCost(const InfoList& in, const std::vector<ValueInfo>& out, const Attrs&) {
  return Cost{static_cast<double>(Numel(out[0].shape)), BytesOf(in, out)};
}

template <typename F>
void BinaryKernel(std::span<const Tensor> in, std::span<Tensor> out, F f) {
  const Tensor a = AsF32(in[0]), b = AsF32(in[1]);
  WriteF32(out[0], [&](float* o) { f(o, a.data<float>(), b.data<float>(), a.numel(), b.numel()); });
}
}  // namespace

const OpDef kAddDef = {
    .kind = OpKind::kAdd,
    .min_inputs = 2,
    .max_inputs = 2,
    .infer = InferBinary,
    .cost = ElementwiseCost,
    .grad =
        [](GraphBuilder& b, const Node& n, std::span<const int> g) {
          if (g[0] < 0) return std::vector<int>{-1, -1};
          return std::vector<int>{g[0], b.ReduceToShape(g[0], b.info(n.inputs[1]).shape)};
        },
    .kernels = {[](std::span<const Tensor> in, std::span<Tensor> out, const Attrs&) {
      BinaryKernel(in, out, kernels::cpu::Add);
    }},
};

const OpDef kMulDef = {
    .kind = OpKind::kMul,
    .min_inputs = 2,
    .max_inputs = 2,
    .infer = InferBinary,
    .cost = ElementwiseCost,
    .grad =
        [](GraphBuilder& b, const Node& n, std::span<const int> g) {
          if (g[0] < 0) return std::vector<int>{-1, -1};
          const int x = n.inputs[0], y = n.inputs[1];
          const int dx = b.Emit1(OpKind::kMul, {g[0], y});
          const int dy = b.ReduceToShape(b.Emit1(OpKind::kMul, {g[0], x}), b.info(y).shape);
          return std::vector<int>{dx, dy};
        },
    .kernels = {[](std::span<const Tensor> in, std::span<Tensor> out, const Attrs&) {
      BinaryKernel(in, out, kernels::cpu::Mul);
    }},
};

const OpDef kScaleDef = {
    .kind = OpKind::kScale,
    .min_inputs = 1,
    .max_inputs = 1,
    .infer =
        [](const InfoList& in, const Attrs& a) {
          MOREH_CHECK(IsFloating(in[0]->dtype), "input must be a float tensor");
          a.GetFloat("scale");
          return std::vector<ValueInfo>{*in[0]};
        },
    .cost = ElementwiseCost,
    .grad =
        [](GraphBuilder& b, const Node& n, std::span<const int> g) {
          if (g[0] < 0) return std::vector<int>{-1};
          return std::vector<int>{b.Emit1(OpKind::kScale, {g[0]}, n.attrs)};
        },
    .kernels = {[](std::span<const Tensor> in, std::span<Tensor> out, const Attrs& a) {
      const Tensor x = AsF32(in[0]);
      const float s = static_cast<float>(a.GetFloat("scale"));
      WriteF32(out[0], [&](float* o) { kernels::cpu::Scale(o, x.data<float>(), s, x.numel()); });
    }},
};

// softcap(x; cap) = cap * tanh(x / cap) (Gemma 2's final logits); softcap_backward(dy, y; cap)
// = dy * (1 - (y / cap)^2), from the output, so the input need not be kept.
const OpDef kSoftcapDef = {
    .kind = OpKind::kSoftcap,
    .min_inputs = 1,
    .max_inputs = 1,
    .infer =
        [](const InfoList& in, const Attrs& a) {
          MOREH_CHECK(IsFloating(in[0]->dtype), "input must be a float tensor");
          MOREH_CHECK(a.GetFloat("cap") > 0, "softcap: cap {} must be > 0", a.GetFloat("cap"));
          return std::vector<ValueInfo>{*in[0]};
        },
    .cost = ElementwiseCost,
    .grad =
        [](GraphBuilder& b, const Node& n, std::span<const int> g) {
          if (g[0] < 0) return std::vector<int>{-1};
          return std::vector<int>{b.Emit1(OpKind::kSoftcapBackward, {g[0], n.outputs[0]}, n.attrs)};
        },
    .kernels = {[](std::span<const Tensor> in, std::span<Tensor> out, const Attrs& a) {
      const Tensor x = AsF32(in[0]);
      const float cap = static_cast<float>(a.GetFloat("cap"));
      WriteF32(out[0],
               [&](float* o) { kernels::cpu::Softcap(o, x.data<float>(), cap, x.numel()); });
    }},
};

const OpDef kSoftcapBackwardDef = {
    .kind = OpKind::kSoftcapBackward,
    .min_inputs = 2,
    .max_inputs = 2,
    .infer =
        [](const InfoList& in, const Attrs& a) {
          MOREH_CHECK(*in[0] == *in[1] && IsFloating(in[0]->dtype),
                      "softcap_backward: dy and y must have the same float dtype and shape");
          MOREH_CHECK(a.GetFloat("cap") > 0, "softcap: cap {} must be > 0", a.GetFloat("cap"));
          return std::vector<ValueInfo>{*in[0]};
        },
    .cost = ElementwiseCost,
    .grad = nullptr,
    .kernels = {[](std::span<const Tensor> in, std::span<Tensor> out, const Attrs& a) {
      const Tensor dy = AsF32(in[0]), y = AsF32(in[1]);
      const float cap = static_cast<float>(a.GetFloat("cap"));
      WriteF32(out[0], [&](float* o) {
        kernels::cpu::SoftcapBackward(o, dy.data<float>(), y.data<float>(), cap, dy.numel());
      });
    }},
};

}  // namespace moreh::ops
