// Views: reshape(x; shape) (one dim may be -1), transpose(x; dim0, dim1), expand(x; shape) (size-1
// or new leading dims broadcast). Their outputs alias the input's buffer; no kernel runs. A kernel
// that later reads a non-contiguous view gets a compact copy from the executor.
#include "ops/op.h"

namespace moreh::ops {
namespace {
Shape ResolveShape(Shape shape, int64_t numel) {
  int infer = -1;
  int64_t known = 1;
  for (size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] == -1) {
      MOREH_CHECK(infer < 0, "more than one -1 in the shape");
      infer = static_cast<int>(i);
    } else {
      MOREH_CHECK(shape[i] >= 0, "negative dimension in the shape");
      known *= shape[i];
    }
  }
  if (infer >= 0) {
    MOREH_CHECK(known > 0 && numel % known == 0, "cannot infer -1 for {} elements", numel);
    shape[infer] = numel / known;
  }
  MOREH_CHECK(Numel(shape) == numel, "{} elements cannot take shape {}", numel,
              ShapeToString(shape));
  return shape;
}

Cost NoCost(const InfoList&, const std::vector<ValueInfo>&, const Attrs&) { return Cost{}; }

std::vector<int> ExpandGrad(GraphBuilder& b, int g, const Shape in, const Shape out) {
  std::vector<int64_t> axes;
  const size_t lead = out.size() - in.size();
  for (size_t i = 0; i < out.size(); ++i) {
    if (i < lead || (in[i - lead] == 1 && out[i] != 1)) axes.push_back(static_cast<int64_t>(i));
  }
  if (axes.empty()) return {b.Reshape(g, in)};
  const int s = b.Emit1(OpKind::kSum, {g}, {{"axes", axes}, {"keepdim", int64_t{1}}});
  return {b.Reshape(s, in)};
}
}  // namespace

const OpDef kReshapeDef = {
    .kind = OpKind::kReshape,
    .min_inputs = 1,
    .max_inputs = 1,
    .infer =
        [](const InfoList& in, const Attrs& a) {
          return std::vector<ValueInfo>{
              {in[0]->dtype, ResolveShape(a.GetInts("shape"), Numel(in[0]->shape))}};
        },
    .cost = NoCost,
    .grad =
        [](GraphBuilder& b, const Node& n, std::span<const int> g) {
          if (g[0] < 0) return std::vector<int>{-1};
          return std::vector<int>{b.Reshape(g[0], b.info(n.inputs[0]).shape)};
        },
    .view = [](const Tensor& in, const Attrs&,
               const ValueInfo& out) { return in.Contiguous().View(out.shape); },
};

const OpDef kTransposeDef = {
    .kind = OpKind::kTranspose,
    .min_inputs = 1,
    .max_inputs = 1,
    .infer =
        [](const InfoList& in, const Attrs& a) {
          const int rank = static_cast<int>(in[0]->shape.size());
          const int d0 = NormalizeAxis(a.GetInt("dim0"), rank);
          const int d1 = NormalizeAxis(a.GetInt("dim1"), rank);
          MOREH_CHECK(d0 >= 0 && d1 >= 0, "axes ({}, {}) out of range for rank {}",
                      a.GetInt("dim0"), a.GetInt("dim1"), rank);
          ValueInfo o = *in[0];
          std::swap(o.shape[d0], o.shape[d1]);
          return std::vector<ValueInfo>{o};
        },
    .cost = NoCost,
    .grad =
        [](GraphBuilder& b, const Node& n, std::span<const int> g) {
          if (g[0] < 0) return std::vector<int>{-1};
          return std::vector<int>{b.Emit1(OpKind::kTranspose, {g[0]}, n.attrs)};
        },
    .view =
        [](const Tensor& in, const Attrs& a, const ValueInfo&) {
          return in.Transpose(static_cast<int>(a.GetInt("dim0")),
                              static_cast<int>(a.GetInt("dim1")));
        },
};

const OpDef kExpandDef = {
    .kind = OpKind::kExpand,
    .min_inputs = 1,
    .max_inputs = 1,
    .infer =
        [](const InfoList& in, const Attrs& a) {
          const Shape& s = in[0]->shape;
          const Shape& t = a.GetInts("shape");
          MOREH_CHECK(t.size() >= s.size(), "cannot expand to a lower rank {}", ShapeToString(t));
          const size_t lead = t.size() - s.size();
          for (size_t i = 0; i < s.size(); ++i) {
            MOREH_CHECK(s[i] == t[lead + i] || s[i] == 1, "cannot expand to {}", ShapeToString(t));
          }
          return std::vector<ValueInfo>{{in[0]->dtype, t}};
        },
    .cost = NoCost,
    .grad =
        [](GraphBuilder& b, const Node& n, std::span<const int> g) {
          if (g[0] < 0) return std::vector<int>{-1};
          return ExpandGrad(b, g[0], b.info(n.inputs[0]).shape, b.info(n.outputs[0]).shape);
        },
    .view = [](const Tensor& in, const Attrs&,
               const ValueInfo& out) { return in.Expand(out.shape); },
};

}  // namespace moreh::ops
