#!/usr/bin/env python3
"""The PyTorch peer of bench/cpu_step: the same Llama-shaped stack (Hugging Face LlamaForCausalLM
semantics, written in plain torch so transformers is not needed), one training step of forward,
backward and torch.optim.AdamW, eager mode, f32, on the CPU with the same threads.

Prints one JSON line: tokens/s, step time, peak resident-memory growth over the baseline taken
after importing torch and before building the model."""
import argparse
import json
import math
import resource
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


def rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


class RMSNorm(nn.Module):
    def __init__(self, c, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(c))
        self.eps = eps

    def forward(self, x):
        var = x.pow(2).mean(-1, keepdim=True)
        return self.weight * (x * torch.rsqrt(var + self.eps))


def rotate_half(x):
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


class Block(nn.Module):
    def __init__(self, c, heads, ffn, eps):
        super().__init__()
        self.h, self.d = heads, c // heads
        self.input_layernorm = RMSNorm(c, eps)
        self.q_proj = nn.Linear(c, c, bias=False)
        self.k_proj = nn.Linear(c, c, bias=False)
        self.v_proj = nn.Linear(c, c, bias=False)
        self.o_proj = nn.Linear(c, c, bias=False)
        self.post_attention_layernorm = RMSNorm(c, eps)
        self.gate_proj = nn.Linear(c, ffn, bias=False)
        self.up_proj = nn.Linear(c, ffn, bias=False)
        self.down_proj = nn.Linear(ffn, c, bias=False)

    def forward(self, x, cos, sin, mask):
        b, t, c = x.shape
        h = self.input_layernorm(x)
        q = self.q_proj(h).view(b, t, self.h, self.d).transpose(1, 2)
        k = self.k_proj(h).view(b, t, self.h, self.d).transpose(1, 2)
        v = self.v_proj(h).view(b, t, self.h, self.d).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        s = torch.matmul(q, k.transpose(2, 3)) / math.sqrt(self.d) + mask
        p = F.softmax(s, dim=-1, dtype=torch.float32)
        a = torch.matmul(p, v).transpose(1, 2).reshape(b, t, c)
        x = x + self.o_proj(a)
        h = self.post_attention_layernorm(x)
        return x + self.down_proj(F.silu(self.gate_proj(h)) * self.up_proj(h))


class Llama(nn.Module):
    def __init__(self, vocab, c, layers, heads, ffn, eps=1e-6, theta=10000.0):
        super().__init__()
        self.embed_tokens = nn.Embedding(vocab, c)
        self.layers = nn.ModuleList([Block(c, heads, ffn, eps) for _ in range(layers)])
        self.norm = RMSNorm(c, eps)
        self.lm_head = nn.Linear(c, vocab, bias=False)
        self.d, self.theta = c // heads, theta

    def forward(self, ids, attention_mask, labels):
        b, t = ids.shape
        inv = 1.0 / (self.theta ** (torch.arange(0, self.d, 2).float() / self.d))
        freqs = torch.outer(torch.arange(t).float(), inv)
        emb = torch.cat((freqs, freqs), dim=-1)
        cos, sin = emb.cos()[None, None], emb.sin()[None, None]
        causal = torch.full((t, t), float("-inf")).triu(1)
        pad = (1.0 - attention_mask[:, None, None, :].float()) * torch.finfo(torch.float32).min
        mask = causal[None, None] + pad
        x = self.embed_tokens(ids)
        for layer in self.layers:
            x = layer(x, cos, sin, mask)
        logits = self.lm_head(self.norm(x))
        return F.cross_entropy(logits[:, :-1].reshape(-1, logits.size(-1)),
                               labels[:, 1:].reshape(-1), ignore_index=-100)


def main():
    ap = argparse.ArgumentParser()
    for name, default in [("hidden", 256), ("layers", 4), ("heads", 8), ("ffn", 688),
                          ("vocab", 4096), ("seq", 256), ("batch", 8), ("steps", 5),
                          ("warmup", 1), ("threads", 0)]:
        ap.add_argument("--" + name, type=int, default=default)
    a = ap.parse_args()
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    rss0 = rss_bytes()
    torch.manual_seed(0)
    model = Llama(a.vocab, a.hidden, a.layers, a.heads, a.ffn)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    n = a.batch * a.seq
    ids = torch.tensor([(i * 2654435761) % a.vocab for i in range(n)]).view(a.batch, a.seq)
    mask = torch.ones_like(ids)

    def step():
        loss = model(ids, mask, ids)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.item()

    for _ in range(a.warmup):
        step()
    t0 = time.perf_counter()
    for _ in range(a.steps):
        loss = step()
    secs = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"impl": "pytorch", "version": torch.__version__,
                      "tokens_per_s": round(n * a.steps / secs, 1),
                      "step_ms": round(1e3 * secs / a.steps, 2), "loss": round(loss, 5),
                      "peak_rss_growth_bytes": peak - rss0,
                      "threads": torch.get_num_threads()}))


if __name__ == "__main__":
    main()
