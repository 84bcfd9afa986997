"""Loss and gradients of one training step on the GPU against transformers.LlamaForCausalLM on the
same weights and tokens (both f32 on the GPU; TF32 off; transformers' eager attention).
transformers makes and saves a small random Llama; bin/moreh_cuda_llama_grads runs the runtime's
step on cuda:0 and writes its loss and gradients; this compares them. Exit 77 (skipped) where torch
sees no GPU. --cpu-dry-run runs both sides on the CPU instead (CI runs it, so the GPU machine finds a
working script and binary).

    python3 tests/cuda/check_against_transformers_gpu.py --binary DIR/moreh_cuda_llama_grads
"""
import argparse
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch

ap = argparse.ArgumentParser()
ap.add_argument("--binary", required=True)
ap.add_argument("--seed", type=int, default=int.from_bytes(os.urandom(4), "little"))
ap.add_argument("--cpu-dry-run", action="store_true")
a = ap.parse_args()
device = "cpu" if a.cpu_dry_run else "cuda"
if device == "cuda" and not torch.cuda.is_available():
    print("SKIP: torch sees no CUDA device on this machine")
    sys.exit(77)
import transformers
from safetensors.numpy import load_file

torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False
torch.manual_seed(a.seed)
where = torch.cuda.get_device_name(0) if device == "cuda" else "CPU (dry run)"
print(f"transformers {transformers.__version__}, torch {torch.__version__}, {where}, seed {a.seed}")
cfg = transformers.LlamaConfig(vocab_size=1000, hidden_size=256, intermediate_size=688,
                               num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=4,
                               max_position_embeddings=512, rms_norm_eps=1e-6,
                               tie_word_embeddings=False, attn_implementation="eager")
model = transformers.LlamaForCausalLM(cfg).float()
assert model.config._attn_implementation == "eager", model.config._attn_implementation
batch, seq = 2, 128
ids = torch.randint(0, cfg.vocab_size, (batch, seq))
failed = 0


def check(what, err, tol):
    global failed
    ok = err <= tol
    failed += not ok
    print(f"{'PASS' if ok else 'FAIL'}  {what:<44} {err:.2e} (tol {tol:g})")


with tempfile.TemporaryDirectory() as d:
    try:
        model.save_pretrained(d, safe_serialization=True)
    except TypeError:  # transformers 5 always writes safetensors and dropped the argument
        model.save_pretrained(d)
    ids.numpy().astype(np.int64).tofile(os.path.join(d, "ids.bin"))
    out = os.path.join(d, "out.safetensors")
    cmd = [a.binary, d, os.path.join(d, "ids.bin"), str(batch), str(seq), out]
    p = subprocess.run(cmd + (["--cpu"] if device == "cpu" else []), capture_output=True,
                       text=True)
    if p.returncode != 0:
        print(p.stdout, p.stderr)
        sys.exit(f"moreh_cuda_llama_grads failed ({p.returncode})")
    ours = load_file(out)
model = model.to(device)
loss = model(input_ids=ids.to(device), labels=ids.to(device)).loss
loss.backward()
loss_err = abs(float(ours["loss"]) - loss.item()) / abs(loss.item())
check("loss", loss_err if np.isfinite(loss_err) else float("inf"), 1e-5)
names = [name for name, _ in model.named_parameters()]
check("a gradient for every parameter", len(set("grad." + n for n in names) - set(ours)), 0)
worst, worst_name = 0.0, ""
for name, param in model.named_parameters():
    if "grad." + name not in ours:
        continue  # counted above
    g = param.grad.detach().cpu().numpy().astype(np.float64)
    o = ours["grad." + name].astype(np.float64)
    err = np.linalg.norm(o - g) / max(np.linalg.norm(g), 1e-30)
    if not np.isfinite(err) or err > worst:  # a NaN must not hide behind `>`
        worst, worst_name = (err if np.isfinite(err) else float("inf")), name
        if not np.isfinite(err):
            break
check(f"every gradient, rel. L2 (worst: {worst_name})", worst, 1e-4)
print(f"{'all passed' if not failed else f'{failed} failed'}")
sys.exit(1 if failed else 0)
