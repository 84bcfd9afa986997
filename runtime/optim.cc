#include "runtime/optim.h"

#include <spdlog/spdlog.h>

#include <cmath>

#include "runtime/device.h"
#include "runtime/lazy.h"
#include "runtime/parallel/session.h"

namespace moreh::optim {

AdamW::AdamW(std::vector<Tensor> params, AdamWOptions options)
    : params_(std::move(params)), options_(options) {
  MOREH_CHECK(options_.lr >= 0 && options_.eps >= 0 && options_.weight_decay >= 0,
              "AdamW: lr ({}), eps ({}) and weight_decay ({}) must be >= 0", options_.lr,
              options_.eps, options_.weight_decay);
  MOREH_CHECK(
      options_.beta1 >= 0 && options_.beta1 < 1 && options_.beta2 >= 0 && options_.beta2 < 1,
      "AdamW: betas ({}, {}) must be in [0, 1)", options_.beta1, options_.beta2);
  for (const Tensor& p : params_) {
    if (auto s = parallel::SessionOfHandle(p)) {
      MOREH_CHECK(params_.size() == 1, "AdamW: a distributed model's parameters() go alone");
      session_ = s;
      session_->SetOptimizer(options_);
      return;
    }
  }
  for (const Tensor& p : params_) {
    MOREH_CHECK(p.defined() && p.is_leaf() && p.dtype() == DType::kF32,
                "AdamW: parameters must be f32 leaf tensors ({})", p.ToString());
  }
  m_.resize(params_.size());
  v_.resize(params_.size());
  if (auto o = runtime::LossScalingFor(runtime::ComputeDType(lazy::ThreadExecutor().allocator()))) {
    scaler_.emplace(*o);
    lazy::SetLossScale(scaler_->scale());
  }
}

AdamW::~AdamW() {
  if (scaler_) lazy::SetLossScale(1.0);
}

void AdamW::step() {
  if (session_) {
    session_->Update(options_.lr);  // on every worker; the state never leaves them
    ++step_;
    return;
  }
  const double grad_scale = lazy::TakeGradientScale();
  if (grad_scale != 1.0) {
    // Loss scaling: an inf or NaN in any gradient skips the step (the scale shrinks); otherwise
    // the gradients are divided by the scale, in place, before AdamW reads them.
    std::vector<runtime::Tensor> grads;
    bool finite = true;
    for (const Tensor& p : params_) {
      if (!p.grad().defined()) continue;
      grads.push_back(p.grad().data());
      finite = finite && runtime::AllFinite(grads.back());
    }
    const bool apply = scaler_ ? scaler_->Update(!finite) : finite;
    if (scaler_) lazy::SetLossScale(scaler_->scale());
    if (!apply) {
      if (scaler_) spdlog::warn("{}", scaler_->OverflowMessage(grad_scale));
      return;
    }
    for (const runtime::Tensor& g : grads) runtime::ScaleInPlace(g, 1.0f / grad_scale);
  }
  ++step_;
  const Tensor hp =
      Tensor::FromVector<float>({static_cast<float>(options_.lr), static_cast<float>(step_)}, {2});
  for (size_t i = 0; i < params_.size(); ++i) {
    const bool decays =
        !options_.exclude_bias_and_norm || !ExcludedFromWeightDecay(params_[i].name());
    const Attrs attrs{{"beta1", options_.beta1},
                      {"beta2", options_.beta2},
                      {"eps", options_.eps},
                      {"weight_decay", decays ? options_.weight_decay : 0.0}};
    const Tensor g = params_[i].grad();
    if (!g.defined()) continue;
    if (!m_[i].defined()) {
      m_[i] = Tensor::FromData(runtime::Tensor::Zeros(params_[i].shape(), DType::kF32));
      v_[i] = Tensor::FromData(runtime::Tensor::Zeros(params_[i].shape(), DType::kF32));
    }
    const std::vector<Tensor> out =
        lazy::Record(OpKind::kAdamW, {params_[i], g, m_[i], v_[i], hp}, attrs);
    lazy::Assign(params_[i], out[0]);
    lazy::Assign(m_[i], out[1]);
    lazy::Assign(v_[i], out[2]);
  }
  try {
    Sync();
  } catch (...) {
    --step_;  // parameters and state were restored; the step did not happen
    throw;
  }
}

void AdamW::zero_grad() {
  for (Tensor& p : params_) p.set_grad(Tensor());
}

bool ExcludedFromWeightDecay(std::string_view name) {
  const auto ends_with = [&](std::string_view suffix) {
    return name.size() >= suffix.size() && name.substr(name.size() - suffix.size()) == suffix;
  };
  if (ends_with(".bias") || name == "bias") return true;
  // The norms' weights: "...layernorm.weight" (input_, post_attention_, pre_/post_feedforward_),
  // "model.norm.weight", "...q_norm.weight" / "...k_norm.weight".
  const size_t dot = name.rfind('.');
  const std::string_view module = name.substr(0, dot == std::string_view::npos ? 0 : dot);
  const size_t last = module.rfind('.');
  const std::string_view leaf = last == std::string_view::npos ? module : module.substr(last + 1);
  return leaf == "norm" || leaf.find("layernorm") != std::string_view::npos ||
         (leaf.size() > 5 && leaf.substr(leaf.size() - 5) == "_norm");
}

double ClipGradNorm(const std::vector<Tensor>& params, double max_norm) {
  MOREH_CHECK(!std::isnan(max_norm), "clip_grad_norm: max_norm is NaN");
  for (const Tensor& p : params) {
    if (auto s = parallel::SessionOfHandle(p)) {
      MOREH_CHECK(params.size() == 1,
                  "clip_grad_norm: a distributed model's parameters() go alone");
      return s->ClipGradNorm(max_norm);
    }
  }
  // In process: the gradients are computed now (the update then runs as a graph of its own).
  std::vector<runtime::Tensor> grads;
  double squares = 0.0;
  for (const Tensor& p : params) {
    if (!p.defined() || !p.grad().defined()) continue;
    grads.push_back(p.grad().data());  // scaled in place below: SumOfSquares checks it is compact
    squares += runtime::SumOfSquares(grads.back(), 0, grads.back().numel());
  }
  // With loss scaling the gradients carry the scale until the optimizer divides it out.
  const double norm = std::sqrt(squares) / lazy::GradientScale();
  if (!std::isfinite(norm) || max_norm <= 0 || !std::isfinite(max_norm)) return norm;
  const double coef = max_norm / (norm + 1e-6);
  if (coef < 1.0) {
    for (const runtime::Tensor& g : grads) runtime::ScaleInPlace(g, static_cast<float>(coef));
  }
  return norm;
}

int64_t AdamW::state_bytes() const {
  int64_t b = 0;
  for (size_t i = 0; i < m_.size(); ++i) {
    if (m_[i].defined()) b += 2 * m_[i].numel() * 4;
  }
  return b;
}

}  // namespace moreh::optim
