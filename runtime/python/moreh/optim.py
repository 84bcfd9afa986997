"""Optimizers in torch.optim's words. AdamW is torch.optim.AdamW exactly (decoupled weight decay,
bias correction), run by the runtime: in the step graph on one device, on every worker's shard on
a cluster."""
from . import _C


class AdamW:
    """AdamW(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2,
    exclude_bias_and_norm=False).

    ``param_groups[0]["lr"]`` is read at every ``step()``, so schedulers that write it work.
    exclude_bias_and_norm: no weight decay on biases and norm weights, the two parameter groups
    transformers' Trainer makes (on a cluster the parameters are one handle, so the groups are
    chosen by name in the runtime: moreh.optim.excluded_from_weight_decay)."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2,
                 exclude_bias_and_norm=False):
        params = list(params)
        if not params:
            raise ValueError("AdamW: optimizer got an empty parameter list")
        b1, b2 = betas
        for name, v, ok in (("lr", lr, lr >= 0), ("eps", eps, eps >= 0),
                            ("betas[0]", b1, 0 <= b1 < 1), ("betas[1]", b2, 0 <= b2 < 1),
                            ("weight_decay", weight_decay, weight_decay >= 0)):
            if not ok:
                raise ValueError(f"AdamW: invalid {name}: {v}")
        self._impl = _C.AdamW(params, float(lr), float(b1), float(b2), float(eps),
                              float(weight_decay), bool(exclude_bias_and_norm))
        self.param_groups = [{"params": params, "lr": lr, "betas": (b1, b2), "eps": eps,
                              "weight_decay": weight_decay}]
        self.defaults = dict(lr=lr, betas=(b1, b2), eps=eps, weight_decay=weight_decay)

    def step(self, closure=None):
        loss = closure() if closure is not None else None
        self._impl.lr = float(self.param_groups[0]["lr"])
        self._impl.step()
        return loss

    def zero_grad(self, set_to_none=True):
        self._impl.zero_grad()

    @property
    def step_count(self):
        return self._impl.step_count

    def __repr__(self):
        d = self.param_groups[0]
        return (f"AdamW(lr={d['lr']}, betas={d['betas']}, eps={d['eps']}, "
                f"weight_decay={d['weight_decay']})")


def excluded_from_weight_decay(name):
    """Whether transformers' Trainer leaves the parameter `name` out of weight decay (a bias or a
    norm's weight)."""
    return _C.excluded_from_weight_decay(str(name))


def clip_grad_norm_(parameters, max_norm):
    """torch.nn.utils.clip_grad_norm_: the global L2 norm of the gradients (on a cluster over
    every stage, tensor-parallel rank, replica and shard: the one-device value), and, above
    max_norm, the gradients scaled by max_norm / (norm + 1e-6) for the next step(). Call it
    between the last backward() and step(); returns the norm as a float."""
    params = list(parameters) if not isinstance(parameters, _C.Tensor) else [parameters]
    max_norm = float(max_norm)
    if max_norm != max_norm:
        raise ValueError("clip_grad_norm_: max_norm is NaN")
    return _C.clip_grad_norm(params, max_norm)


class LRScheduler:
    """A learning-rate schedule over a moreh optimizer, as transformers.get_scheduler returns:
    call ``step()`` after each ``optimizer.step()``; ``get_last_lr()`` is the rate the next
    optimizer step uses. The schedule itself is the C++ runtime's (runtime/lr_schedule.h), the one
    ``moreh-run train --lr-scheduler-type`` uses."""

    def __init__(self, optimizer, name, num_warmup_steps=0, num_training_steps=0):
        self.optimizer = optimizer
        base = optimizer.param_groups[0]["lr"]
        self.base_lrs = [base]
        self._schedule = _C.LrSchedule.make(str(name), float(base), int(num_warmup_steps or 0),
                                            int(num_training_steps or 0))
        self.last_epoch = 0
        self._apply()

    def _apply(self):
        self.optimizer.param_groups[0]["lr"] = self._schedule.at(self.last_epoch)

    def step(self):
        self.last_epoch += 1
        self._apply()

    def get_last_lr(self):
        return [self.optimizer.param_groups[0]["lr"]]

    def state_dict(self):
        return {"last_epoch": self.last_epoch, "base_lrs": list(self.base_lrs)}

    def load_state_dict(self, state):
        self.last_epoch = int(state["last_epoch"])
        self._apply()


def get_scheduler(name, optimizer, num_warmup_steps=None, num_training_steps=None):
    """transformers.get_scheduler for a moreh optimizer: "constant", "constant_with_warmup",
    "linear" or "cosine" (linear and cosine need num_training_steps; warmup ramps from 0)."""
    name = getattr(name, "value", name)  # transformers' SchedulerType enum too
    if name in ("linear", "cosine") and num_training_steps is None:
        raise ValueError(f"{name} requires `num_training_steps`, please provide that argument.")
    if name == "constant_with_warmup" and num_warmup_steps is None:
        raise ValueError(f"{name} requires `num_warmup_steps`, please provide that argument.")
    return LRScheduler(optimizer, name, num_warmup_steps or 0, num_training_steps or 0)


__all__ = ["AdamW", "LRScheduler", "get_scheduler"]
