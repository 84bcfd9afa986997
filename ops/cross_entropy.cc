// cross_entropy(logits[..., V], labels[...] int; ignore_index=-100, shift=0, reduction_sum=0) ->
// (loss[] f32, lse[N] f32) Mean over the rows whose label is not ignore_index (NaN when there are
// none, as in PyTorch); with reduction_sum=1 their sum (pipeline stages weight micro-batches).
// shift=1 is Hugging Face's causal-LM shift: logits [B, T, V] at t are scored against
// labels[b, t + 1]; position T-1 is ignored. Fused log-softmax; probabilities are never stored.
// cross_entropy_backward(dloss, logits, labels, lse; same attrs) -> dlogits.
#include <limits>

#include "kernels/cpu/cpu_kernels.h"
#include "ops/op.h"
#include "ops/op_helpers.h"

namespace moreh::ops {
namespace {
void CheckCe(const ValueInfo& logits, const ValueInfo& labels, bool shift) {
  MOREH_CHECK(IsFloating(logits.dtype), "logits must be a float tensor");
  MOREH_CHECK(IsInteger(labels.dtype), "labels must be i32 or i64");
  MOREH_CHECK(logits.shape.size() == labels.shape.size() + 1 &&
                  Shape(logits.shape.begin(), logits.shape.end() - 1) == labels.shape,
              "labels must have logits' shape without the last (vocabulary) dimension");
  MOREH_CHECK(!shift || labels.shape.size() == 2, "shift needs labels [B, T]");
}

// The label each logits row is scored against, validated against [0, V).
}  // namespace

Tensor CrossEntropyRowLabels(const Tensor& labels_in, int64_t v, const Attrs& a, OpKind op) {
  Tensor labels = AsI64(labels_in).Clone();
  const int64_t ignore = a.GetInt("ignore_index", -100);
  int64_t* p = labels.data<int64_t>();
  if (a.GetInt("shift", 0)) {
    const int64_t b = labels.size(0), t = labels.size(1);
    for (int64_t i = 0; i < b; ++i) {
      for (int64_t j = 0; j + 1 < t; ++j) p[i * t + j] = p[i * t + j + 1];
      if (t > 0) p[i * t + t - 1] = ignore;
    }
  }
  for (int64_t i = 0; i < labels.numel(); ++i) {
    MOREH_CHECK(p[i] == ignore || (p[i] >= 0 && p[i] < v),
                "{}: label {} at row {} is outside [0, {}) and is not ignore_index ({})",
                OpName(op), p[i], i, v, ignore);
  }
  return labels;
}

const OpDef kCrossEntropyDef = {
    .kind = OpKind::kCrossEntropy,
    .min_inputs = 2,
    .max_inputs = 2,
    .infer =
        [](const InfoList& in, const Attrs& a) {
          CheckCe(*in[0], *in[1], a.GetInt("shift", 0));
          return std::vector<ValueInfo>{{DType::kF32, {}}, {DType::kF32, {Numel(in[1]->shape)}}};
        },
    .cost =
        [](const InfoList& in, const std::vector<ValueInfo>& out, const Attrs&) {
          return Cost{4.0 * Numel(in[0]->shape), BytesOf(in, out)};
        },
    .grad =
        [](GraphBuilder& b, const Node& n, std::span<const int> g) {
          if (g[0] < 0) return std::vector<int>{-1, -1};
          const int d = b.Emit1(OpKind::kCrossEntropyBackward,
                                {g[0], n.inputs[0], n.inputs[1], n.outputs[1]}, n.attrs);
          return std::vector<int>{d, -1};
        },
    .kernels = {[](std::span<const Tensor> in, std::span<Tensor> out, const Attrs& a) {
      const Tensor logits = AsF32(in[0]);
      const int64_t v = logits.shape().back();
      const Tensor labels = CrossEntropyRowLabels(in[1], v, a, OpKind::kCrossEntropy);
      int64_t count = 0;
      const double total = kernels::cpu::CrossEntropyForward(
          out[1].data<float>(), logits.data<float>(), labels.data<int64_t>(), labels.numel(), v,
          a.GetInt("ignore_index", -100), &count);
      if (a.GetInt("reduction_sum", 0)) {
        out[0].data<float>()[0] = static_cast<float>(total);
      } else {
        out[0].data<float>()[0] = count > 0 ? static_cast<float>(total / static_cast<double>(count))
                                            : std::numeric_limits<float>::quiet_NaN();
      }
    }},
};

const OpDef kCrossEntropyBackwardDef = {
    .kind = OpKind::kCrossEntropyBackward,
    .min_inputs = 4,
    .max_inputs = 4,
    .infer =
        [](const InfoList& in, const Attrs& a) {
          CheckCe(*in[1], *in[2], a.GetInt("shift", 0));
          MOREH_CHECK(in[0]->shape.empty() && IsFloating(in[0]->dtype), "dloss must be a scalar");
          MOREH_CHECK(in[3]->dtype == DType::kF32 && in[3]->shape == Shape{Numel(in[2]->shape)},
                      "lse must be f32[N]");
          return std::vector<ValueInfo>{*in[1]};
        },
    .cost =
        [](const InfoList& in, const std::vector<ValueInfo>& out, const Attrs&) {
          return Cost{4.0 * Numel(in[1]->shape), BytesOf(in, out)};
        },
    .grad = nullptr,
    .kernels = {[](std::span<const Tensor> in, std::span<Tensor> out, const Attrs& a) {
      const Tensor logits = AsF32(in[1]);
      const int64_t v = logits.shape().back();
      const Tensor labels = CrossEntropyRowLabels(in[2], v, a, OpKind::kCrossEntropyBackward);
      const int64_t ignore = a.GetInt("ignore_index", -100);
      int64_t count = 0;
      const int64_t* lp = labels.data<int64_t>();
      for (int64_t i = 0; i < labels.numel(); ++i) count += lp[i] != ignore;
      const float dloss = AsF32(in[0]).data<float>()[0];
      const float scale = a.GetInt("reduction_sum", 0) ? dloss
                          : count > 0                  ? dloss / static_cast<float>(count)
                                                       : 0.0f;
      const Tensor lse = AsF32(in[3]);
      WriteF32(out[0], [&](float* d) {
        kernels::cpu::CrossEntropyBackward(d, logits.data<float>(), lp, lse.data<float>(),
                                           labels.numel(), v, ignore, scale);
      });
    }},
};

}  // namespace moreh::ops
