"""What the end-to-end training checks share: a pass/fail line per check, the losses a trainer
logged, a checkpoint's tensors, and the bounds for mixed precision against f32.
(tests/parallel/check_ap_end_to_end.py, tests/cuda/check_daemons_gpu.py)"""
import os
import re

# bf16 against f32 after 10 steps of examples/llama-ap (measured 2026-11-28: losses within
# 2.2e-4, master weights 1.2e-2 apart in relative L2 norm, AdamW's sign steps on near-zero
# gradients that bf16 rounding flips).
MIXED_LOSS_TOLERANCE = 2e-3
MIXED_WEIGHT_TOLERANCE = 3e-2

FAIL = []


def check(name, cond, detail=""):
    print(("ok: " if cond else "FAIL: ") + name + ("" if cond else f" ({detail})"), flush=True)
    if not cond:
        FAIL.append(name)


def losses(log):
    """The losses a trainer logged ('[Step k/n] Loss: x'), in order."""
    return [float(x) for x in re.findall(r"\[Step \d+/\d+\] Loss: ([0-9.eE+-]+)", log)]


def read_checkpoint(d):
    """Every tensor of the checkpoint in directory d (None where safetensors is not installed)."""
    try:
        from safetensors.numpy import load_file
    except ImportError:
        return None
    out = {}
    for f in sorted(os.listdir(d)):
        if f.endswith(".safetensors"):
            out.update(load_file(os.path.join(d, f)))
    return out


def rel_diff(a, b):
    """Worst per-tensor relative difference ||a - b|| / ||b||, the largest element difference, and
    the name of the worst tensor.

    Element-wise, AdamW turns rounding noise in a near-zero gradient (a different summation order
    across stages, replicas or tensor-parallel partial sums) into a full lr-sized step of either
    sign, so a handful of elements in millions differ by up to lr x steps; the relative norm is the
    measure of equality that this noise does not dominate. Both are reported."""
    import numpy as np
    worst, biggest, where = 0.0, 0.0, ""
    for k in b:
        d = a[k].astype(np.float64) - b[k]
        if not np.isfinite(d).all():  # max() would drop a NaN
            return float("inf"), float("inf"), k
        e = float(np.linalg.norm(d) / max(np.linalg.norm(b[k]), 1e-30))
        if e > worst:
            worst, where = e, k
        biggest = max(biggest, float(np.abs(d).max()))
    return worst, biggest, where
