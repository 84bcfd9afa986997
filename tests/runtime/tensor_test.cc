#include "runtime/core/tensor.h"

#include <gtest/gtest.h>

#include "runtime/core/error.h"
#include "tests/test_util.h"

namespace moreh::runtime {
namespace {

Tensor Iota(const Shape& shape) {
  std::vector<float> v(static_cast<size_t>(Numel(shape)));
  for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<float>(i);
  return Tensor::FromVector(v, shape);
}

TEST(Tensor, ViewSharesStorage) {
  Tensor t = Iota({2, 3});
  Tensor v = t.View({3, -1});
  EXPECT_EQ(v.shape(), Shape({3, 2}));
  EXPECT_EQ(v.buffer(), t.buffer());
  v.data<float>()[5] = 42.0f;
  EXPECT_EQ(t.data<float>()[5], 42.0f);
  EXPECT_ERROR_MENTIONS(t.View({4, 2}), "cannot view", "[2, 3]");
}

TEST(Tensor, TransposeIsAStridedView) {
  Tensor t = Iota({2, 3});
  Tensor tt = t.Transpose(0, 1);
  EXPECT_EQ(tt.shape(), Shape({3, 2}));
  EXPECT_EQ(tt.strides(), Shape({1, 3}));
  EXPECT_FALSE(tt.is_contiguous());
  EXPECT_EQ(tt.Contiguous().ToFloats(), std::vector<float>({0, 3, 1, 4, 2, 5}));
  EXPECT_ERROR_MENTIONS(t.Transpose(0, 2), "out of range");
}

TEST(Tensor, ExpandUsesZeroStrides) {
  Tensor t = Iota({3});
  Tensor e = t.Expand({2, 3});
  EXPECT_EQ(e.strides(), Shape({0, 1}));
  EXPECT_EQ(e.ToFloats(), std::vector<float>({0, 1, 2, 0, 1, 2}));
  Tensor c = Iota({2, 1}).Expand({2, 4});
  EXPECT_EQ(c.ToFloats(), std::vector<float>({0, 0, 0, 0, 1, 1, 1, 1}));
  EXPECT_ERROR_MENTIONS(t.Expand({2, 4}), "cannot expand");
}

TEST(Tensor, SliceAndStridedCopy) {
  Tensor t = Iota({4, 3});
  Tensor s = t.Slice(0, 1, 3);
  EXPECT_EQ(s.offset(), 3);
  EXPECT_EQ(s.ToFloats(), std::vector<float>({3, 4, 5, 6, 7, 8}));
  Tensor dst = Tensor::Zeros({3, 4}, DType::kF32);
  dst.Transpose(0, 1).CopyFrom(t);  // strided destination
  EXPECT_EQ(dst.ToFloats()[1], 3.0f);
  EXPECT_EQ(dst.ToFloats()[4], 1.0f);
}

TEST(Tensor, DTypeConversionsAndChecks) {
  Tensor t = Tensor::FromFloats({1.0f, 2.5f, -3.0f}, {3}, DType::kBF16);
  EXPECT_EQ(t.nbytes(), 6);
  EXPECT_EQ(t.To(DType::kF32).ToFloats(), std::vector<float>({1.0f, 2.5f, -3.0f}));
  EXPECT_EQ(t.To(DType::kI32).ToInts(), std::vector<int64_t>({1, 2, -3}));
  EXPECT_ERROR_MENTIONS(t.data<float>(), "bf16[3]");
  Tensor full = Tensor::Full({2, 2}, DType::kI64, 7);
  EXPECT_EQ(full.ToInts(), std::vector<int64_t>({7, 7, 7, 7}));
}

}  // namespace
}  // namespace moreh::runtime
