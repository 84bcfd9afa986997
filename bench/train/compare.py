#!/usr/bin/env python3
"""bench/run train [--family F]: `moreh-run train` on the shipped model (or, with --family, the
same sizes as another family: llama3, mistral, qwen2, qwen3, gemma2) and data against the PyTorch peer
(bench/train/torch_train.py), in the same run. Ours: time to the first step and steady tokens/s
from the log's timestamps (one line per step), peak RSS of the process. Prints BENCH lines last."""
import argparse
import datetime
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time


def run_ours(a):
    with tempfile.TemporaryDirectory() as out:
        t0 = time.time()
        p = subprocess.run([a.moreh_run, "train", "--model-name-or-path", a.model, "--dataset",
                            a.dataset, "--block-size", str(a.block_size), "--batch-size",
                            str(a.batch_size), "--lr", str(a.lr), "--max-steps", str(a.steps),
                            "--log-interval", "1", "--no-shuffle", "--max-grad-norm", "0",
                            "--save-model-dir", out],  # the peer's loop does not clip
                           capture_output=True, text=True,
                           env=dict(os.environ, MOREH_NUM_THREADS=str(a.threads)))
    if p.returncode != 0:
        sys.exit("moreh-run failed:\n" + p.stderr[-2000:])
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    stamps = []
    for line in (p.stdout + p.stderr).splitlines():
        m = re.match(r"\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3})\] \[info\] \[Step (\d+)/", line)
        if m:
            stamps.append(datetime.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S.%f").timestamp())
    if len(stamps) != a.steps:
        sys.exit(f"expected {a.steps} step lines, got {len(stamps)}")
    steady = stamps[-1] - stamps[a.warmup - 1]
    return {"impl": "moreh", "first_step_s": round(stamps[0] - t0, 3),
            "tokens_per_s": round((a.steps - a.warmup) * a.batch_size * a.block_size / steady, 1),
            "peak_rss_bytes": peak}


def run_peer(a, tuned):
    env = dict(os.environ)
    if tuned:
        env["OMP_WAIT_POLICY"] = "PASSIVE"
        env["GLIBC_TUNABLES"] = ("glibc.malloc.mmap_threshold=2147483647:"
                                 "glibc.malloc.trim_threshold=4294967295")
    p = subprocess.run([a.python, os.path.join(os.path.dirname(__file__), "torch_train.py"),
                        "--model", a.model, "--dataset", a.dataset, "--block-size",
                        str(a.block_size), "--batch-size", str(a.batch_size), "--steps",
                        str(a.steps), "--warmup", str(a.warmup), "--lr", str(a.lr), "--threads",
                        str(a.threads)], capture_output=True, text=True, env=env)
    if p.returncode != 0:
        sys.exit("peer failed:\n" + p.stderr[-2000:])
    return json.loads(p.stdout.strip().splitlines()[-1])


# The shipped model's sizes with each family's features (as tests/reference uses them).
FAMILIES = {
    "llama3": {"head_dim": 48, "attention_bias": True, "mlp_bias": True,
               "tie_word_embeddings": True, "rope_theta": 500000.0,
               "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                "high_freq_factor": 4.0, "original_max_position_embeddings": 64}},
    "mistral": {"model_type": "mistral", "sliding_window": 128,
                "architectures": ["MistralForCausalLM"]},
    "qwen2": {"model_type": "qwen2", "tie_word_embeddings": True, "rope_theta": 1000000.0,
              "architectures": ["Qwen2ForCausalLM"]},
    "qwen3": {"model_type": "qwen3", "head_dim": 48, "rope_theta": 1000000.0,
              "architectures": ["Qwen3ForCausalLM"]},
    "gemma2": {"model_type": "gemma2", "architectures": ["Gemma2ForCausalLM"],
               "hidden_activation": "gelu_pytorch_tanh", "hidden_act": "gelu_pytorch_tanh",
               "head_dim": 32, "query_pre_attn_scalar": 32, "sliding_window": 128,
               "attn_logit_softcapping": 50.0, "final_logit_softcapping": 30.0,
               "tie_word_embeddings": True},
}


def main():
    ap = argparse.ArgumentParser()
    for k, v in [("--moreh-run", None), ("--python", None), ("--model", None), ("--dataset", None)]:
        ap.add_argument(k, required=True)
    ap.add_argument("--block-size", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--family", choices=sorted(FAMILIES), default=None)
    a = ap.parse_args()
    tag = ""
    if a.family:
        d = tempfile.mkdtemp(prefix="bench-train-")
        shutil.copy(os.path.join(a.model, "tokenizer.model"), d)
        with open(os.path.join(a.model, "config.json")) as f:
            cfg = dict(json.load(f), **FAMILIES[a.family])
        with open(os.path.join(d, "config.json"), "w") as f:
            json.dump(cfg, f)
        a.model, tag = d, "_" + a.family
    ours = run_ours(a)
    default = run_peer(a, tuned=False)
    tuned = run_peer(a, tuned=True)
    best = max(default, tuned, key=lambda r: r["tokens_per_s"])
    print("moreh:           " + json.dumps(ours))
    print("pytorch default: " + json.dumps(default))
    print("pytorch tuned:   " + json.dumps(tuned))
    print(f"BENCH train{tag}_vs_pytorch_default {ours['tokens_per_s'] / default['tokens_per_s']:.2f} x")
    print(f"BENCH train{tag}_vs_pytorch {ours['tokens_per_s'] / best['tokens_per_s']:.2f} x")
    print(f"BENCH train{tag}_first_step_s {ours['first_step_s']:.2f} s")
    print(f"BENCH train{tag}_first_step_vs_pytorch {ours['first_step_s'] / best['first_step_s']:.2f} x")
    print(f"BENCH train{tag}_peak_rss_vs_pytorch {ours['peak_rss_bytes'] / best['peak_rss_bytes']:.2f} x")


if __name__ == "__main__":
    main()
