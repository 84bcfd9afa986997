// Optimizers. AdamW follows torch.optim.AdamW exactly (decoupled weight decay, bias correction).
// step() records the update of every parameter that has a gradient into the step graph and ends the
// step (moreh::Sync): the forward, backward and update run as one cached graph. Not thread-safe.
#pragma once

#include <memory>
#include <optional>
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
};

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
