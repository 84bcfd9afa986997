#include "runtime/autograd.h"

#include <gtest/gtest.h>

#include "ops/op.h"
#include "runtime/functional.h"
#include "runtime/tensor.h"
#include "tests/test_util.h"

namespace moreh {
namespace {

namespace F = moreh::functional;

TEST(Autograd, GradientsAccumulateLikePyTorch) {
  Tensor w = Tensor::FromVector<float>({1, 2, 3}, {3}, /*requires_grad=*/true);
  Tensor x = Tensor::FromVector<float>({4, 5, 6}, {3});
  // d/dw sum(w * x) = x; twice -> 2x.
  F::sum(w * x).backward();
  F::sum(w * x).backward();
  EXPECT_EQ(w.grad().to_floats(), std::vector<float>({8, 10, 12}));
  EXPECT_FALSE(x.grad().defined());  // x does not require grad
  w.set_grad(Tensor());              // zero_grad(set_to_none=True)
  EXPECT_FALSE(w.grad().defined());
  F::sum(w * x).backward();
  EXPECT_EQ(w.grad().to_floats(), std::vector<float>({4, 5, 6}));
}

TEST(Autograd, ValueUsedTwiceSumsItsGradients) {
  Tensor w = Tensor::FromVector<float>({1, -2}, {2}, true);
  // sum(w*w + 3w) -> 2w + 3
  Tensor y = F::sum(w * w + w * 3.0);
  y.backward();
  EXPECT_EQ(w.grad().to_floats(), std::vector<float>({5, -1}));
  EXPECT_FLOAT_EQ(y.item(), 1 + 4 + 3 - 6);
}

TEST(Autograd, BackwardNeedsAScalarOrAGradient) {
  Tensor w = Tensor::FromVector<float>({1, 2}, {2}, true);
  Tensor y = w * 2.0;
  EXPECT_ERROR_MENTIONS(y.backward(), "not a scalar");
  y.backward(Tensor::FromVector<float>({1, 10}, {2}));
  EXPECT_EQ(w.grad().to_floats(), std::vector<float>({2, 20}));
  Tensor c = Tensor::FromVector<float>({1, 2}, {2});
  EXPECT_ERROR_MENTIONS(F::sum(c).backward(), "does not require grad");
}

TEST(Autograd, BuildBackwardOnAGraph) {
  Graph g;
  const int a = g.AddInput({DType::kF32, {2, 3}});
  const int b = g.AddInput({DType::kF32, {3, 4}});
  const int unused = g.AddInput({DType::kF32, {5}});
  ops::GraphBuilder bld(&g);
  const int c = bld.Emit1(OpKind::kMatMul, {a, b});
  const int s = bld.Emit1(OpKind::kSum, {c});
  const int seed = bld.Emit1(OpKind::kFill, {},
                             {{"shape", Shape{}}, {"dtype", std::string("f32")}, {"value", 1.0}});
  const auto grads = runtime::BuildBackward(&g, s, seed, {a, b, unused});
  EXPECT_GE(grads[0], 0);
  EXPECT_GE(grads[1], 0);
  EXPECT_EQ(grads[2], -1);  // no path
  EXPECT_EQ(g.info(grads[0]).shape, Shape({2, 3}));
  EXPECT_EQ(g.info(grads[1]).shape, Shape({3, 4}));
}

}  // namespace
}  // namespace moreh
