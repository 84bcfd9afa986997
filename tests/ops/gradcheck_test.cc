// Every differentiable op: the gradient from its rule (through autograd) against central finite
// differences of the forward, along a random direction: d/de <op(x + e*dir), r> at e = 0.
#include <gtest/gtest.h>

#include "runtime/lazy.h"
#include "tests/test_util.h"

namespace moreh {
namespace {

using runtime::Tensor;
using testing::RandomInts;
using testing::RandomTensor;

struct GradCase {
  std::string name;
  OpKind op;
  std::vector<Tensor> inputs;
  Attrs attrs;
};

std::vector<moreh::Tensor> Leaves(const std::vector<Tensor>& ins, bool requires_grad) {
  std::vector<moreh::Tensor> t;
  for (const Tensor& x : ins) {
    t.push_back(moreh::Tensor::FromData(x.Clone(), requires_grad && IsFloating(x.dtype())));
  }
  return t;
}

double Objective(const GradCase& c, const std::vector<Tensor>& ins, const std::vector<float>& r) {
  const moreh::Tensor out = lazy::Record(c.op, Leaves(ins, false), c.attrs)[0];
  const std::vector<float> o = out.to_floats();
  double acc = 0;
  for (size_t i = 0; i < o.size(); ++i) acc += static_cast<double>(o[i]) * r[i];
  return acc;
}

void CheckGradient(const GradCase& c) {
  SCOPED_TRACE(c.name);
  std::mt19937_64 rng(testing::TestSeed() ^ std::hash<std::string>()(c.name));
  std::vector<moreh::Tensor> leaves = Leaves(c.inputs, true);
  moreh::Tensor out = lazy::Record(c.op, leaves, c.attrs)[0];
  const Tensor r = RandomTensor(out.shape(), rng);
  out.backward(moreh::Tensor::FromData(r));
  const std::vector<float> rv = r.ToFloats();

  std::vector<Tensor> dirs(c.inputs.size());
  double analytic = 0;
  int checked = 0;
  for (size_t i = 0; i < c.inputs.size(); ++i) {
    if (!IsFloating(c.inputs[i].dtype())) continue;
    dirs[i] = RandomTensor(c.inputs[i].shape(), rng);
    ASSERT_TRUE(leaves[i].grad().defined()) << "no gradient for input " << i;
    const std::vector<float> g = leaves[i].grad().to_floats(), d = dirs[i].ToFloats();
    for (size_t k = 0; k < g.size(); ++k) analytic += static_cast<double>(g[k]) * d[k];
    ++checked;
  }
  ASSERT_GT(checked, 0);
  auto shifted = [&](double eps) {
    std::vector<Tensor> ins;
    for (size_t i = 0; i < c.inputs.size(); ++i) {
      if (!dirs[i].defined()) {
        ins.push_back(c.inputs[i]);
        continue;
      }
      std::vector<float> x = c.inputs[i].ToFloats(), d = dirs[i].ToFloats();
      for (size_t k = 0; k < x.size(); ++k) x[k] += static_cast<float>(eps) * d[k];
      ins.push_back(Tensor::FromFloats(x, c.inputs[i].shape(), DType::kF32));
    }
    return Objective(c, ins, rv);
  };
  const double h = 2e-3;
  const double fd = (shifted(h) - shifted(-h)) / (2 * h);
  const double scale = std::max({1.0, std::fabs(fd), std::fabs(analytic)});
  EXPECT_NEAR(analytic, fd, 5e-3 * scale) << "seed " << testing::TestSeed();
}

Attrs Mm(int64_t ta, int64_t tb) { return {{"trans_a", ta}, {"trans_b", tb}}; }

TEST(GradCheck, EveryDifferentiableOp) {
  std::mt19937_64 rng(testing::TestSeed());
  auto R = [&](const Shape& s, float scale = 1.0f) { return RandomTensor(s, rng, scale); };
  std::vector<int64_t> mask_v(2 * 6, 1);
  mask_v[6 + 5] = mask_v[6 + 4] = 0;  // right padding in row 1
  const Tensor mask = Tensor::FromVector(mask_v, {2, 6});
  std::vector<int64_t> lab = RandomInts({2, 5}, rng, 7).ToInts();
  lab[3] = -100;
  const Tensor labels = Tensor::FromVector(lab, {2, 5});

  const std::vector<GradCase> cases = {
      {"embedding", OpKind::kEmbedding, {R({7, 5}), RandomInts({2, 3}, rng, 7)}, {}},
      {"matmul_nn", OpKind::kMatMul, {R({3, 4}), R({4, 5})}, Mm(0, 0)},
      {"matmul_nt", OpKind::kMatMul, {R({3, 4}), R({5, 4})}, Mm(0, 1)},
      {"matmul_tn", OpKind::kMatMul, {R({4, 3}), R({4, 5})}, Mm(1, 0)},
      {"matmul_tt", OpKind::kMatMul, {R({4, 3}), R({5, 4})}, Mm(1, 1)},
      {"linear_3d", OpKind::kMatMul, {R({2, 3, 4}), R({5, 4})}, Mm(0, 1)},
      {"matmul_batched", OpKind::kMatMul, {R({2, 3, 4}), R({2, 4, 5})}, Mm(0, 0)},
      {"matmul_batched_tt", OpKind::kMatMul, {R({2, 4, 3}), R({2, 5, 4})}, Mm(1, 1)},
      {"add", OpKind::kAdd, {R({3, 4}), R({3, 4})}, {}},
      {"add_broadcast", OpKind::kAdd, {R({2, 3, 4}), R({4})}, {}},
      {"mul", OpKind::kMul, {R({3, 4}), R({3, 4})}, {}},
      {"mul_broadcast", OpKind::kMul, {R({2, 3, 4}), R({3, 4})}, {}},
      {"scale", OpKind::kScale, {R({5})}, {{"scale", -1.7}}},
      {"rms_norm", OpKind::kRmsNorm, {R({3, 8}), R({8})}, {{"eps", 1e-5}}},
      {"rotary", OpKind::kRotary, {R({2, 5, 3, 8})}, {{"theta", 10000.0}}},
      {"rotary_offset",
       OpKind::kRotary,
       {R({1, 4, 2, 6})},
       {{"theta", 500.0}, {"position_offset", int64_t{3}}}},
      {"attention_causal_gqa_mask",
       OpKind::kAttention,
       {R({2, 6, 4, 8}), R({2, 6, 2, 8}), R({2, 6, 2, 8}), mask},
       {{"causal", int64_t{1}}, {"scale", 0.35}}},
      {"attention_full",
       OpKind::kAttention,
       {R({1, 5, 2, 4}), R({1, 7, 2, 4}), R({1, 7, 2, 4})},
       {{"causal", int64_t{0}}, {"scale", 0.5}}},
      {"swiglu", OpKind::kSwiGlu, {R({4, 6}), R({4, 6})}, {}},
      {"cross_entropy",
       OpKind::kCrossEntropy,
       {R({10, 7}), Tensor::FromVector(lab, {10})},
       {{"ignore_index", int64_t{-100}}}},
      {"cross_entropy_shift",
       OpKind::kCrossEntropy,
       {R({2, 5, 7}), labels},
       {{"ignore_index", int64_t{-100}}, {"shift", int64_t{1}}}},
      {"cast", OpKind::kCast, {R({6})}, {{"dtype", std::string("f32")}}},
      {"reshape", OpKind::kReshape, {R({2, 6})}, {{"shape", Shape{3, -1}}}},
      {"transpose",
       OpKind::kTranspose,
       {R({2, 3, 4})},
       {{"dim0", int64_t{0}}, {"dim1", int64_t{2}}}},
      {"expand", OpKind::kExpand, {R({3, 1})}, {{"shape", Shape{2, 3, 4}}}},
      {"sum_all", OpKind::kSum, {R({3, 4})}, {}},
      {"sum_axes", OpKind::kSum, {R({2, 3, 4})}, {{"axes", Shape{0, 2}}, {"keepdim", int64_t{1}}}},
      {"mean_axis", OpKind::kMean, {R({2, 3, 4})}, {{"axes", Shape{-2}}}},
  };
  for (const GradCase& c : cases) CheckGradient(c);
}

}  // namespace
}  // namespace moreh
