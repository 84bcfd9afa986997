// embedding(weight[V,C], ids[...] int) -> [..., C]; its gradient is embedding_backward, a
// scatter-add: embedding_backward(dout[..., C], ids[...]; num_embeddings=V) -> [V, C].
#include "kernels/cpu/cpu_kernels.h"
#include "ops/op.h"
#include "ops/op_helpers.h"

namespace moreh::ops {
void CheckIds(OpKind op, const Tensor& ids, int64_t v) {
  const int64_t* p = ids.data<int64_t>();
  for (int64_t i = 0; i < ids.numel(); ++i) {
    MOREH_CHECK(p[i] >= 0 && p[i] < v, "{}: index {} at position {} is out of range [0, {})",
                OpName(op), p[i], i, v);
  }
}

const OpDef kEmbeddingDef = {
    .kind = OpKind::kEmbedding,
    .min_inputs = 2,
    .max_inputs = 2,
    .infer =
        [](const InfoList& in, const Attrs&) {
          MOREH_CHECK(in[0]->shape.size() == 2 && IsFloating(in[0]->dtype),
                      "embedding: weight must be a 2-D float tensor");
          MOREH_CHECK(IsInteger(in[1]->dtype), "embedding: ids must be i32 or i64");
          Shape s = in[1]->shape;
          s.push_back(in[0]->shape[1]);
          return std::vector<ValueInfo>{{in[0]->dtype, s}};
        },
    .cost =
        [](const InfoList& in, const std::vector<ValueInfo>& out, const Attrs&) {
          return Cost{0, BytesOf(in, out)};
        },
    .grad =
        [](GraphBuilder& b, const Node& n, std::span<const int> g) {
          if (g[0] < 0) return std::vector<int>{-1, -1};
          const int dw = b.Emit1(OpKind::kEmbeddingBackward, {g[0], n.inputs[1]},
                                 {{"num_embeddings", b.info(n.inputs[0]).shape[0]}});
          return std::vector<int>{dw, -1};
        },
    .kernels = {[](std::span<const Tensor> in, std::span<Tensor> out, const Attrs&) {
      const Tensor w = AsF32(in[0]), ids = AsI64(in[1]);
      CheckIds(OpKind::kEmbedding, ids, w.size(0));
      WriteF32(out[0], [&](float* o) {
        kernels::cpu::EmbeddingForward(o, w.data<float>(), ids.data<int64_t>(), ids.numel(),
                                       w.size(1));
      });
    }},
};

const OpDef kEmbeddingBackwardDef = {
    .kind = OpKind::kEmbeddingBackward,
    .min_inputs = 2,
    .max_inputs = 2,
    .infer =
        [](const InfoList& in, const Attrs& a) {
          MOREH_CHECK(IsInteger(in[1]->dtype), "embedding_backward: ids must be i32 or i64");
          const Shape& ds = in[0]->shape;
          MOREH_CHECK(ds.size() == in[1]->shape.size() + 1 &&
                          Shape(ds.begin(), ds.end() - 1) == in[1]->shape,
                      "embedding_backward: dout must be ids' shape plus channels");
          const int64_t v = a.GetInt("num_embeddings");
          MOREH_CHECK(v > 0, "embedding_backward: num_embeddings must be positive");
          return std::vector<ValueInfo>{{in[0]->dtype, {v, ds.back()}}};
        },
    .cost =
        [](const InfoList& in, const std::vector<ValueInfo>& out, const Attrs&) {
          return Cost{static_cast<double>(Numel(in[0]->shape)), BytesOf(in, out)};
        },
    .grad = nullptr,
    .kernels = {[](std::span<const Tensor> in, std::span<Tensor> out, const Attrs& a) {
      const Tensor d = AsF32(in[0]), ids = AsI64(in[1]);
      const int64_t v = a.GetInt("num_embeddings");
      CheckIds(OpKind::kEmbeddingBackward, ids, v);
      WriteF32(out[0], [&](float* o) {
        kernels::cpu::EmbeddingBackward(o, d.data<float>(), ids.data<int64_t>(), ids.numel(),
                                        d.shape().back(), v);
      });
    }},
};

}  // namespace moreh::ops
