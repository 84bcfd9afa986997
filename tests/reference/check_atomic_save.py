#!/usr/bin/env python3
"""A kill during save_pretrained leaves the previous checkpoint (or the new one) intact.

Saves model A (seed 1, 1 MB shards) into a directory, then repeatedly starts a process that saves
model B (seed 2) over it in a loop and SIGKILLs it after a random delay. After each kill the
directory must load and hold exactly A's or exactly B's tensors, never a mix or a broken file.
Ends with 'N passed, M failed'."""
import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np


def load(runner, ckpt, out):
    p = subprocess.run([runner, "load", ckpt, out], capture_output=True, text=True)
    if p.returncode != 0:
        return None, p.stderr.strip()
    return {f[:-4]: np.load(os.path.join(out, f)) for f in os.listdir(out)}, None


def same(x, y):
    return x.keys() == y.keys() and all(np.array_equal(x[k], y[k]) for k in x)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runner", required=True)
    ap.add_argument("--config-dir", required=True)
    ap.add_argument("--kills", type=int, default=12)
    a = ap.parse_args()
    rng = random.Random(int.from_bytes(os.urandom(4), "little"))
    passed = failed = 0
    with tempfile.TemporaryDirectory() as d:
        ref = {}
        for seed in (1, 2):
            c = os.path.join(d, f"ref{seed}")
            subprocess.run([a.runner, "save", c, a.config_dir, str(seed)], check=True)
            ref[seed], err = load(a.runner, c, os.path.join(d, f"ref{seed}_npy"))
            assert err is None, err
        # Empty or equal references would make every kill's checkpoint look intact.
        assert ref[1] and ref[2] and not same(ref[1], ref[2]), "reference checkpoints empty or equal"
        ckpt = os.path.join(d, "ckpt")
        t0 = time.time()
        subprocess.run([a.runner, "save", ckpt, a.config_dir, "1"], check=True)
        one_save = time.time() - t0  # a whole saver process: start, save, exit
        seen = set()
        for i in range(a.kills):
            proc = subprocess.Popen([a.runner, "save", ckpt, a.config_dir, str(2 - i % 2), "loop"])
            # About half the random delays end before the first save completes; the first kill
            # waits past two whole saves so that model B is written (and checked below) every run.
            delay = rng.uniform(0.02, 0.6)
            time.sleep(max(delay, 2 * one_save) if i == 0 else delay)
            # A saver that already exited was not killed mid-save: the old checkpoint proves nothing.
            running = proc.poll() is None
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            got, err = load(a.runner, ckpt, os.path.join(d, f"got{i}"))
            which = None if got is None else (1 if same(got, ref[1]) else 2 if same(got, ref[2]) else None)
            if not running:
                failed += 1
                print(f"FAIL  kill {i}: the saver had exited (code {proc.returncode}) before the kill")
            elif which:
                passed += 1
                seen.add(which)
                print(f"PASS  kill {i}: checkpoint intact (model {'AB'[which - 1]})")
            else:
                failed += 1
                print(f"FAIL  kill {i}: {err or 'tensors are a mix of two checkpoints'}")
        # The next save removes what killed saves left behind.
        subprocess.run([a.runner, "save", ckpt, a.config_dir, "1"], check=True)
        leftovers = [f for f in os.listdir(d) if f.startswith(".ckpt.tmp")]
        if leftovers:
            failed += 1
            print(f"FAIL  temporary directories left after a clean save: {leftovers}")
        else:
            passed += 1
            print("PASS  a clean save removes the temporary directories of killed saves")
        print(f"states seen after kills: {sorted(seen)}")
        # The directory starts as A: B there means a killed saver's completed save survived the
        # kill (kill 0 waits for one), so not every kill found the untouched original.
        if 2 in seen:
            passed += 1
            print("PASS  a kill found the checkpoint a killed saver had written (model B)")
        else:
            failed += 1
            print("FAIL  no kill found model B: every kill came before a save completed")
    print(f"{passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
