// rotary(x[B, T, H, D]; theta, position_offset=0, inverse=0, rope_type and its scaling
// parameters) -> same shape (Hugging Face rotate_half convention). Its gradient is the inverse
// rotation.
#include "kernels/cpu/cpu_kernels.h"
#include "ops/op.h"
#include "ops/op_helpers.h"

namespace moreh::ops {

kernels::cpu::RopeParams RopeFromAttrs(const Attrs& a) {
  kernels::cpu::RopeParams p;
  p.theta = a.GetFloat("theta");
  const std::string type = a.Has("rope_type") ? a.GetString("rope_type") : "default";
  if (type == "linear") {
    p.type = kernels::cpu::RopeParams::kLinear;
    p.factor = a.GetFloat("factor");
  } else if (type == "llama3") {
    p.type = kernels::cpu::RopeParams::kLlama3;
    p.factor = a.GetFloat("factor");
    p.low_freq_factor = a.GetFloat("low_freq_factor");
    p.high_freq_factor = a.GetFloat("high_freq_factor");
    p.original_max_position = a.GetInt("original_max_position");
  } else {
    MOREH_CHECK(type == "default", "rope_type '{}' (default, linear or llama3)", type);
  }
  return p;
}

const OpDef kRotaryDef = {
    .kind = OpKind::kRotary,
    .min_inputs = 1,
    .max_inputs = 1,
    .infer =
        [](const InfoList& in, const Attrs& a) {
          MOREH_CHECK(IsFloating(in[0]->dtype), "x must be a float tensor");
          MOREH_CHECK(in[0]->shape.size() == 4 && in[0]->shape[3] % 2 == 0,
                      "x must be [B, T, H, D] with D even");
          MOREH_CHECK(a.GetFloat("theta") > 0, "theta must be positive");
          const kernels::cpu::RopeParams p = RopeFromAttrs(a);
          MOREH_CHECK(p.factor > 0 && p.high_freq_factor > p.low_freq_factor &&
                          p.low_freq_factor > 0 && p.original_max_position > 0,
                      "rope scaling: factor {} > 0, 0 < low_freq_factor {} < high_freq_factor {}, "
                      "original_max_position {} > 0",
                      p.factor, p.low_freq_factor, p.high_freq_factor, p.original_max_position);
          return std::vector<ValueInfo>{*in[0]};
        },
    .cost =
        [](const InfoList& in, const std::vector<ValueInfo>& out, const Attrs&) {
          return Cost{3.0 * Numel(in[0]->shape), BytesOf(in, out)};
        },
    .grad =
        [](GraphBuilder& b, const Node& n, std::span<const int> g) {
          if (g[0] < 0) return std::vector<int>{-1};
          Attrs inv = n.attrs;
          inv.Set("inverse", int64_t{1} - n.attrs.GetInt("inverse", 0));
          return std::vector<int>{b.Emit1(OpKind::kRotary, {g[0]}, inv)};
        },
    .kernels = {[](std::span<const Tensor> in, std::span<Tensor> out, const Attrs& a) {
      const Tensor x = AsF32(in[0]);
      const Shape& s = x.shape();
      WriteF32(out[0], [&](float* y) {
        const std::vector<float> inv = kernels::cpu::RopeInvFreq(s[3], RopeFromAttrs(a));
        kernels::cpu::RotaryForward(y, x.data<float>(), s[0], s[1], s[2], s[3], inv.data(),
                                    a.GetInt("position_offset", 0), a.GetInt("inverse", 0) != 0);
      });
    }},
};

}  // namespace moreh::ops
