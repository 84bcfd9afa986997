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


__all__ = ["AdamW"]
