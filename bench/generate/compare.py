"""bench/run generate: decode speed of `moreh-run generate` against transformers' generate, same
checkpoint, prompt and number of new tokens, greedy, both on 2 threads, alternated rounds."""
import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import tempfile
import time

import torch


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", required=True)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    torch.set_num_threads(2)
    import transformers.generation.utils as generation_utils
    generation_utils.is_fsdp_managed_module = lambda module: False  # torch 1.13 on Python 3.11
    from transformers import AutoConfig, AutoModelForCausalLM, LlamaTokenizer
    src = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    tmp = tempfile.mkdtemp(prefix="moreh-bench-generate-")
    d = os.path.join(tmp, "model")
    os.makedirs(d)
    shutil.copy(os.path.join(src, "examples/llama-ap/config.json"), d)
    shutil.copy(os.path.join(src, "examples/llama-ap/tokenizer.model"), d)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(d),
                                             torch_dtype=torch.float32)
    model.save_pretrained(d, safe_serialization=True)
    model.eval()
    with open(os.path.join(src, "examples/data/man_summaries.jsonl")) as f:
        r = json.loads(f.readline())
    prompt = f"[SUMMARIZE] {r['article'][:300]} [/SUMMARIZE]\n"
    ids = LlamaTokenizer.from_pretrained(d, legacy=True)(prompt, return_tensors="pt").input_ids
    n = a.new_tokens
    env = dict(os.environ, MOREH_NUM_THREADS="2")
    for k in ("MOREH_SCHEDULER", "MOREH_DEVICE_SIZE", "MOREH_ENABLE_ADVANCED_PARALLELIZATION"):
        env.pop(k, None)

    def ours():
        p = subprocess.run([os.path.join(a.build, "bin", "moreh-run"), "generate",
                            "--model-name-or-path", d, "--prompt", prompt, "--max-new-tokens",
                            str(n), "--ignore-eos", "--print-token-ids"],
                           env=env, capture_output=True, text=True, timeout=600)
        assert p.returncode == 0, p.stderr[-2000:]
        m = re.search(r"(\d+) new tokens, ([0-9.]+) tokens/s after the first", p.stdout + p.stderr)
        new = json.loads([x for x in p.stdout.splitlines() if x.startswith('{"')][-1])["new_ids"]
        return float(m.group(2)), new

    def theirs():
        with torch.no_grad():
            kw = dict(attention_mask=torch.ones_like(ids), do_sample=False, pad_token_id=0)
            t0 = time.perf_counter()
            model.generate(ids, max_new_tokens=1, min_new_tokens=1, **kw)
            t1 = time.perf_counter()
            out = model.generate(ids, max_new_tokens=n, min_new_tokens=n, **kw)
            t2 = time.perf_counter()
        return (n - 1) / ((t2 - t1) - (t1 - t0)), out[0, ids.shape[1]:].tolist()

    rates = {"moreh": [], "transformers": []}
    for r in range(a.rounds):
        o, new_o = ours()
        t, new_t = theirs()
        rates["moreh"].append(o)
        rates["transformers"].append(t)
        print(f"round {r + 1}: moreh {o:.1f} tokens/s, transformers {t:.1f} tokens/s, "
              f"same ids: {new_o == new_t}")
    shutil.rmtree(tmp, ignore_errors=True)
    mo, tr = statistics.median(rates["moreh"]), statistics.median(rates["transformers"])
    print(f"{ids.shape[1]}-token prompt, {n} new tokens, greedy, 2 threads (medians of "
          f"{a.rounds} rounds)")
    print(f"BENCH generate_tokens_per_s {mo:.1f} tokens/s")
    print(f"BENCH transformers_generate_tokens_per_s {tr:.1f} tokens/s")
    print(f"BENCH generate_vs_transformers {mo / tr:.3f} ratio")


if __name__ == "__main__":
    main()
