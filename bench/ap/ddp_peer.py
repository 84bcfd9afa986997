#!/usr/bin/env python3
"""The peer of bench/run dp_vs_ddp: PyTorch DistributedDataParallel (gloo, CPU) over N processes,
transformers.LlamaForCausalLM with the model directory's config (random init), AdamW, random tokens,
the global batch split evenly. Prints one JSON line: {"step_s", "tokens_per_s"}.
"""
import argparse
import json
import os
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def worker(rank, a, out):
    import transformers
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(a.port)
    torch.set_num_threads(a.threads)
    dist.init_process_group("gloo", rank=rank, world_size=a.procs)
    cfg = transformers.LlamaConfig.from_pretrained(a.model)
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(cfg)
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    opt = torch.optim.AdamW(ddp.parameters(), lr=1e-4)
    per = a.batch // a.procs
    g = torch.Generator().manual_seed(rank)
    times = []
    for step in range(a.steps + 1):
        ids = torch.randint(1, cfg.vocab_size, (per, a.seq), generator=g)
        dist.barrier()
        t0 = time.perf_counter()
        loss = ddp(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        dist.barrier()
        if step > 0:
            times.append(time.perf_counter() - t0)
    if rank == 0:
        step_s = sum(times) / len(times)
        out.put({"step_s": step_s, "tokens_per_s": a.batch * a.seq / step_s})
    dist.destroy_process_group()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--procs", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--port", type=int, default=29533)
    a = ap.parse_args()
    ctx = mp.get_context("spawn")
    q = ctx.SimpleQueue()
    mp.spawn(worker, args=(a, q), nprocs=a.procs, join=True)
    print(json.dumps(q.get()))


if __name__ == "__main__":
    main()
