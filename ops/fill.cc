// fill: a constant tensor. attrs: shape (ints), dtype (str), value (float). No inputs.
#include "ops/op.h"

namespace moreh::ops {

const OpDef kFillDef = {
    .kind = OpKind::kFill,
    .min_inputs = 0,
    .max_inputs = 0,
    .infer =
        [](const InfoList&, const Attrs& a) {
          DType dt;
          MOREH_CHECK(ParseDType(a.GetString("dtype"), &dt), "fill: unknown dtype '{}'",
                      a.GetString("dtype"));
          for (int64_t d : a.GetInts("shape")) MOREH_CHECK(d >= 0, "fill: negative dimension");
          return std::vector<ValueInfo>{{dt, a.GetInts("shape")}};
        },
    .cost =
        [](const InfoList& in, const std::vector<ValueInfo>& out, const Attrs&) {
          return Cost{0, BytesOf(in, out)};
        },
    .grad = nullptr,
    .kernels = {[](std::span<const Tensor>, std::span<Tensor> out, const Attrs& a) {
      out[0].Fill(a.GetFloat("value"));
    }},
};

}  // namespace moreh::ops
