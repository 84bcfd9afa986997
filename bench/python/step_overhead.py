#!/usr/bin/env python3
"""BENCH python_step_overhead: step time through Python / the C++ program, same job (see run)."""
import argparse
import datetime
import os
import re
import statistics
import subprocess
import sys
import tempfile

STAMP = re.compile(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}).*\[Step (\d+)/\d+\] Loss")


def step_times(text):
    t = [(int(s), datetime.datetime.strptime(ts, "%Y-%m-%d %H:%M:%S.%f"))
         for ts, s in STAMP.findall(text)]
    t.sort()
    return [(b[1] - a[1]).total_seconds() for a, b in zip(t, t[1:]) if a[0] >= 2]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", required=True)
    ap.add_argument("--steps", type=int, default=14)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    src = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    flags = ["--model-name-or-path", os.path.join(src, "examples/llama-ap"),
             "--dataset", os.path.join(src, "examples/data/man_summaries.jsonl"),
             "--batch-size", "8", "--block-size", "128", "--lr", "1e-4", "--no-shuffle",
             "--log-interval", "1", "--max-steps", str(a.steps)]
    env = dict(os.environ, MOREH_ENABLE_ADVANCED_PARALLELIZATION="0",
               PYTHONPATH=os.path.join(a.build, "python"),
               MOREH_HOME=tempfile.mkdtemp(prefix="moreh-bench-home-"))
    env.pop("MOREH_SCHEDULER", None)
    out = tempfile.mkdtemp(prefix="moreh-bench-out-")
    progs = {"cpp": [os.path.join(a.build, "bin", "moreh-run"), "train"],
             "python": [sys.executable, os.path.join(src, "examples/text_summarization_for_ap.py")]}
    times = {k: [] for k in progs}
    for r in range(a.rounds):
        for name, cmd in progs.items():
            p = subprocess.run(cmd + flags + ["--save-model-dir", os.path.join(out, name)],
                               env=env, capture_output=True, text=True, timeout=1200)
            if p.returncode != 0:
                print(p.stdout[-2000:], p.stderr[-2000:], file=sys.stderr)
                sys.exit(1)
            dt = step_times(p.stdout + p.stderr)
            print(f"round {r + 1} {name:>6}: median step {statistics.median(dt):.4f} s over "
                  f"{len(dt)} steps")
            times[name] += dt
    cpp, py = statistics.median(times["cpp"]), statistics.median(times["python"])
    print(f"C++ program {cpp:.4f} s/step, Python {py:.4f} s/step (medians of "
          f"{len(times['cpp'])} and {len(times['python'])} steps)")
    print(f"BENCH python_step_s {py:.4f} s")
    print(f"BENCH cpp_step_s {cpp:.4f} s")
    print(f"BENCH python_step_overhead {py / cpp:.4f} ratio")


if __name__ == "__main__":
    main()
