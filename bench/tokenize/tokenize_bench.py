#!/usr/bin/env python3
"""bench/tokenize: tokens/s of our tokenizer.json support against Hugging Face tokenizers.

The tokenizer is trained here (tests/runtime/data/check_tokenizer_json.py builds it: byte-level BPE
with Llama 3's pre-tokenizer, post-processor, decoder and ignore_merges). The text is generated
(~8 MB), split into lines (newline kept), and each side encodes every line without special tokens
on one thread: ours with `moreh_tokenize_tool PATH --bench FILE 2`, theirs with
Tokenizer.encode_batch under TOKENIZERS_PARALLELISM=false. Both take the faster of 2 passes (both
keep a word cache across passes). The token totals must agree. Prints the two tokens/s lines and
then, last, BENCH tokenize_vs_hf_tokenizers <ours / theirs> x.
"""
import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time

os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ.setdefault("RAYON_NUM_THREADS", "1")
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "tests", "runtime", "data"))
import check_tokenizer_json as c  # noqa: E402
from tokenizers import Tokenizer  # noqa: E402


def measure(tool, path, text_file, lines):
    tok = Tokenizer.from_file(path)
    best = float("inf")
    for _ in range(2):
        t0 = time.perf_counter()
        enc = tok.encode_batch(lines, add_special_tokens=False)
        best = min(best, time.perf_counter() - t0)
    theirs = sum(len(e.ids) for e in enc)
    p = subprocess.run([tool, path, "--bench", text_file, "2"], capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"{tool} failed: {p.stderr}")
    o = json.loads(p.stdout)
    if o["tokens"] != theirs or o["lines"] != len(lines):
        sys.exit(f"token totals differ: ours {o['tokens']} ({o['lines']} lines), "
                 f"tokenizers {theirs} ({len(lines)} lines)")
    return o["tokens"] / o["seconds"], theirs / best, theirs


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tool", required=True)
    ap.add_argument("--mb", type=float, default=8)
    ap.add_argument("--all", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="moreh_tokbench_") as work:
        rng = random.Random(7)
        chunks, size = [], 0
        while size < args.mb * 1e6:
            s = c.rand_text(rng, rng.randint(5, 80)) + "\n"
            chunks.append(s)
            size += len(s.encode("utf-8"))
        text = "".join(chunks)
        text_file = os.path.join(work, "text.txt")
        with open(text_file, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        lines = text.split("\n")
        lines = [x + "\n" for x in lines[:-1]] + ([lines[-1]] if lines[-1] else [])
        built = {name: path for name, path, _, _ in c.build_all(work, with_transformers=False)}
        names = ["llama3"] + (["qwen2", "gemma"] if args.all else [])
        print(f"text: {size / 1e6:.1f} MB, {len(lines)} lines; one thread; tokenizers "
              f"{__import__('tokenizers').__version__} encode_batch (TOKENIZERS_PARALLELISM=false);"
              f" best of 2 passes each")
        results = {}
        for name in names:
            ours, theirs, n = measure(args.tool, built[name], text_file, lines)
            results[name] = (ours, theirs)
            print(f"{name}: {n} tokens; ours {ours:,.0f} tokens/s, tokenizers {theirs:,.0f} "
                  f"tokens/s, {ours / theirs:.2f} x")
        ours, theirs = results["llama3"]
        print(f"BENCH tokenize_ours_tokens_per_s {ours:.0f} tokens/s")
        print(f"BENCH tokenize_hf_tokenizers_tokens_per_s {theirs:.0f} tokens/s")
        print(f"BENCH tokenize_vs_hf_tokenizers {ours / theirs:.2f} x")


if __name__ == "__main__":
    main()
