// cast(x; dtype) -> x converted (floats round to nearest even; float -> int truncates).
#include "ops/op.h"

namespace moreh::ops {
namespace {
DType TargetOf(const Attrs& a) {
  DType dt;
  MOREH_CHECK(ParseDType(a.GetString("dtype"), &dt), "unknown dtype '{}'", a.GetString("dtype"));
  return dt;
}
}  // namespace

const OpDef kCastDef = {
    .kind = OpKind::kCast,
    .min_inputs = 1,
    .max_inputs = 1,
    .infer =
        [](const InfoList& in, const Attrs& a) {
          return std::vector<ValueInfo>{{TargetOf(a), in[0]->shape}};
        },
    .cost =
        [](const InfoList& in, const std::vector<ValueInfo>& out, const Attrs&) {
          return Cost{0, BytesOf(in, out)};
        },
    .grad =
        [](GraphBuilder& b, const Node& n, std::span<const int> g) {
          const DType src = b.info(n.inputs[0]).dtype;
          if (g[0] < 0 || !IsFloating(src)) return std::vector<int>{-1};
          return std::vector<int>{
              b.Emit1(OpKind::kCast, {g[0]}, {{"dtype", std::string(DTypeName(src))}})};
        },
    .kernels = {[](std::span<const Tensor> in, std::span<Tensor> out, const Attrs&) {
      out[0].CopyFrom(in[0]);
    }},
};

}  // namespace moreh::ops
