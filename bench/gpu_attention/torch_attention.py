"""The peer for attention_bench: torch.nn.functional.scaled_dot_product_attention (bf16, causal,
grouped-query heads; PyTorch picks its flash kernel) forward and backward on [B, T, H, D] tensors
viewed as [B, H, T, D], timed the same way (3 warm-ups, CUDA events, medians). Prints JSON."""
import argparse
import json

import torch
import torch.nn.functional as F

p = argparse.ArgumentParser()
p.add_argument("--batch", type=int, default=4)
p.add_argument("--seq", type=int, default=2048)
p.add_argument("--heads", type=int, default=32)
p.add_argument("--kv-heads", type=int, default=4)
p.add_argument("--head-dim", type=int, default=64)
p.add_argument("--reps", type=int, default=20)
args = p.parse_args()
b, t, h, hkv, d = args.batch, args.seq, args.heads, args.kv_heads, args.head_dim
g = torch.Generator(device="cuda").manual_seed(7)


def rand(heads):
    return torch.randn(b, t, heads, d, device="cuda", dtype=torch.bfloat16, generator=g)


q, k, v, dout = rand(h).requires_grad_(), rand(hkv).requires_grad_(), rand(hkv).requires_grad_(), rand(h)


def forward():
    # Grouped-query heads as transformers runs them: keys and values repeated to H heads.
    kk = k.transpose(1, 2).repeat_interleave(h // hkv, dim=1)
    vv = v.transpose(1, 2).repeat_interleave(h // hkv, dim=1)
    return F.scaled_dot_product_attention(q.transpose(1, 2), kk, vv, is_causal=True)


for _ in range(3):
    forward().backward(dout.transpose(1, 2))
fwd, bwd = [], []
for _ in range(args.reps):
    e0, e1, e2 = (torch.cuda.Event(enable_timing=True) for _ in range(3))
    e0.record()
    o = forward()
    e1.record()
    o.backward(dout.transpose(1, 2))
    e2.record()
    e2.synchronize()
    fwd.append(e0.elapsed_time(e1))
    bwd.append(e1.elapsed_time(e2))
fwd.sort()
bwd.sort()
f, bw = fwd[len(fwd) // 2], bwd[len(bwd) // 2]
flop = 4.0 * b * h * t * t * d / 2
print(json.dumps({"impl": "torch_sdpa", "forward_ms": round(f, 4), "backward_ms": round(bw, 4),
                  "forward_tflops": round(flop / (f * 1e-3) / 1e12, 1),
                  "backward_tflops": round(2.5 * flop / (bw * 1e-3) / 1e12, 1),
                  "total_ms": round(f + bw, 4), "torch": torch.__version__,
                  "device": torch.cuda.get_device_name(0)}))
