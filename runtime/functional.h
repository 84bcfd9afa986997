// The operators a model is written with, on moreh::Tensor (recorded lazily). Each checks its
// arguments when called and throws moreh::Error naming the op and the shapes.
// Layouts follow Hugging Face Llama: activations [B, T, C]; attention heads as [B, T, H, D].
#pragma once

#include <cstdint>
#include <vector>

#include "runtime/tensor.h"

namespace moreh::functional {

Tensor embedding(const Tensor& ids, const Tensor& weight);
// x[..., K] @ w[N, K]^T (PyTorch's linear, no bias).
Tensor linear(const Tensor& x, const Tensor& w);
Tensor matmul(const Tensor& a, const Tensor& b, bool trans_a = false, bool trans_b = false);
Tensor add(const Tensor& a, const Tensor& b);
Tensor mul(const Tensor& a, const Tensor& b);
Tensor scale(const Tensor& x, double s);
Tensor rms_norm(const Tensor& x, const Tensor& weight, double eps);
Tensor rotary(const Tensor& x, double theta, int64_t position_offset = 0);
// q[B,T,H,D], k/v[B,S,Hkv,D]; key_mask[B,S] (nonzero = attend) may be undefined.
Tensor attention(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& key_mask,
                 bool causal = true);
Tensor attention(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& key_mask,
                 bool causal, double scale);
Tensor swiglu(const Tensor& gate, const Tensor& up);
// Mean cross-entropy over labels != ignore_index; shift = Hugging Face's causal-LM label shift.
Tensor cross_entropy(const Tensor& logits, const Tensor& labels, int64_t ignore_index = -100,
                     bool shift = false);
Tensor cast(const Tensor& x, DType dtype);
Tensor reshape(const Tensor& x, const Shape& shape);
Tensor transpose(const Tensor& x, int64_t dim0, int64_t dim1);
Tensor expand(const Tensor& x, const Shape& shape);
Tensor sum(const Tensor& x, const std::vector<int64_t>& axes = {}, bool keepdim = false);
Tensor mean(const Tensor& x, const std::vector<int64_t>& axes = {}, bool keepdim = false);
Tensor full(const Shape& shape, DType dtype, double value);

}  // namespace moreh::functional
