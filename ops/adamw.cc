// adamw(param, grad, m, v, hparams; beta1, beta2, eps, weight_decay) -> (param', m', v')
// torch.optim.AdamW semantics. hparams is f32[2] = [lr, step] (an input, not an attribute, so the
// step graph's hash does not change from step to step). param, m and v are updated in place when
// the executor can donate their buffers.
#include "kernels/cpu/cpu_kernels.h"
#include "ops/op.h"

namespace moreh::ops {

const OpDef kAdamWDef = {
    .kind = OpKind::kAdamW,
    .min_inputs = 5,
    .max_inputs = 5,
    .infer =
        [](const InfoList& in, const Attrs& a) {
          MOREH_CHECK(in[0]->dtype == DType::kF32, "param must be f32 (master weights)");
          MOREH_CHECK(in[1]->shape == in[0]->shape && IsFloating(in[1]->dtype),
                      "grad must match param");
          MOREH_CHECK(*in[2] == *in[0] && *in[3] == *in[0], "m and v must be f32 like param");
          MOREH_CHECK(in[4]->dtype == DType::kF32 && in[4]->shape == Shape{2},
                      "hparams must be f32[2] = [lr, step]");
          for (const char* k : {"beta1", "beta2", "eps", "weight_decay"}) a.GetFloat(k);
          return std::vector<ValueInfo>{*in[0], *in[0], *in[0]};
        },
    .cost =
        [](const InfoList& in, const std::vector<ValueInfo>& out, const Attrs&) {
          return Cost{12.0 * Numel(in[0]->shape), BytesOf(in, out)};
        },
    .grad = nullptr,
    .kernels = {[](std::span<const Tensor> in, std::span<Tensor> out, const Attrs& a) {
      const Tensor g = AsF32(in[1]);
      const float* hp = in[4].data<float>();
      const int64_t step = static_cast<int64_t>(hp[1]);
      MOREH_CHECK(step >= 1, "adamw: step must be >= 1, got {}", hp[1]);
      kernels::cpu::AdamWParams p{hp[0],
                                  static_cast<float>(a.GetFloat("beta1")),
                                  static_cast<float>(a.GetFloat("beta2")),
                                  static_cast<float>(a.GetFloat("eps")),
                                  static_cast<float>(a.GetFloat("weight_decay")),
                                  step};
      kernels::cpu::AdamWStep(out[0].data<float>(), out[1].data<float>(), out[2].data<float>(),
                              g.data<float>(), g.numel(), p);
    }},
    .inplace = {{0, 0}, {1, 2}, {2, 3}},
    .host_inputs = {4},  // [lr, step]
};

}  // namespace moreh::ops
