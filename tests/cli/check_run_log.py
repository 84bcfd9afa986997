#!/usr/bin/env python3
"""moreh-run train's run record, read as users read it: metrics.jsonl (one object per step:
loss equal to the logged loss, the learning-rate schedule's rate, tokens/s, step time, the peak
memory of every device), TensorBoard event files read by tensorboard's own EventAccumulator
(the same scalars), loss_curve.svg (the train and eval curves) and loss_curve.png; eval rows
(loss, perplexity; on a cluster each device's peak, below the training step's); the gradient norm
and MFU per step; in SAVE_MODEL_DIR/runs/<time>,
which survives the atomic save of the checkpoint. In process (one device) and with advanced
parallelization on an embedded local cluster (2 devices: two peaks per step). On a terminal (a
pty) the steps' progress bar, with the loss and tokens/s.
usage: check_run_log.py --bin BUILD/bin --source REPO"""
import argparse
import glob
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET

import numpy as np
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

FAILURES = []


def check(what, ok, detail=""):
    print(f"{'ok  ' if ok else 'FAIL'} {what}" + (f": {detail}" if detail and not ok else ""))
    if not ok:
        FAILURES.append(what)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--source", required=True)
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="moreh-run-log-")
    base = dict(os.environ, MOREH_HOME=os.path.join(tmp, "home"))
    for k in ("MOREH_SCHEDULER", "MOREH_ENABLE_ADVANCED_PARALLELIZATION", "MOREH_DEVICE_SIZE",
              "MOREH_ADVANCED_PARALLELIZATION_CONFIG", "MOREH_COMPUTE_DTYPE"):
        base.pop(k, None)
    lr, warmup, steps = 1e-3, 2, 6
    for name, env, devices in (
            ("one device", dict(base, MOREH_ENABLE_ADVANCED_PARALLELIZATION="0"), 1),
            ("2 devices, AP on", dict(base, MOREH_ENABLE_ADVANCED_PARALLELIZATION="1",
                                      MOREH_DEVICE_SIZE="Medium",
                                      MOREH_LOCAL_DEVICE_MEMORY="512M"), 2)):
        out = os.path.join(tmp, name.replace(" ", "_").replace(",", ""))
        r = subprocess.run([os.path.join(a.bin, "moreh-run"), "train", "--model-name-or-path",
                            os.path.join(a.source, "examples/llama-mini"), "--dataset",
                            os.path.join(a.source, "examples/data/man_summaries.jsonl"),
                            "--batch-size", "4", "--block-size", "64", "--max-steps", str(steps),
                            "--log-interval", "3", "--lr", str(lr), "--lr-scheduler-type",
                            "linear", "--warmup-steps", str(warmup), "--save-model-dir", out,
                            "--validation-split", "0.002", "--eval-steps", "3"],
                           env=env, capture_output=True, text=True, timeout=600)
        check(f"{name}: trains", r.returncode == 0, r.stderr[-2000:])
        if r.returncode != 0:
            continue
        logged = {int(s): np.float32(v) for s, v in
                  re.findall(r"\[Step (\d+)/\d+\] Loss: ([-+0-9.eE]+)", r.stdout + r.stderr)}
        runs = glob.glob(os.path.join(out, "runs", "*"))
        check(f"{name}: one run directory in SAVE_MODEL_DIR/runs after the save", len(runs) == 1,
              str(runs))
        check(f"{name}: the checkpoint is there too (one file, or shards and their index)",
              os.path.isfile(os.path.join(out, "model.safetensors")) or
              os.path.isfile(os.path.join(out, "model.safetensors.index.json")),
              str(os.listdir(out)))
        if len(runs) != 1:
            continue
        run = runs[0]
        with open(os.path.join(run, "metrics.jsonl")) as f:
            every = [json.loads(line) for line in f]
        rows = [x for x in every if x["split"] == "train"]
        evals = [x for x in every if x["split"] == "eval"]
        check(f"{name}: eval rows at steps 3 and 6 (the end), loss and perplexity = exp(loss)",
              [x["step"] for x in evals] == [3, 6] and
              all(math.isclose(x["perplexity"], math.exp(x["loss"]), rel_tol=1e-12)
                  for x in evals), json.dumps(evals))
        check(f"{name}: every step logs the clipped gradient norm and an MFU in (0, 1]",
              all(x.get("grad_norm", 0) > 0 and 0 < x.get("mfu", 0) <= 1 for x in rows)
              if devices > 1 else all(x.get("grad_norm", 0) > 0 for x in rows),
              json.dumps(rows[0]))
        if devices > 1:  # forward only: less memory than the training step, on every device
            check(f"{name}: evaluation's peak on each device is below the training step's",
                  all(len(x.get("peak_memory_bytes", [])) == devices and
                      all(e < t for e, t in zip(x["peak_memory_bytes"],
                                                rows[0]["peak_memory_bytes"]))
                      for x in evals), json.dumps(evals))
        check(f"{name}: one metrics line per step", [x["step"] for x in rows] ==
              list(range(1, steps + 1)), str([x.get("step") for x in rows]))
        want_lr = [lr * (k / warmup if k < warmup else (steps - k) / (steps - warmup))
                   for k in range(steps)]
        check(f"{name}: learning_rate is the linear schedule's",
              all(math.isclose(x["learning_rate"], w, rel_tol=1e-12, abs_tol=1e-18)
                  for x, w in zip(rows, want_lr)), str([x["learning_rate"] for x in rows]))
        check(f"{name}: loss equals the logged loss",
              all(np.float32(rows[s - 1]["loss"]) == v for s, v in logged.items()) and
              len(logged) == 2, f"{logged} vs {[x['loss'] for x in rows]}")
        check(f"{name}: schema (split, epoch, tokens/s, step time, a peak per device)",
              all(x["split"] == "train" and x["tokens_per_s"] > 0 and x["step_time_s"] > 0 and
                  0 < x["epoch"] <= 1 and len(x["peak_memory_bytes"]) == devices and
                  all(isinstance(p, int) and p > 0 for p in x["peak_memory_bytes"])
                  for x in rows), json.dumps(rows[0]))
        acc = EventAccumulator(run)
        acc.Reload()
        tags = acc.Tags()["scalars"]
        check(f"{name}: tensorboard reads the scalars",
              {"train/loss", "train/learning_rate", "train/tokens_per_s",
               "train/peak_memory_gib"} <= set(tags), str(tags))
        if "train/loss" in tags:
            ev = acc.Scalars("train/loss")
            check(f"{name}: tensorboard's train/loss equals metrics.jsonl",
                  [e.step for e in ev] == list(range(1, steps + 1)) and
                  all(np.float32(e.value) == np.float32(x["loss"]) for e, x in zip(ev, rows)),
                  str([(e.step, e.value) for e in ev]))
        svg = os.path.join(run, "loss_curve.svg")
        try:
            root = ET.parse(svg).getroot()
            paths = [e for e in root.iter() if e.tag.endswith("path")]
            check(f"{name}: loss_curve.svg has the train and the eval curve",
                  len(paths) == 2 and sorted(p.get("d", "").count("L") for p in paths) ==
                  [1, steps - 1], [p.get("d") for p in paths])
        except (OSError, ET.ParseError) as e:
            check(f"{name}: loss_curve.svg parses", False, str(e))
        with open(os.path.join(run, "loss_curve.png"), "rb") as f:
            png = f.read()
        check(f"{name}: loss_curve.png (rsvg-convert from scripts/setup) is a PNG",
              png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 1000, len(png))
    # A person at a terminal sees a progress bar for the steps; a pipe (above) gets log lines only.
    import pty
    out = os.path.join(tmp, "tty")
    pid, fd = pty.fork()
    if pid == 0:
        os.execve(os.path.join(a.bin, "moreh-run"),
                  ["moreh-run", "train", "--model-name-or-path",
                   os.path.join(a.source, "examples/llama-mini"), "--dataset",
                   os.path.join(a.source, "examples/data/man_summaries.jsonl"), "--batch-size",
                   "4", "--block-size", "64", "--max-steps", "4", "--log-interval", "2",
                   "--save-model-dir", out],
                  dict(base, MOREH_ENABLE_ADVANCED_PARALLELIZATION="0"))
    seen = b""
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            break
        if not chunk:
            break
        seen += chunk
    _, status = os.waitpid(pid, 0)
    text = seen.decode("utf-8", "replace")
    check("terminal: trains", os.waitstatus_to_exitcode(status) == 0, text[-2000:])
    check("terminal: a progress bar for the steps with loss and tokens/s",
          "Train: 100%|" in text and "4/4 [" in text and "steps/s, loss=" in text and
          "tokens/s]" in text, text[-2000:])
    check("terminal: the log lines are still there", "[Step 4/4] Loss:" in text, text[-2000:])
    print("FAILED: " + ", ".join(FAILURES) if FAILURES else "all run-log checks passed")
    sys.exit(1 if FAILURES else 0)


if __name__ == "__main__":
    main()
