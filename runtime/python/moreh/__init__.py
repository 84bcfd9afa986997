"""moreh: fine-tune open LLMs on one device or many, parallelized automatically.

An ordinary single-device training loop, plus one line::

    import moreh
    moreh.option.enable_advanced_parallelization()
    model = moreh.models.AutoModelForCausalLM.from_pretrained("examples/llama-ap")
    optim = moreh.optim.AdamW(model.parameters(), lr=1e-5)
    outputs = model(input_ids, attention_mask=attention_mask, labels=labels)
    outputs.loss.backward()
    optim.step()
    model.zero_grad(set_to_none=True)

With the line, the runtime asks the scheduler (MOREH_SCHEDULER, or a local cluster of its own)
for the virtual device's accelerators and the planner chooses pipeline stages, micro-batches,
tensor parallelism, recomputation and sharding; without it a model too big for one device stops
with moreh.OutOfMemoryError, which says what to do. Every call goes to the C++ runtime (the same
API C++ programs use); long calls release the GIL.
"""
import os as _os

from . import _C
from ._C import Error, OutOfMemoryError
from ._tensor import Tensor, tensor
from . import models, optim, option

__version__ = "0.1.0"
__all__ = ["Error", "OutOfMemoryError", "Tensor", "tensor", "models", "optim", "option"]

# An embedded local cluster starts moreh-scheduler and moreh-worker from the package's bin/ (a
# Python program's executable is the interpreter, not a moreh binary).
_bin = _os.path.join(_os.path.dirname(_os.path.abspath(__file__)), "bin")
if _os.path.isfile(_os.path.join(_bin, "moreh-worker")):
    _C.set_daemon_dir(_bin)


class no_grad:
    """Records what follows without gradients, as torch.no_grad(): evaluation is forward only
    and reading its loss keeps no graph for a backward. A context manager and a decorator."""

    def __enter__(self):
        self._guard = _C._NoGrad()
        self._guard.__enter__()
        return self

    def __exit__(self, *exc):
        self._guard.__exit__(*exc)
        return False

    def __call__(self, fn):
        import functools

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with no_grad():
                return fn(*args, **kwargs)
        return wrapper


def is_grad_enabled():
    return _C.grad_enabled()


__all__ += ["no_grad", "is_grad_enabled"]
