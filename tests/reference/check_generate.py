#!/usr/bin/env python3
"""`moreh-run generate` against transformers' generate on the same checkpoint, every family.

For each family a small model (the family's features: Llama 3 rope scaling and biases, Mistral's
and Gemma 2's sliding windows shorter than prompt + output, Qwen2's biases and tied embeddings,
Qwen3's q/k norms, Gemma 2's soft-capping) is initialised by transformers with weights large
enough that the next token is never a near tie, saved, and continued from the same prompt:
greedy decoding with the KV cache must give transformers' `generate(do_sample=False)` ids token
for token (Qwen3: transformers 4.46 has none, so the hand-written reference's greedy loop without
a cache; Gemma 2: transformers' model in that loop, as its generate's HybridCache needs torch 2). Sampling: the same seed gives the same text, another seed other text, top-p near 0 the
greedy text; bad flags are named.
usage: check_generate.py --bin BUILD/bin --source REPO [--device cuda:0]
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from training_checks import FAIL, check  # noqa: E402

NEW = 24
PROMPT = "[SUMMARIZE] The man who walked across the bridge"
FAMILIES = [
    ("llama3", {"head_dim": 48, "attention_bias": True, "mlp_bias": True, "rope_theta": 500000.0,
                "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                 "high_freq_factor": 4.0, "original_max_position_embeddings": 16}}),
    ("mistral", {"model_type": "mistral", "sliding_window": 8,
                 "architectures": ["MistralForCausalLM"]}),
    ("qwen2", {"model_type": "qwen2", "tie_word_embeddings": True, "rope_theta": 1000000.0,
               "architectures": ["Qwen2ForCausalLM"]}),
    ("qwen3", {"model_type": "qwen3", "head_dim": 48, "rope_theta": 1000000.0,
               "architectures": ["Qwen3ForCausalLM"]}),
    ("gemma2", {"model_type": "gemma2", "architectures": ["Gemma2ForCausalLM"],
                "hidden_activation": "gelu_pytorch_tanh", "hidden_act": "gelu_pytorch_tanh",
                "head_dim": 48, "query_pre_attn_scalar": 40, "sliding_window": 8,
                "attn_logit_softcapping": 50.0, "final_logit_softcapping": 30.0,
                # Untied: with random tied weights the scaled embedding makes the model repeat one
                # token, which would test the cache little.
                "tie_word_embeddings": False, "attention_bias": False}),
]


def make_model(d, src, family, changes):
    from transformers import AutoConfig, AutoModelForCausalLM
    mini = os.path.join(src, "examples", "llama-mini")
    fam = os.path.join(src, "examples", "families", family)
    tok_dir = fam if os.path.exists(os.path.join(fam, "tokenizer.json")) else mini
    with open(os.path.join(mini, "config.json")) as f:
        cfg = {**json.load(f), "num_hidden_layers": 3, "initializer_range": 0.25, **changes}
    if tok_dir == fam:
        with open(os.path.join(fam, "config.json")) as f:
            ids = json.load(f)
        for k in ("bos_token_id", "eos_token_id", "pad_token_id"):
            if k in ids:
                cfg[k] = ids[k]
    os.makedirs(d)
    for name in ("tokenizer.model", "tokenizer.json", "tokenizer_config.json"):
        if os.path.exists(os.path.join(tok_dir, name)):
            shutil.copy(os.path.join(tok_dir, name), d)
    torch.manual_seed(7)
    if family == "qwen3":
        from qwen3_reference import Qwen3ForCausalLMReference
        model = Qwen3ForCausalLMReference(cfg)
        with torch.no_grad():
            for n, p in model.named_parameters():
                if "norm" not in n:
                    p.normal_(0, cfg["initializer_range"])
        from safetensors.torch import save_file
        with open(os.path.join(d, "config.json"), "w") as f:
            json.dump(cfg, f)
        save_file({k: v.contiguous() for k, v in model.state_dict().items()},
                  os.path.join(d, "model.safetensors"), metadata={"format": "pt"})
        return model
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(cfg, f)
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(d),
                                             torch_dtype=torch.float32,
                                             attn_implementation="eager")
    model.save_pretrained(d, safe_serialization=True)
    return model


def greedy_without_cache(model, ids, n):
    """The reference loop: the whole sequence every step, the last position's argmax."""
    ids = list(ids)
    with torch.no_grad():
        for _ in range(n):
            ids.append(int(model(torch.tensor([ids]), use_cache=False).logits[0, -1].argmax()))
    return ids


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--source", required=True)
    ap.add_argument("--device", default="",
                    help="MOREH_DEVICE for moreh-run generate, e.g. cuda:0 (computing in f32; the "
                         "reference stays on the CPU)")
    a = ap.parse_args()
    torch.set_num_threads(2)
    # transformers' generate asks whether FSDP manages the model, which imports
    # torch.distributed.fsdp: Debian's torch 1.13 fails that import on Python 3.11 (a dataclass
    # with a mutable default). No FSDP here.
    import transformers.generation.utils as generation_utils
    generation_utils.is_fsdp_managed_module = lambda module: False
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    run = os.path.join(a.bin, "moreh-run")
    src = os.path.abspath(a.source)
    tmp = tempfile.mkdtemp(prefix="moreh-generate-")
    env = dict(os.environ, MOREH_HOME=os.path.join(tmp, "home"))
    for k in ("MOREH_SCHEDULER", "MOREH_DEVICE_SIZE", "MOREH_ENABLE_ADVANCED_PARALLELIZATION"):
        env.pop(k, None)
    if a.device:
        env.update(MOREH_DEVICE=a.device, MOREH_COMPUTE_DTYPE="f32")

    def generate(model_dir, *flags):
        r = subprocess.run([run, "generate", "--model-name-or-path", model_dir, "--prompt", PROMPT,
                            "--print-token-ids"] + list(flags), env=env, capture_output=True,
                           text=True, timeout=300)
        if r.returncode != 0:
            return r, None
        lines = [x for x in r.stdout.splitlines() if x.startswith('{"')]
        return r, json.loads(lines[-1]) if lines else None

    try:
        for family, changes in FAMILIES:
            d = os.path.join(tmp, family)
            model = make_model(d, src, family, changes)
            model.eval()
            r, got = generate(d, "--max-new-tokens", str(NEW), "--ignore-eos")
            check(f"{family}: moreh-run generate exits 0", got is not None, r.stderr[-2000:])
            if got is None:
                continue
            ids = got["prompt_ids"]
            if family == "qwen3":
                want = greedy_without_cache(model, ids, NEW)[len(ids):]
                what = "the reference's greedy loop"
            elif family == "gemma2":  # its HybridCache needs torch._dynamo (torch 2)
                want = greedy_without_cache(model, ids, NEW)[len(ids):]
                what = "transformers' Gemma2 greedy without a cache"
            else:
                with torch.no_grad():
                    out = model.generate(torch.tensor([ids]), attention_mask=torch.ones(
                        1, len(ids), dtype=torch.long), max_new_tokens=NEW, min_new_tokens=NEW,
                        do_sample=False, pad_token_id=0)
                want = out[0, len(ids):].tolist()
                what = "transformers' generate"
            first_diff = next((i for i, (x, y) in enumerate(zip(got["new_ids"], want)) if x != y),
                              None)
            check(f"{family}: greedy ids equal {what} token for token ({len(want)} tokens, "
                  f"{len(set(want))} distinct)", got["new_ids"] == want,
                  f"first difference at {first_diff}: {got['new_ids']} vs {want}")
            check(f"{family}: the output is not one repeated token", len(set(want)) > 3, want)
            if family == "llama3":
                s1 = generate(d, "--max-new-tokens", "16", "--temperature", "1.0", "--top-p", "0.9",
                              "--seed", "1", "--ignore-eos")[1]
                s1b = generate(d, "--max-new-tokens", "16", "--temperature", "1.0", "--top-p",
                               "0.9", "--seed", "1", "--ignore-eos")[1]
                s2 = generate(d, "--max-new-tokens", "16", "--temperature", "1.0", "--top-p", "0.9",
                              "--seed", "2", "--ignore-eos")[1]
                tiny = generate(d, "--max-new-tokens", str(NEW), "--temperature", "1.0",
                                "--top-p", "1e-9", "--seed", "3", "--ignore-eos")[1]
                check("sampling: the same seed gives the same ids", s1 and s1b and
                      s1["new_ids"] == s1b["new_ids"])
                check("sampling: another seed gives other ids", s1 and s2 and
                      s1["new_ids"] != s2["new_ids"], (s1, s2))
                check("sampling: top-p near 0 keeps only the most likely token (greedy)",
                      tiny and tiny["new_ids"] == want, tiny)
                for flags, needle in ((["--top-p", "0"], "--top-p"),
                                      (["--temperature", "-1"], "--temperature"),
                                      (["--max-new-tokens", "x"], "--max-new-tokens")):
                    r, _ = generate(d, *flags)
                    check(f"bad {' '.join(flags)} is named", r.returncode != 0 and
                          needle in r.stderr + r.stdout, (r.stderr + r.stdout)[-500:])
                r, _ = generate(os.path.join(tmp, "nowhere"))
                check("a missing model directory is named", r.returncode != 0 and
                      "nowhere" in r.stderr + r.stdout, (r.stderr + r.stdout)[-500:])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print("FAILED: " + ", ".join(FAIL) if FAIL else "all checks passed")
    return 1 if FAIL else 0


if __name__ == "__main__":
    sys.exit(main())
