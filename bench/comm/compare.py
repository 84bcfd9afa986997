#!/usr/bin/env python3
"""bench/run comm: our UCX transport and ring all-reduce against their peers, in the same run.
  - point-to-point bandwidth (1 MiB and 64 MiB messages, two processes on 127.0.0.1) against
    ucx_perftest -t tag_bw on the same loopback;
  - 64 MiB all-reduce across 4 local processes against torch.distributed with gloo.
Prints BENCH lines last."""
import argparse
import json
import os
import random
import re
import subprocess
import sys
import tempfile


def ranks(binary, world, test, extra):
    with tempfile.TemporaryDirectory() as d:
        ps = [subprocess.Popen([binary, "--rank", str(r), "--world", str(world), "--dir", d,
                                "--test", test] + extra, stdout=subprocess.PIPE, text=True)
              for r in range(world)]
        outs = [p.communicate(timeout=300)[0] for p in ps]
    for p in ps:
        if p.returncode != 0:
            sys.exit(f"{test} failed: {outs}")
    return [json.loads(line) for o in outs for line in o.splitlines() if line.startswith("{")][0]


def perftest_bw(size, iters):
    port = random.randint(20000, 40000)
    srv = subprocess.Popen(["ucx_perftest", "-t", "tag_bw", "-s", str(size), "-n", str(iters),
                            "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    import time
    time.sleep(0.5)
    out = subprocess.run(["ucx_perftest", "127.0.0.1", "-t", "tag_bw", "-s", str(size), "-n",
                          str(iters), "-p", str(port)], capture_output=True, text=True,
                         timeout=300).stdout
    srv.wait(timeout=30)
    m = re.search(r"Final:\s+\d+\s+[\d.]+\s+[\d.]+\s+[\d.]+\s+([\d.]+)", out)
    if not m:
        sys.exit("cannot parse ucx_perftest output:\n" + out)
    return float(m.group(1))


def gloo(python, world, nbytes, iters):
    port = random.randint(40000, 60000)
    here = os.path.dirname(__file__)
    ps = [subprocess.Popen([python, os.path.join(here, "gloo_allreduce.py"), "--rank", str(r),
                            "--world", str(world), "--port", str(port), "--bytes", str(nbytes),
                            "--iters", str(iters)], stdout=subprocess.PIPE, text=True)
          for r in range(world)]
    outs = [p.communicate(timeout=300)[0] for p in ps]
    return json.loads(outs[0].strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", required=True)
    ap.add_argument("--python", default="/usr/bin/python3")
    a = ap.parse_args()
    os.environ.setdefault("UCX_LOG_LEVEL", "error")
    lines = []
    for size, iters in ((1 << 20, 2000), (64 << 20, 60)):
        ours = ranks(a.binary, 2, "bench_p2p", ["--size", str(size), "--iters", str(iters)])
        peer = perftest_bw(size, iters)
        print(f"p2p {size >> 20} MiB: ours {ours['mb_per_s']:.0f} MB/s, ucx_perftest {peer:.0f} MB/s")
        lines.append(f"BENCH p2p_bw_vs_ucx_perftest_{size >> 20}MiB {ours['mb_per_s'] / peer:.2f} x")
    ours = ranks(a.binary, 2, "bench_lat", ["--size", "8", "--iters", "20000"])
    port = random.randint(20000, 40000)
    srv = subprocess.Popen(["ucx_perftest", "-t", "tag_lat", "-s", "8", "-n", "20000", "-p", str(port)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    import time
    time.sleep(0.5)
    out = subprocess.run(["ucx_perftest", "127.0.0.1", "-t", "tag_lat", "-s", "8", "-n", "20000",
                          "-p", str(port)], capture_output=True, text=True, timeout=300).stdout
    srv.wait(timeout=30)
    m = re.search(r"Final:\s+\d+\s+[\d.]+\s+([\d.]+)", out)
    peer_lat = float(m.group(1))
    print(f"p2p latency 8 B: ours {ours['latency_us']:.2f} us, ucx_perftest {peer_lat:.2f} us")
    # A ratio of latencies: lower is better.
    lines.append(f"BENCH p2p_latency_vs_ucx_perftest {ours['latency_us'] / peer_lat:.2f} x")
    ours = ranks(a.binary, 4, "bench_allreduce", ["--size", str(64 << 20), "--iters", "10"])
    peer = gloo(a.python, 4, 64 << 20, 10)
    print(f"all-reduce 64 MiB x 4 ranks: ours {ours['busbw_gb_per_s']:.2f} GB/s bus, "
          f"gloo {peer['busbw_gb_per_s']:.2f} GB/s bus")
    lines.append(f"BENCH allreduce_busbw_vs_gloo {ours['busbw_gb_per_s'] / peer['busbw_gb_per_s']:.2f} x")
    for line in lines:
        print(line)


if __name__ == "__main__":
    main()
