// Tensors inside control messages: {"dtype": "i64", "shape": [2, 8], "data": base64}. For the small
// tensors the control plane carries (token ids, masks, losses); bulk data goes over UCX.
#pragma once

#include <nlohmann/json.hpp>

#include "runtime/core/status.h"
#include "runtime/core/tensor.h"

namespace moreh::net {

nlohmann::json EncodeTensor(const runtime::Tensor& t);
// Every field is checked: a known dtype, a non-negative shape, data of exactly numel x size bytes.
StatusOr<runtime::Tensor> DecodeTensor(const nlohmann::json& j,
                                       runtime::Allocator* alloc = nullptr);

}  // namespace moreh::net
