"""Qwen3ForCausalLM written by hand in PyTorch, for the numerics check.

transformers 4.46.3 (the newest that runs on Debian's torch 1.13) has no Qwen3, so this follows
transformers 4.51.3's models/qwen3/modeling_qwen3.py in eager mode, f32: Llama's layer with an
RMSNorm over head_dim on q and k (one [head_dim] weight shared by every head) before the rotary
embedding, scale head_dim ** -0.5, q/k/v/o biases only with attention_bias, no MLP biases. The
parameter names are transformers' (model.layers.N.self_attn.q_norm.weight, ...), so the check
compares gradients name by name; the additive mask uses finfo.min as transformers does.
"""
import json
import os
import types

import torch
from torch import nn


class RMSNorm(nn.Module):
    def __init__(self, n, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(n))
        self.eps = eps

    def forward(self, x):
        return self.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps))


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


class Qwen3ForCausalLMReference(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        C, I, V = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
        H, KV = cfg["num_attention_heads"], cfg.get("num_key_value_heads") or cfg["num_attention_heads"]
        D = cfg.get("head_dim") or 128
        eps, bias = cfg["rms_norm_eps"], bool(cfg.get("attention_bias", False))
        self.H, self.KV, self.D = H, KV, D
        self.model = nn.Module()
        self.model.embed_tokens = nn.Embedding(V, C)
        layers = []
        for _ in range(cfg["num_hidden_layers"]):
            layer = nn.Module()
            layer.input_layernorm = RMSNorm(C, eps)
            layer.self_attn = nn.Module()
            a = layer.self_attn
            a.q_proj = nn.Linear(C, H * D, bias=bias)
            a.k_proj = nn.Linear(C, KV * D, bias=bias)
            a.v_proj = nn.Linear(C, KV * D, bias=bias)
            a.o_proj = nn.Linear(H * D, C, bias=bias)
            a.q_norm = RMSNorm(D, eps)
            a.k_norm = RMSNorm(D, eps)
            layer.post_attention_layernorm = RMSNorm(C, eps)
            layer.mlp = nn.Module()
            layer.mlp.gate_proj = nn.Linear(C, I, bias=False)
            layer.mlp.up_proj = nn.Linear(C, I, bias=False)
            layer.mlp.down_proj = nn.Linear(I, C, bias=False)
            layers.append(layer)
        self.model.layers = nn.ModuleList(layers)
        self.model.norm = RMSNorm(C, eps)
        self.tied = bool(cfg.get("tie_word_embeddings", False))
        if not self.tied:
            self.lm_head = nn.Linear(C, V, bias=False)
        inv = 1.0 / (cfg.get("rope_theta", 10000.0) ** (torch.arange(0, D, 2, dtype=torch.int64).float() / D))
        self.register_buffer("inv_freq", inv, persistent=False)

    @classmethod
    def from_pretrained(cls, d):
        from safetensors.torch import load_file
        with open(os.path.join(d, "config.json")) as f:
            cfg = json.load(f)
        assert cfg.get("rope_scaling") is None, "the reference has default rope only"
        m = cls(cfg)
        index = os.path.join(d, "model.safetensors.index.json")
        files = (sorted(set(json.load(open(index))["weight_map"].values())) if os.path.exists(index)
                 else ["model.safetensors"])
        state = {}
        for f in files:
            state.update({k: v.float() for k, v in load_file(os.path.join(d, f)).items()})
        state.pop("lm_head.weight", None) if m.tied else None
        m.load_state_dict(state, strict=True)
        return m

    def forward(self, input_ids, attention_mask=None, labels=None, use_cache=False):
        B, T = input_ids.shape
        x = self.model.embed_tokens(input_ids)
        ang = torch.arange(T, dtype=torch.float32)[:, None] * self.inv_freq[None, :]
        emb = torch.cat((ang, ang), dim=-1)
        cos, sin = emb.cos()[None, None], emb.sin()[None, None]
        allow = torch.ones(T, T, dtype=torch.bool).tril()[None, None]
        if attention_mask is not None:
            allow = allow & (attention_mask != 0)[:, None, None, :]
        add = torch.zeros(allow.shape, dtype=x.dtype).masked_fill(~allow, torch.finfo(x.dtype).min)
        for layer in self.model.layers:
            a = layer.self_attn
            h = layer.input_layernorm(x)
            q = a.q_norm(a.q_proj(h).view(B, T, self.H, self.D)).transpose(1, 2)
            k = a.k_norm(a.k_proj(h).view(B, T, self.KV, self.D)).transpose(1, 2)
            v = a.v_proj(h).view(B, T, self.KV, self.D).transpose(1, 2)
            q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
            rep = self.H // self.KV
            k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
            s = q @ k.transpose(2, 3) * self.D ** -0.5 + add
            o = (torch.softmax(s, dim=-1) @ v).transpose(1, 2).reshape(B, T, self.H * self.D)
            x = x + a.o_proj(o)
            h = layer.post_attention_layernorm(x)
            m = layer.mlp
            x = x + m.down_proj(nn.functional.silu(m.gate_proj(h)) * m.up_proj(h))
        x = self.model.norm(x)
        logits = x @ (self.model.embed_tokens.weight if self.tied else self.lm_head.weight).t()
        loss = None
        if labels is not None:
            loss = nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]),
                                               labels[:, 1:].reshape(-1), ignore_index=-100)
        return types.SimpleNamespace(loss=loss, logits=logits)
