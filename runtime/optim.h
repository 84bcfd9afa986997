// Optimizers. AdamW follows torch.optim.AdamW exactly (decoupled weight decay, bias correction).
// step() records the update of every parameter that has a gradient into the step graph and ends the
// step (moreh::Sync): the forward, backward and update run as one cached graph. Not thread-safe.
#pragma once

#include <memory>
#include <optional>
#include <string_view>
#include <vector>

#include "runtime/loss_scaler.h"
#include "runtime/tensor.h"

namespace moreh::parallel {
class Session;
}

namespace moreh::optim {

struct AdamWOptions {
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 1e-2;
  // transformers' exclusions (Trainer's decay parameter names): no weight decay on biases and
  // norm weights (ExcludedFromWeightDecay).
  bool exclude_bias_and_norm = false;
};

// Whether a parameter, by its Hugging Face name, is one transformers' Trainer leaves out of weight
// decay: a bias or a norm's weight ("...input_layernorm.weight", "model.norm.weight",
// "...self_attn.q_norm.weight", "...q_proj.bias").
bool ExcludedFromWeightDecay(std::string_view name);

// torch.nn.utils.clip_grad_norm_: the global L2 norm of every gradient of `params` (over every
// shard, stage, tensor-parallel rank and replica when they live on worker daemons: the one-device
// norm), and when it exceeds max_norm the gradients are scaled by max_norm / (norm + 1e-6) before
// the next optimizer step. max_norm <= 0 or inf: the norm only. Call it between the last
// backward() and step(). Returns the norm (inf or NaN where a gradient is; nothing is scaled then).
double ClipGradNorm(const std::vector<Tensor>& params, double max_norm);

class AdamW {
 public:
  AdamW(std::vector<Tensor> params, AdamWOptions options = {});
  AdamW(std::vector<Tensor> params, double lr) : AdamW(std::move(params), AdamWOptions{.lr = lr}) {}
  ~AdamW();
  AdamW(const AdamW&) = delete;
  AdamW& operator=(const AdamW&) = delete;

  void step();
  // set_to_none (PyTorch's default): drops every parameter's grad.
  void zero_grad();

  double lr() const { return options_.lr; }
  void set_lr(double lr) { options_.lr = lr; }
  int64_t step_count() const { return step_; }
  // Optimizer state bytes (m and v), for memory accounting.
  int64_t state_bytes() const;

 private:
  std::vector<Tensor> params_;
  std::vector<Tensor> m_, v_;
  // Set when the parameters live on worker daemons: step() runs AdamW there.
  std::shared_ptr<parallel::Session> session_;
  // In process, when the program computes in f16 (runtime::LossScalingFor): the loss scale that
  // backward() seeds; step() skips on overflow and otherwise divides it out first.
  std::optional<runtime::LossScaler> scaler_;
  AdamWOptions options_;
  int64_t step_ = 0;
};

}  // namespace moreh::optim
