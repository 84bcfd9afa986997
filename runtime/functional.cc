#include "runtime/functional.h"

#include <cmath>

#include "runtime/lazy.h"

namespace moreh::functional {

using lazy::Record1;

Tensor embedding(const Tensor& ids, const Tensor& weight) {
  return Record1(OpKind::kEmbedding, {weight, ids});
}
Tensor linear(const Tensor& x, const Tensor& w) { return matmul(x, w, false, true); }
Tensor matmul(const Tensor& a, const Tensor& b, bool trans_a, bool trans_b) {
  return Record1(OpKind::kMatMul, {a, b},
                 {{"trans_a", int64_t{trans_a}}, {"trans_b", int64_t{trans_b}}});
}
Tensor add(const Tensor& a, const Tensor& b) { return Record1(OpKind::kAdd, {a, b}); }
Tensor mul(const Tensor& a, const Tensor& b) { return Record1(OpKind::kMul, {a, b}); }
Tensor scale(const Tensor& x, double s) { return Record1(OpKind::kScale, {x}, {{"scale", s}}); }
Tensor rms_norm(const Tensor& x, const Tensor& weight, double eps) {
  return Record1(OpKind::kRmsNorm, {x, weight}, {{"eps", eps}});
}
Tensor rotary(const Tensor& x, double theta, int64_t position_offset) {
  return Record1(OpKind::kRotary, {x},
                 {{"theta", theta}, {"position_offset", position_offset}, {"inverse", int64_t{0}}});
}
Tensor attention(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& key_mask,
                 bool causal) {
  return attention(q, k, v, key_mask, causal,
                   1.0 / std::sqrt(static_cast<double>(q.shape().back())));
}
Tensor attention(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& key_mask,
                 bool causal, double scale) {
  std::vector<Tensor> in{q, k, v};
  if (key_mask.defined()) in.push_back(key_mask);
  return lazy::Record(OpKind::kAttention, in, {{"causal", int64_t{causal}}, {"scale", scale}})[0];
}
Tensor swiglu(const Tensor& gate, const Tensor& up) { return Record1(OpKind::kSwiGlu, {gate, up}); }
Tensor cross_entropy(const Tensor& logits, const Tensor& labels, int64_t ignore_index, bool shift) {
  return lazy::Record(OpKind::kCrossEntropy, {logits, labels},
                      {{"ignore_index", ignore_index}, {"shift", int64_t{shift}}})[0];
}
Tensor cast(const Tensor& x, DType dtype) {
  return Record1(OpKind::kCast, {x}, {{"dtype", std::string(DTypeName(dtype))}});
}
Tensor reshape(const Tensor& x, const Shape& shape) {
  return Record1(OpKind::kReshape, {x}, {{"shape", shape}});
}
Tensor transpose(const Tensor& x, int64_t dim0, int64_t dim1) {
  return Record1(OpKind::kTranspose, {x}, {{"dim0", dim0}, {"dim1", dim1}});
}
Tensor expand(const Tensor& x, const Shape& shape) {
  return Record1(OpKind::kExpand, {x}, {{"shape", shape}});
}
Tensor sum(const Tensor& x, const std::vector<int64_t>& axes, bool keepdim) {
  return Record1(OpKind::kSum, {x}, {{"axes", axes}, {"keepdim", int64_t{keepdim}}});
}
Tensor mean(const Tensor& x, const std::vector<int64_t>& axes, bool keepdim) {
  return Record1(OpKind::kMean, {x}, {{"axes", axes}, {"keepdim", int64_t{keepdim}}});
}
Tensor full(const Shape& shape, DType dtype, double value) {
  return Record1(OpKind::kFill, {},
                 {{"shape", shape}, {"dtype", std::string(DTypeName(dtype))}, {"value", value}});
}

}  // namespace moreh::functional
