#!/usr/bin/env python3
"""Multi-process collectives on 127.0.0.1 over UCX: spawns N ranks of moreh_comm_rank per case and
checks their verdicts. Cases: 2, 3 and 4 ranks (sizes 0, 1, odd, 64 MiB; f32, bf16 and f16; all-reduce
sum/avg, reduce-scatter, all-gather, broadcast, barrier), 8 ranks in a 2x2x2 grid, and a rank that
dies mid-collective (every other rank must report an error naming a peer within the timeout).
Ends with 'N passed, M failed'."""
import argparse
import os
import re
import subprocess
import sys
import tempfile
import time


def run(binary, world, test, timeout_ms=10000, limit=120):
    with tempfile.TemporaryDirectory() as d:
        procs = [subprocess.Popen([binary, "--rank", str(r), "--world", str(world), "--dir", d,
                                   "--test", test, "--timeout-ms", str(timeout_ms)],
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                 for r in range(world)]
        t0 = time.time()
        outs = []
        for p in procs:
            try:
                out, _ = p.communicate(timeout=max(1, limit - (time.time() - t0)))
            except subprocess.TimeoutExpired:
                for q in procs:
                    q.kill()
                return None, time.time() - t0
            outs.append((p.returncode, out))
        return outs, time.time() - t0


os.environ.setdefault("UCX_LOG_LEVEL", "error")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", required=True)
    a = ap.parse_args()
    passed = failed = 0

    def verdict(ok, name, detail=""):
        nonlocal passed, failed
        print(f"{'PASS' if ok else 'FAIL'}  {name}{'' if ok else ': ' + detail}")
        passed += ok
        failed += not ok

    for world in (2, 3, 4):
        outs, secs = run(a.binary, world, "collectives")
        if outs is None:
            verdict(False, f"collectives on {world} ranks", "hung")
            continue
        bad = [f"rank {r}: {out.strip()}" for r, (rc, out) in enumerate(outs) if rc != 0]
        checks = sum(out.count("PASS ") for _, out in outs)
        verdict(not bad and checks > 0, f"collectives on {world} ranks ({checks} checks, {secs:.1f} s)",
                "; ".join(bad)[-2000:])
    outs, secs = run(a.binary, 8, "grid")
    ok = outs is not None and all(rc == 0 for rc, _ in outs)
    verdict(ok, f"2x2x2 grid groups on 8 ranks ({secs:.1f} s)",
            "hung" if outs is None else " | ".join(o.strip() for _, o in outs)[-2000:])
    timeout_ms = 3000
    for test in ("die", "die_detect"):
      outs, secs = run(a.binary, 4, test, timeout_ms=timeout_ms, limit=60)
      if outs is None:
        verdict(False, f"{test}: a rank dies mid-collective", "the survivors hung")
      else:
        survivors = outs[:-1]
        named = all(rc == 3 and re.search(r"rank\(?s?\)? \d", out) and "REBUILT ok" in out
                    for rc, out in survivors)
        times = [float(m.group(1)) for _, out in survivors
                 for m in [re.search(r"after ([\d.]+) s", out)] if m]
        in_time = len(times) == len(survivors) and max(times) <= timeout_ms / 1000 + 2.0
        verdict(named and in_time, f"{test}: a rank dies mid-collective, every survivor errs "
                f"naming a peer within the timeout, then rebuild the group ({', '.join(f'{t:.1f}' for t in times)} s)",
                " | ".join(o.strip() for _, o in survivors))
    print(f"{passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
