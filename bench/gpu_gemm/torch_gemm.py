"""The peer for gemm_bench: torch.matmul on bf16 at M = N = K, timed the same way (5 warm-ups,
CUDA events around each product, median, three rotating input sets). Prints JSON."""
import argparse
import json

import torch

p = argparse.ArgumentParser()
p.add_argument("--size", type=int, default=8192)
p.add_argument("--reps", type=int, default=30)
args = p.parse_args()
n = args.size
g = torch.Generator(device="cuda").manual_seed(7)
sets = [(torch.randn(n, n, device="cuda", dtype=torch.bfloat16, generator=g),
         torch.randn(n, n, device="cuda", dtype=torch.bfloat16, generator=g)) for _ in range(3)]
outs = [torch.empty(n, n, device="cuda", dtype=torch.bfloat16) for _ in range(3)]
for i in range(5):
    a, b = sets[i % 3]
    torch.matmul(a, b, out=outs[i % 3])
times = []
for i in range(args.reps):
    a, b = sets[i % 3]
    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    torch.matmul(a, b, out=outs[i % 3])
    stop.record()
    stop.synchronize()
    times.append(start.elapsed_time(stop))
times.sort()
median = times[len(times) // 2]
print(json.dumps({"size": n, "median_ms": round(median, 4),
                  "tflops": round(2 * n**3 / (median * 1e-3) / 1e12, 1),
                  "torch": torch.__version__, "device": torch.cuda.get_device_name(0)}))
