#!/usr/bin/env python3
"""The PyTorch peer of bench/train: the reference script's training loop with transformers'
model for the config's family (AutoModelForCausalLM, PyTorch 1.13 eager, f32; Qwen3, which
transformers 4.46 lacks: the hand-written eager reference of tests/reference) on the model config, tokenizer and data: every
prompt tokenized with LlamaTokenizer (padding to the block, pad id 0), no shuffle, AdamW, the same
batch, block and threads as ours. Prints one JSON line with the time to the first step (from process
start), steady-state tokens/s (steps after the warm-up) and peak RSS."""
import argparse
import json
import os
import resource
import sys
import time

T0 = time.time()

import torch  # noqa: E402
from transformers import AutoConfig, AutoModelForCausalLM, LlamaTokenizer  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--block-size", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--threads", type=int, default=0)
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    tok = LlamaTokenizer.from_pretrained(a.model, legacy=True)
    tok.pad_token_id = 0
    with open(os.path.join(a.model, "config.json")) as f:
        cfg = json.load(f)
    if cfg.get("model_type") == "qwen3":
        sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                                        "tests", "reference"))
        from qwen3_reference import Qwen3ForCausalLMReference
        model = Qwen3ForCausalLMReference(cfg)
    else:
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(a.model),
                                                 attn_implementation="eager")
    model.train()
    prompts = []
    with open(a.dataset) as f:
        for line in f:
            r = json.loads(line)
            prompts.append(f"[SUMMARIZE] {r['article']} [/SUMMARIZE]\n{r['highlights']}")
    ids = torch.tensor([tok(p, padding="max_length", truncation=True,
                            max_length=a.block_size)["input_ids"] for p in prompts])
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr)
    first = None
    for step in range(a.steps):
        if step == a.warmup:
            t_steady = time.time()
        x = ids[step * a.batch_size:(step + 1) * a.batch_size]
        mask = (x != 0).long()
        labels = x.clone()
        labels[mask == 0] = -100
        loss = model(input_ids=x, attention_mask=mask, labels=labels, use_cache=False).loss
        loss.backward()
        opt.step()
        model.zero_grad(set_to_none=True)
        value = loss.item()
        if first is None:
            first = time.time() - T0
    steady = time.time() - t_steady
    print(json.dumps({
        "impl": "pytorch+transformers", "first_step_s": round(first, 3),
        "tokens_per_s": round((a.steps - a.warmup) * a.batch_size * a.block_size / steady, 1),
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "last_loss": round(value, 5), "threads": torch.get_num_threads()}))


if __name__ == "__main__":
    main()
