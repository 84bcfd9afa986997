// sum(x; axes=[] (all), keepdim=0) and mean(x; axes, keepdim). Accumulation in f32 lanes per
// column, f64 for full-row reductions. Gradients broadcast back through expand.
#include <algorithm>
#include <set>

#include "kernels/cpu/cpu_kernels.h"
#include "ops/op.h"
#include "ops/op_helpers.h"

namespace moreh::ops {
std::vector<int> ReduceAxes(const Shape& shape, const Attrs& a) {
  const int rank = static_cast<int>(shape.size());
  std::set<int> axes;
  const std::vector<int64_t> empty;
  const std::vector<int64_t>& req = a.Has("axes") ? a.GetInts("axes") : empty;
  for (int64_t ax : req) {
    const int n = NormalizeAxis(ax, rank);
    MOREH_CHECK(n >= 0, "axis {} out of range for rank {}", ax, rank);
    axes.insert(n);
  }
  if (req.empty()) {
    for (int i = 0; i < rank; ++i) axes.insert(i);
  }
  return {axes.begin(), axes.end()};
}

namespace {
Shape ReducedShape(const Shape& shape, const std::vector<int>& axes, bool keepdim) {
  Shape out;
  for (int i = 0; i < static_cast<int>(shape.size()); ++i) {
    const bool red = std::find(axes.begin(), axes.end(), i) != axes.end();
    if (!red)
      out.push_back(shape[i]);
    else if (keepdim)
      out.push_back(1);
  }
  return out;
}

std::vector<ValueInfo> InferReduce(const InfoList& in, const Attrs& a) {
  MOREH_CHECK(IsFloating(in[0]->dtype), "input must be a float tensor");
  return {{in[0]->dtype,
           ReducedShape(in[0]->shape, ReduceAxes(in[0]->shape, a), a.GetInt("keepdim", 0) != 0)}};
}

Cost ReduceCost(const InfoList& in, const std::vector<ValueInfo>& out, const Attrs&) {
  return Cost{static_cast<double>(Numel(in[0]->shape)), BytesOf(in, out)};
}

std::vector<int> ReduceGrad(GraphBuilder& b, const Node& n, int g, double scale) {
  const Shape xs = b.info(n.inputs[0]).shape;
  const std::vector<int> axes = ReduceAxes(xs, n.attrs);
  int d = b.Reshape(g, ReducedShape(xs, axes, true));
  d = b.Emit1(OpKind::kExpand, {d}, {{"shape", xs}});
  if (scale != 1.0) d = b.Emit1(OpKind::kScale, {d}, {{"scale", scale}});
  return {d};
}

void ReduceKernel(std::span<const Tensor> in, std::span<Tensor> out, const Attrs& a, bool mean) {
  const std::vector<int> axes = ReduceAxes(in[0].shape(), a);
  Tensor s = SumAxes(in[0], axes, kernels::cpu::SumMiddle);
  if (mean) {
    const int64_t n = ReducedCount(in[0].shape(), axes);
    float* p = s.data<float>();
    const float inv = n > 0 ? 1.0f / static_cast<float>(n) : 0.0f;
    for (int64_t i = 0; i < s.numel(); ++i) p[i] = n > 0 ? p[i] * inv : std::nanf("");
  }
  out[0].CopyFrom(s.View(out[0].shape()));
}
}  // namespace

Tensor SumAxes(const Tensor& x, const std::vector<int>& axes, SumMiddleFn sum_middle) {
  Tensor cur = AsF32(x);
  Shape shape = cur.shape();
  for (auto it = axes.rbegin(); it != axes.rend(); ++it) {
    const int ax = *it;
    int64_t outer = 1, inner = 1;
    for (int i = 0; i < ax; ++i) outer *= shape[i];
    for (size_t i = ax + 1; i < shape.size(); ++i) inner *= shape[i];
    Shape next = shape;
    next[ax] = 1;
    Tensor r = Tensor::Empty(next, DType::kF32, x.allocator());
    sum_middle(r.data<float>(), cur.data<float>(), outer, shape[ax], inner);
    cur = r;
    shape = next;
  }
  return cur;
}

int64_t ReducedCount(const Shape& shape, const std::vector<int>& axes) {
  int64_t n = 1;
  for (int ax : axes) n *= shape[ax];
  return n;
}

const OpDef kSumDef = {
    .kind = OpKind::kSum,
    .min_inputs = 1,
    .max_inputs = 1,
    .infer = InferReduce,
    .cost = ReduceCost,
    .grad =
        [](GraphBuilder& b, const Node& n, std::span<const int> g) {
          if (g[0] < 0) return std::vector<int>{-1};
          return ReduceGrad(b, n, g[0], 1.0);
        },
    .kernels = {[](std::span<const Tensor> in, std::span<Tensor> out, const Attrs& a) {
      ReduceKernel(in, out, a, false);
    }},
};

const OpDef kMeanDef = {
    .kind = OpKind::kMean,
    .min_inputs = 1,
    .max_inputs = 1,
    .infer = InferReduce,
    .cost = ReduceCost,
    .grad =
        [](GraphBuilder& b, const Node& n, std::span<const int> g) {
          if (g[0] < 0) return std::vector<int>{-1};
          const Shape xs = b.info(n.inputs[0]).shape;
          const int64_t cnt = ReducedCount(xs, ReduceAxes(xs, n.attrs));
          return ReduceGrad(b, n, g[0], cnt > 0 ? 1.0 / static_cast<double>(cnt) : 0.0);
        },
    .kernels = {[](std::span<const Tensor> in, std::span<Tensor> out, const Attrs& a) {
      ReduceKernel(in, out, a, true);
    }},
};

}  // namespace moreh::ops
