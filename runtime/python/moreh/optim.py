"""Optimizers in torch.optim's words. AdamW is torch.optim.AdamW exactly (decoupled weight decay,
bias correction), run by the runtime: in the step graph on one device, on every worker's shard on
a cluster."""
from . import _C


class AdamW:
    """AdamW(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2).

    ``param_groups[0]["lr"]`` is read at every ``step()``, so schedulers that write it work."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
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
                              float(weight_decay))
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
