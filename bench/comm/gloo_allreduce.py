#!/usr/bin/env python3
"""The gloo peer: one rank of torch.distributed (gloo backend, python3-torch) all-reducing a
buffer of --bytes f32 over TCP on 127.0.0.1. Rank 0 prints JSON with the bus bandwidth
(nccl-tests' formula: 2 (n - 1) / n x bytes / time)."""
import argparse
import json
import time

import torch
import torch.distributed as dist

ap = argparse.ArgumentParser()
ap.add_argument("--rank", type=int, required=True)
ap.add_argument("--world", type=int, required=True)
ap.add_argument("--port", type=int, required=True)
ap.add_argument("--bytes", type=int, default=64 << 20)
ap.add_argument("--iters", type=int, default=10)
a = ap.parse_args()
torch.set_num_threads(1)
dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{a.port}", rank=a.rank,
                        world_size=a.world)
x = torch.ones(a.bytes // 4)
for _ in range(2):
    dist.all_reduce(x)
dist.barrier()
t0 = time.perf_counter()
for _ in range(a.iters):
    dist.all_reduce(x)
secs = (time.perf_counter() - t0) / a.iters
if a.rank == 0:
    n = a.world
    print(json.dumps({"bytes": a.bytes, "seconds": round(secs, 5),
                      "busbw_gb_per_s": round(2 * (n - 1) / n * a.bytes / secs / 1e9, 3)}))
dist.destroy_process_group()
