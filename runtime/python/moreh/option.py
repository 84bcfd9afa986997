"""The user's switches, as torch.moreh.option on the reference platform.

``enable_advanced_parallelization()`` is the one line that turns a single-device program into a
parallel one; MOREH_ENABLE_ADVANCED_PARALLELIZATION=1|0 in the environment wins when set.
"""
from typing import Sequence

from . import _C


def enable_advanced_parallelization(pipeline: bool = True, max_stages: int = 0,
                                    max_micro_batches: int = 0,
                                    recomputation: Sequence[int] = (0, 1, 2),
                                    distribute_parameters: bool = True, max_tp: int = 0) -> None:
    """Lets the planner parallelize the model over the virtual device's accelerators.

    The arguments limit what it may choose: pipeline stages (and at most ``max_stages``, 0: no
    limit), micro-batches, recomputation levels (0 none, 1 selective, 2 full), sharding of the
    optimizer states and master weights over data-parallel replicas, tensor parallelism (0: up to
    a node's devices).
    """
    for name, v in (("max_stages", max_stages), ("max_micro_batches", max_micro_batches),
                    ("max_tp", max_tp)):
        if not isinstance(v, int) or v < 0:
            raise ValueError(f"enable_advanced_parallelization: {name}={v!r} must be an int >= 0")
    levels = list(recomputation)
    if not levels or any(l not in (0, 1, 2) for l in levels):
        raise ValueError("enable_advanced_parallelization: recomputation="
                         f"{recomputation!r} must list levels among 0, 1, 2")
    _C.enable_advanced_parallelization(bool(pipeline), max_stages, max_micro_batches, levels,
                                       bool(distribute_parameters), max_tp)


def disable_advanced_parallelization() -> None:
    """Back to one device (plain data parallelism where a cluster is configured)."""
    _C.disable_advanced_parallelization()


def is_advanced_parallelization_enabled() -> bool:
    """The effective choice: the environment variable when set, else the last call above."""
    return _C.advanced_parallelization_enabled()
