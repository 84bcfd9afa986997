#include "runtime/net/tensor_codec.h"

#include <fmt/format.h>

#include "runtime/net/base64.h"

namespace moreh::net {
using json = nlohmann::json;

json EncodeTensor(const runtime::Tensor& t) {
  const runtime::Tensor c = t.HostContiguous();
  return {{"dtype", DTypeName(c.dtype())},
          {"shape", c.shape()},
          {"data", Base64Encode(std::string_view(static_cast<const char*>(c.raw_data()),
                                                 static_cast<size_t>(c.nbytes())))}};
}

StatusOr<runtime::Tensor> DecodeTensor(const json& j, runtime::Allocator* alloc) {
  DType dt;
  if (!j.is_object() || !j.contains("dtype") || !j["dtype"].is_string() ||
      !ParseDType(j["dtype"].get<std::string>(), &dt) || !j.contains("shape") ||
      !j["shape"].is_array() || !j.contains("data") || !j["data"].is_string()) {
    return Status::InvalidArgument("a tensor needs 'dtype', 'shape' and base64 'data'");
  }
  Shape shape;
  for (const json& d : j["shape"]) {
    if (!d.is_number_integer() || d.get<int64_t>() < 0 || d.get<int64_t>() > (int64_t{1} << 40)) {
      return Status::InvalidArgument("bad shape");
    }
    shape.push_back(d.get<int64_t>());
  }
  auto bytes = Base64Decode(j["data"].get<std::string>());
  if (!bytes.ok()) return bytes.status();
  if (shape.size() > 8 || static_cast<int64_t>(bytes->size()) != Numel(shape) * DTypeSize(dt)) {
    return Status::InvalidArgument(fmt::format("tensor data has {} bytes, {} needs {}",
                                               bytes->size(), ShapeToString(shape),
                                               Numel(shape) * DTypeSize(dt)));
  }
  return runtime::Tensor::FromData(bytes->data(), shape, dt, alloc);
}

}  // namespace moreh::net
