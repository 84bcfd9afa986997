// matmul(a, b; trans_a, trans_b) -> [..., M, N]
//   a: [..., M, K] ([..., K, M] when trans_a); b: [K, N] ([N, K] when trans_b), shared by every
//   batch entry, or batched with a's leading dims. linear(x, w) = matmul(x, w, trans_b=1).
// A 2-D b with a batched, untransposed a runs as one GEMM over all rows.
#include "kernels/cpu/cpu_kernels.h"
#include "ops/op.h"
#include "ops/op_helpers.h"

namespace moreh::ops {

MatMulDims GetMatMulDims(const Shape& a, const Shape& b, bool ta, bool tb) {
  const size_t ra = a.size(), rb = b.size();
  MatMulDims d;
  d.m = ta ? a[ra - 1] : a[ra - 2];
  d.k = ta ? a[ra - 2] : a[ra - 1];
  d.n = tb ? b[rb - 2] : b[rb - 1];
  d.batch = Numel(Shape(a.begin(), a.end() - 2));
  d.b_batched = rb > 2;
  return d;
}

const OpDef kMatMulDef = {
    .kind = OpKind::kMatMul,
    .min_inputs = 2,
    .max_inputs = 2,
    .infer =
        [](const InfoList& in, const Attrs& at) {
          const Shape &a = in[0]->shape, &b = in[1]->shape;
          const bool ta = at.GetInt("trans_a", 0), tb = at.GetInt("trans_b", 0);
          MOREH_CHECK(in[0]->dtype == in[1]->dtype && IsFloating(in[0]->dtype),
                      "operands must have the same float dtype");
          MOREH_CHECK(a.size() >= 2 && b.size() >= 2, "operands must be at least 2-D");
          MOREH_CHECK(b.size() == 2 || b.size() == a.size(), "b must be 2-D or have a's rank");
          if (b.size() > 2) {
            MOREH_CHECK(Shape(a.begin(), a.end() - 2) == Shape(b.begin(), b.end() - 2),
                        "batch dimensions differ");
          }
          MOREH_CHECK(!(ta && a.size() > 2 && b.size() == 2),
                      "trans_a with a batched a needs a batched b");
          const MatMulDims d = GetMatMulDims(a, b, ta, tb);
          const int64_t kb = tb ? b[b.size() - 1] : b[b.size() - 2];
          MOREH_CHECK(d.k == kb, "inner dimensions differ ({} vs {})", d.k, kb);
          Shape out(a.begin(), a.end() - 2);
          out.push_back(d.m);
          out.push_back(d.n);
          return std::vector<ValueInfo>{{in[0]->dtype, out}};
        },
    .cost =
        [](const InfoList& in, const std::vector<ValueInfo>& out, const Attrs& at) {
          const MatMulDims d = GetMatMulDims(in[0]->shape, in[1]->shape, at.GetInt("trans_a", 0),
                                             at.GetInt("trans_b", 0));
          return Cost{2.0 * d.batch * d.m * d.n * d.k, BytesOf(in, out)};
        },
    .grad =
        [](GraphBuilder& bld, const Node& nd, std::span<const int> g) {
          std::vector<int> r{-1, -1};
          const int dc = g[0];
          if (dc < 0) return r;
          const int a = nd.inputs[0], b = nd.inputs[1];
          const int64_t ta = nd.attrs.GetInt("trans_a", 0), tb = nd.attrs.GetInt("trans_b", 0);
          // C = op(A) op(B)
          if (!ta) {  // dA = dC op(B)^T
            r[0] =
                bld.Emit1(OpKind::kMatMul, {dc, b}, {{"trans_a", int64_t{0}}, {"trans_b", 1 - tb}});
          } else {  // dA = op(B) dC^T
            r[0] = bld.Emit1(OpKind::kMatMul, {b, dc}, {{"trans_a", tb}, {"trans_b", int64_t{1}}});
          }
          int a2 = a, dc2 = dc;
          if (bld.info(b).shape.size() == 2 && bld.info(a).shape.size() > 2) {
            const Shape as = bld.info(a).shape;
            a2 = bld.Reshape(a, {Numel(as) / as.back(), as.back()});
            const Shape cs = bld.info(dc).shape;
            dc2 = bld.Reshape(dc, {Numel(cs) / cs.back(), cs.back()});
          }
          if (!tb) {  // dB = op(A)^T dC
            r[1] = bld.Emit1(OpKind::kMatMul, {a2, dc2},
                             {{"trans_a", 1 - ta}, {"trans_b", int64_t{0}}});
          } else {  // dB = dC^T op(A)
            r[1] =
                bld.Emit1(OpKind::kMatMul, {dc2, a2}, {{"trans_a", int64_t{1}}, {"trans_b", ta}});
          }
          return r;
        },
    .kernels = {[](std::span<const Tensor> in, std::span<Tensor> out, const Attrs& at) {
      const bool ta = at.GetInt("trans_a", 0), tb = at.GetInt("trans_b", 0);
      const Tensor a = AsF32(in[0]), b = AsF32(in[1]);
      const MatMulDims d = GetMatMulDims(a.shape(), b.shape(), ta, tb);
      WriteF32(out[0], [&](float* c) {
        const float* pa = a.data<float>();
        const float* pb = b.data<float>();
        const int64_t lda = ta ? d.m : d.k, ldb = tb ? d.k : d.n;
        if (!d.b_batched && !ta) {
          kernels::cpu::Gemm(false, tb, d.batch * d.m, d.n, d.k, 1.0f, pa, lda, pb, ldb, 0.0f, c,
                             d.n);
          return;
        }
        for (int64_t i = 0; i < d.batch; ++i) {
          kernels::cpu::Gemm(ta, tb, d.m, d.n, d.k, 1.0f, pa + i * d.m * d.k, lda,
                             pb + (d.b_batched ? i * d.k * d.n : 0), ldb, 0.0f, c + i * d.m * d.n,
                             d.n);
        }
      });
    }},
};

}  // namespace moreh::ops
