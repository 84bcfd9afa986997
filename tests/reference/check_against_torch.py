#!/usr/bin/python3
"""Checks moreh's ops and the Llama decoder layer against a float64 PyTorch reference.

    /usr/bin/python3 tests/reference/check_against_torch.py --runner build/bin/moreh_op_runner [--seed S]

Every case builds a small graph (or a decoder-layer directory), writes fresh random inputs into a
temporary directory, runs `moreh_op_runner op|block DIR`, and compares the .npy files it writes with
the same computation done in torch (float64, on the inputs rounded to the graph's dtypes).

Error metric (per compared tensor): norm-relative max error
    err = max|ours - ref| / max(max|ref|, 1e-30)
Tolerances: f32 forward 1e-5, f32 gradients 1e-4; any bf16 graph 1e-2; casts must match exactly.
Prints one line per case and ends with "N passed, M failed"; exits non-zero if any case fails.
Needs torch and numpy (Debian's /usr/bin/python3 has them); transformers is not needed.
"""
import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
import traceback

import numpy as np
import torch
import torch.nn.functional as F

torch.set_num_threads(2)

F32_FWD_TOL = 1e-5
F32_GRAD_TOL = 1e-4
LOWP_TOL = 1e-2
TINY = 1e-30

TORCH_DT = {"f32": torch.float32, "bf16": torch.bfloat16, "f16": torch.float16,
            "i32": torch.int32, "i64": torch.int64}
FLOAT_DT = ("f32", "bf16", "f16")

RUNNER = None
RNG = None


# --------------------------------------------------------------------------------------------
# Graph construction
# --------------------------------------------------------------------------------------------
def _attr(v):
    if isinstance(v, bool):
        return {"int": int(v)}
    if isinstance(v, int):
        return {"int": v}
    if isinstance(v, float):
        return {"float": v}
    if isinstance(v, str):
        return {"str": v}
    if isinstance(v, (list, tuple)):
        return {"ints": [int(e) for e in v]}
    raise TypeError(f"bad attribute {v!r}")


class Graph:
    def __init__(self):
        self.values, self.inputs, self.outputs, self.nodes = [], [], [], []

    def value(self, dtype, shape):
        self.values.append({"dtype": dtype, "shape": [int(d) for d in shape]})
        return len(self.values) - 1

    def input(self, dtype, shape):
        v = self.value(dtype, shape)
        self.inputs.append(v)
        return v

    def node(self, op, inputs, out_infos, **attrs):
        outs = [self.value(dt, sh) for dt, sh in out_infos]
        self.nodes.append({"op": op, "inputs": list(inputs), "outputs": outs,
                           "attrs": {k: _attr(a) for k, a in attrs.items()}})
        return outs[0] if len(outs) == 1 else outs

    def info(self, v):
        return self.values[v]["dtype"], self.values[v]["shape"]

    def json(self):
        return {"format": "moreh-graph", "version": 1, "values": self.values,
                "inputs": self.inputs, "outputs": self.outputs, "nodes": self.nodes}


def randn(*shape, scale=1.0):
    """Random normal float32, never exactly zero."""
    a = RNG.standard_normal(shape) * scale
    a[a == 0] = 1e-3
    return a.astype(np.float32)


def rel_err(ours, ref):
    """Norm-relative max error max|ours - ref| / max(max|ref|, tiny); inf on shape mismatch or NaN."""
    ours = np.asarray(ours, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    if ours.shape != ref.shape:
        return float("inf"), f"shape {ours.shape} != ref {ref.shape}"
    if ref.size == 0:
        return 0.0, None
    diff = np.abs(ours - ref)
    if np.isnan(diff).any():
        return float("inf"), "NaN"
    return float(diff.max() / max(float(np.abs(ref).max()), TINY)), None


def run_runner(mode, d):
    p = subprocess.run([RUNNER, mode, d], capture_output=True, text=True, timeout=120)
    if p.returncode != 0:
        msg = (p.stderr.strip() or p.stdout.strip()).splitlines()
        raise RuntimeError(f"runner exited {p.returncode}: {' | '.join(msg[-3:])}")


class Result:
    def __init__(self, name):
        self.name, self.items, self.notes, self.ok = name, [], [], True

    def check(self, label, ours, ref, tol):
        err, note = rel_err(ours, ref)
        ok = err <= tol
        self.ok &= ok
        self.items.append(f"{label}={err:.2e}" + ("" if ok else f"(>{tol:g})"))
        if note:
            self.notes.append(f"{label}: {note}")

    def fail(self, msg):
        self.ok = False
        self.notes.append(msg)


# --------------------------------------------------------------------------------------------
# Generic single-op case: graph + inputs + torch reference
# --------------------------------------------------------------------------------------------
def op_case(res, g, arrays, ref_fn, dout=True, fwd_tol=None, grad_tol=None):
    """Runs graph g on `arrays` (one per graph input) and compares with ref_fn.

    ref_fn gets one torch tensor per graph input (floats: float64 leaves holding the values rounded
    to the input's dtype; ints: int64) and returns a tuple of outputs, one per graph output.
    dout=True sends a random upstream gradient for output 0 and compares the input gradients of
    sum(out0 * dout).
    """
    lowp = any(v["dtype"] in ("bf16", "f16") for v in g.values)
    if fwd_tol is None:
        fwd_tol = LOWP_TOL if lowp else F32_FWD_TOL
    if grad_tol is None:
        grad_tol = LOWP_TOL if lowp else F32_GRAD_TOL
    assert len(arrays) == len(g.inputs)
    out0_dt, out0_shape = g.info(g.outputs[0])
    with tempfile.TemporaryDirectory(prefix="moreh_ref_") as d:
        with open(os.path.join(d, "graph.json"), "w") as f:
            json.dump(g.json(), f)
        leaves = []
        for i, (v, a) in enumerate(zip(g.inputs, arrays)):
            dt = g.values[v]["dtype"]
            if dt in FLOAT_DT:
                a = np.asarray(a, dtype=np.float32)
                np.save(os.path.join(d, f"in{i}.npy"), a)
                t = torch.from_numpy(a.copy()).to(TORCH_DT[dt]).double().requires_grad_(dout)
            else:
                a = np.asarray(a, dtype=np.int64)
                np.save(os.path.join(d, f"in{i}.npy"), a)
                t = torch.from_numpy(a.copy())
            leaves.append(t)
        dout_t = None
        if dout:
            dn = randn(*out0_shape) if out0_shape else np.array(RNG.standard_normal() + 2.0, np.float32)
            np.save(os.path.join(d, "dout.npy"), dn)
            dout_t = torch.from_numpy(np.array(dn)).to(TORCH_DT[out0_dt]).double()

        with torch.enable_grad():
            refs = ref_fn(*leaves)
            if not isinstance(refs, (tuple, list)):
                refs = (refs,)
            assert len(refs) == len(g.outputs), "reference returns the wrong number of outputs"
            ref_grads = [None] * len(leaves)
            if dout:
                wrt = [(i, t) for i, t in enumerate(leaves) if t.is_floating_point()]
                gs = torch.autograd.grad((refs[0].double() * dout_t).sum(), [t for _, t in wrt],
                                         allow_unused=True)
                for (i, _), gr in zip(wrt, gs):
                    ref_grads[i] = gr

        run_runner("op", d)
        for k, r in enumerate(refs):
            ours = np.load(os.path.join(d, f"out{k}.npy"))
            r = r.detach()
            if r.is_floating_point():
                r = r.double()
            res.check(f"out{k}", ours, r.numpy(), fwd_tol)
        if dout:
            for i, gr in enumerate(ref_grads):
                path = os.path.join(d, f"grad{i}.npy")
                if gr is None:
                    if os.path.exists(path):
                        res.fail(f"grad{i} written but input {i} does not reach output 0")
                    continue
                if not os.path.exists(path):
                    res.fail(f"grad{i} missing")
                    continue
                res.check(f"grad{i}", np.load(path), gr.double().numpy(), grad_tol)


# --------------------------------------------------------------------------------------------
# Torch references (float64)
# --------------------------------------------------------------------------------------------
def ref_rms_norm(x, w, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def rotary_cos_sin(T, D, theta, offset=0):
    """Hugging Face LlamaRotaryEmbedding: inv_freq and angles in float32; cos/sin in float64."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, D, 2, dtype=torch.int64).float() / D))
    pos = torch.arange(offset, offset + T, dtype=torch.int64).float()
    freqs = torch.outer(pos, inv_freq)  # float32, like inv_freq[:, None] @ pos[None, :]
    emb = torch.cat((freqs, freqs), dim=-1).double()
    return emb.cos(), emb.sin()  # [T, D]


def rotate_half(x):
    x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2:]
    return torch.cat((-x2, x1), dim=-1)


def ref_rotary(x, theta, offset=0, inverse=False):  # x [B, T, H, D]
    cos, sin = rotary_cos_sin(x.shape[1], x.shape[3], theta, offset)
    cos, sin = cos[None, :, None, :], sin[None, :, None, :]
    if inverse:
        sin = -sin
    return x * cos + rotate_half(x) * sin


def ref_attention(q, k, v, mask, causal, scale, window=0, softcap=0.0):
    """q [B,T,H,D], k/v [B,S,Hkv,D], mask [B,S] (nonzero = attend) -> (out [B,T,H,D], lse [B,H,T]).
    window > 0: query i sees keys j with i - j < window (transformers' sliding-window mask)."""
    B, T, H, D = q.shape
    S, Hkv = k.shape[1], k.shape[2]
    rep = H // Hkv
    kk = k.repeat_interleave(rep, dim=2)  # query head h uses kv head h // rep
    vv = v.repeat_interleave(rep, dim=2)
    s = torch.einsum("bthd,bshd->bhts", q, kk) * scale
    if softcap:  # Gemma 2: before the masks
        s = softcap * torch.tanh(s / softcap)
    allow = torch.ones(B, 1, T, S, dtype=torch.bool)
    if causal:
        allow = allow & torch.ones(T, S, dtype=torch.bool).tril()[None, None]
    if window:
        allow = allow & torch.ones(T, S, dtype=torch.bool).triu(-(window - 1))[None, None]
    if mask is not None:
        allow = allow & (mask != 0)[:, None, None, :]
    s = s.masked_fill(~allow, float("-inf"))
    lse = torch.logsumexp(s, dim=-1)  # [B, H, T]
    p = torch.softmax(s, dim=-1)
    out = torch.einsum("bhts,bshd->bthd", p, vv)
    return out, lse


def ref_decoder_layer(x, mask, W, cfg):
    """Hugging Face LlamaDecoderLayer (eager attention, no bias) in float64."""
    B, T, C = x.shape
    H, Hkv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    D = C // H
    eps = cfg["rms_norm_eps"]
    p = "model.layers.0."
    h = ref_rms_norm(x, W[p + "input_layernorm.weight"], eps)
    q = (h @ W[p + "self_attn.q_proj.weight"].T).view(B, T, H, D)
    k = (h @ W[p + "self_attn.k_proj.weight"].T).view(B, T, Hkv, D)
    v = (h @ W[p + "self_attn.v_proj.weight"].T).view(B, T, Hkv, D)
    q = ref_rotary(q, cfg["rope_theta"])
    k = ref_rotary(k, cfg["rope_theta"])
    a, _ = ref_attention(q, k, v, mask, True, 1.0 / math.sqrt(D))
    x1 = x + a.reshape(B, T, C) @ W[p + "self_attn.o_proj.weight"].T
    h = ref_rms_norm(x1, W[p + "post_attention_layernorm.weight"], eps)
    gate = h @ W[p + "mlp.gate_proj.weight"].T
    up = h @ W[p + "mlp.up_proj.weight"].T
    return x1 + (F.silu(gate) * up) @ W[p + "mlp.down_proj.weight"].T


# --------------------------------------------------------------------------------------------
# Cases
# --------------------------------------------------------------------------------------------
CASES = []


def case(fn):
    CASES.append(fn)
    return fn


def unary_graph(op, dt, in_shape, out_infos, **attrs):
    g = Graph()
    x = g.input(dt, in_shape)
    o = g.node(op, [x], out_infos, **attrs)
    g.outputs = o if isinstance(o, list) else [o]
    return g


@case
def fill(res):
    val = float(RNG.standard_normal() + 3.0)
    g = Graph()
    g.outputs = [g.node("fill", [], [("f32", [3, 4])], shape=[3, 4], dtype="f32", value=val)]
    op_case(res, g, [], lambda: (torch.full((3, 4), val, dtype=torch.float32).double(),),
            dout=False, fwd_tol=0.0)


@case
def embedding(res):
    V, C = 11, 8
    ids = RNG.integers(0, V, size=(3, 5))
    ids[1, 2] = ids[0, 0]  # repeated ids: the weight gradient must accumulate
    g = Graph()
    w, i = g.input("f32", [V, C]), g.input("i64", [3, 5])
    g.outputs = [g.node("embedding", [w, i], [("f32", [3, 5, C])])]
    op_case(res, g, [randn(V, C), ids], lambda w, i: (F.embedding(i, w),))


@case
def embedding_backward(res):
    V, C = 9, 6
    ids = RNG.integers(0, V, size=(2, 7))
    ids[1, 3] = ids[0, 1]
    g = Graph()
    dy, i = g.input("f32", [2, 7, C]), g.input("i64", [2, 7])
    g.outputs = [g.node("embedding_backward", [dy, i], [("f32", [V, C])], num_embeddings=V)]
    op_case(res, g, [randn(2, 7, C), ids],
            lambda dy, i: (torch.zeros(V, C, dtype=torch.float64).index_add(0, i.reshape(-1),
                                                                           dy.reshape(-1, C)),),
            dout=False)


def matmul_case(res, a_shape, b_shape, ta, tb, dt="f32"):
    g = Graph()
    a, b = g.input(dt, a_shape), g.input(dt, b_shape)
    m = a_shape[-1] if ta else a_shape[-2]
    n = b_shape[-2] if tb else b_shape[-1]
    g.outputs = [g.node("matmul", [a, b], [(dt, list(a_shape[:-2]) + [m, n])],
                        trans_a=ta, trans_b=tb)]

    def ref(a, b):
        return ((a.transpose(-1, -2) if ta else a) @ (b.transpose(-1, -2) if tb else b),)

    op_case(res, g, [randn(*a_shape), randn(*b_shape)], ref)


def _mm2d(ta, tb):
    def fn(res):
        M, K, N = 5, 7, 6
        matmul_case(res, [K, M] if ta else [M, K], [N, K] if tb else [K, N], ta, tb)
    fn.__name__ = f"matmul_2d_ta{ta}_tb{tb}"
    return fn


for _ta in (0, 1):
    for _tb in (0, 1):
        case(_mm2d(_ta, _tb))


@case
def matmul_linear_3d(res):
    matmul_case(res, [2, 5, 7], [6, 7], 0, 1)


@case
def matmul_3d_x_2d(res):
    matmul_case(res, [2, 4, 7], [7, 3], 0, 0)


@case
def matmul_batched_4d(res):
    matmul_case(res, [2, 3, 5, 7], [2, 3, 7, 6], 0, 0)


@case
def matmul_batched_4d_ta_tb(res):
    matmul_case(res, [2, 3, 7, 5], [2, 3, 6, 7], 1, 1)


@case
def matmul_linear_3d_bf16(res):
    matmul_case(res, [2, 6, 32], [12, 32], 0, 1, dt="bf16")


@case
def matmul_batched_4d_bf16(res):
    matmul_case(res, [2, 2, 5, 16], [2, 2, 16, 6], 0, 0, dt="bf16")


def binary_case(res, op, a_shape, b_shape):
    g = Graph()
    a, b = g.input("f32", a_shape), g.input("f32", b_shape)
    g.outputs = [g.node(op, [a, b], [("f32", a_shape)])]
    fn = (lambda a, b: (a + b,)) if op == "add" else (lambda a, b: (a * b,))
    op_case(res, g, [randn(*a_shape), randn(*b_shape)], fn)


@case
def add_same(res):
    binary_case(res, "add", [3, 4, 5], [3, 4, 5])


@case
def add_broadcast(res):
    binary_case(res, "add", [3, 4, 5], [4, 5])


@case
def add_broadcast_1d(res):
    binary_case(res, "add", [2, 3, 6], [6])


@case
def mul_same(res):
    binary_case(res, "mul", [3, 4, 5], [3, 4, 5])


@case
def mul_broadcast(res):
    binary_case(res, "mul", [2, 3, 4, 5], [4, 5])


@case
def scale(res):
    s = float(RNG.uniform(0.2, 2.0))
    g = unary_graph("scale", "f32", [3, 5], [("f32", [3, 5])], scale=s)
    op_case(res, g, [randn(3, 5)], lambda x: (x * s,))


def rms_case(res, dt, shape, offset=0.0):
    eps = 1e-5
    C = shape[-1]
    g = Graph()
    x, w = g.input(dt, shape), g.input(dt, [C])
    g.outputs = [g.node("rms_norm", [x, w], [(dt, shape)], eps=eps,
                        **({"offset": offset} if offset else {}))]
    op_case(res, g, [randn(*shape), 1.0 - offset + randn(C, scale=0.2)],
            lambda x, w: (ref_rms_norm(x, w + offset, eps),))


@case
def rms_norm_gemma_offset(res):
    # Gemma's (1 + w): the weight stored as an offset from one.
    rms_case(res, "f32", [2, 5, 16], offset=1.0)


@case
def rms_norm(res):
    rms_case(res, "f32", [2, 5, 16])


@case
def rms_norm_bf16(res):
    rms_case(res, "bf16", [3, 4, 32])


@case
def rms_norm_backward(res):
    eps, shape, C = 1e-6, [4, 12], 12
    g = Graph()
    dy, x, w = g.input("f32", shape), g.input("f32", shape), g.input("f32", [C])
    g.outputs = g.node("rms_norm_backward", [dy, x, w], [("f32", shape), ("f32", [C])], eps=eps)

    def ref(dy, x, w):
        with torch.enable_grad():
            xx, ww = x.detach().requires_grad_(), w.detach().requires_grad_()
            dx, dw = torch.autograd.grad((ref_rms_norm(xx, ww, eps) * dy).sum(), [xx, ww])
        return dx, dw

    op_case(res, g, [randn(*shape), randn(*shape), 1.0 + randn(C, scale=0.2)], ref, dout=False)


def rotary_case(res, shape, theta, offset, inverse):
    g = unary_graph("rotary", "f32", shape, [("f32", shape)], theta=float(theta),
                    position_offset=offset, inverse=inverse)
    op_case(res, g, [randn(*shape)], lambda x: (ref_rotary(x, theta, offset, inverse),))


@case
def rotary(res):
    rotary_case(res, [2, 6, 3, 8], 10000.0, 0, 0)


@case
def rotary_offset_inverse(res):
    rotary_case(res, [1, 5, 2, 16], 500000.0, 37, 1)


@case
def rotary_offset(res):
    rotary_case(res, [2, 4, 2, 32], 10000.0, 1000, 0)


def attention_case(res, B, T, S, H, Hkv, D, causal, pads=None, scale=None, dt="f32", window=0,
                   softcap=0.0):
    scale = 1.0 / math.sqrt(D) if scale is None else scale
    g = Graph()
    q, k, v = g.input(dt, [B, T, H, D]), g.input(dt, [B, S, Hkv, D]), g.input(dt, [B, S, Hkv, D])
    ins = [q, k, v]
    arrays = [randn(B, T, H, D), randn(B, S, Hkv, D), randn(B, S, Hkv, D)]
    if pads is not None:  # right padding: row b has pads[b] zeros at the end; mask[:, 0] = 1
        m = g.input("i64", [B, S])
        ins.append(m)
        mask = np.ones((B, S), np.int64)
        for b, p in enumerate(pads):
            if p:
                mask[b, S - p:] = 0
        arrays.append(mask)
    g.outputs = g.node("attention", ins, [(dt, [B, T, H, D]), ("f32", [B, H, T])],
                       causal=int(causal), scale=float(scale), window=int(window),
                       **({"softcap": float(softcap)} if softcap else {}))

    def ref(q, k, v, mask=None):
        return ref_attention(q, k, v, mask, causal, scale, window, softcap)

    op_case(res, g, arrays, ref)


@case
def attention_causal_mask_gqa(res):
    attention_case(res, 2, 9, 9, 4, 2, 8, True, pads=[0, 3])


@case
def attention_noncausal_nomask(res):
    attention_case(res, 2, 5, 11, 2, 2, 16, False, scale=0.3)


@case
def attention_noncausal_mask_gqa(res):
    attention_case(res, 2, 6, 7, 6, 2, 8, False, pads=[2, 0])


@case
def attention_causal_mha(res):
    attention_case(res, 1, 12, 12, 3, 3, 16, True)


@case
def attention_causal_multi_tile(res):
    # T spans three 64-row tiles of the CPU kernel, with padding in the middle tile.
    attention_case(res, 2, 150, 150, 4, 2, 16, True, pads=[0, 70])


@case
def attention_noncausal_multi_tile(res):
    attention_case(res, 1, 70, 140, 2, 1, 8, False, pads=[9])


@case
def attention_sliding_window(res):
    # Mistral / Gemma 2: T = 12 past a window of 5, with padding; a window of one (self only).
    attention_case(res, 2, 12, 12, 4, 2, 8, True, pads=[0, 3], window=5)
    attention_case(res, 1, 7, 7, 2, 2, 8, True, window=1)


@case
def attention_sliding_window_multi_tile(res):
    # A 70-key window across the CPU kernel's 64-key tiles: tiles wholly outside it are skipped.
    attention_case(res, 2, 200, 200, 2, 1, 16, True, pads=[0, 50], window=70)


@case
def attention_softcap_gemma2(res):
    # Gemma 2: scores soft-capped (a cap of 2 so tanh saturates on large queries), a window on the
    # local layers, query_pre_attn_scalar's scale; across tiles with padding.
    attention_case(res, 2, 12, 12, 4, 2, 8, True, pads=[0, 3], scale=1.5, softcap=2.0)
    attention_case(res, 1, 150, 150, 2, 1, 16, True, pads=[20], scale=0.5, window=70, softcap=3.0)


@case
def attention_causal_mask_gqa_bf16(res):
    attention_case(res, 2, 10, 10, 4, 2, 16, True, pads=[0, 4], dt="bf16")


def swiglu_case(res, dt, shape, gelu=False):
    g = Graph()
    a, b = g.input(dt, shape), g.input(dt, shape)
    g.outputs = [g.node("swiglu", [a, b], [(dt, shape)],
                        **({"activation": "gelu_tanh"} if gelu else {}))]
    act = (lambda x: F.gelu(x, approximate="tanh")) if gelu else F.silu
    op_case(res, g, [randn(*shape, scale=2.0), randn(*shape)], lambda a, b: (act(a) * b,))


@case
def geglu_gemma(res):
    swiglu_case(res, "f32", [3, 4, 10], gelu=True)
    swiglu_case(res, "bf16", [4, 24], gelu=True)


@case
def softcap(res):
    # Gemma 2's final logits: cap * tanh(x / cap), with values well past the cap.
    g = unary_graph("softcap", "f32", [3, 7], [("f32", [3, 7])], cap=3.0)
    op_case(res, g, [randn(3, 7, scale=4.0)], lambda x: (3.0 * torch.tanh(x / 3.0),))


@case
def swiglu(res):
    swiglu_case(res, "f32", [3, 4, 10])


@case
def swiglu_bf16(res):
    swiglu_case(res, "bf16", [4, 24])


def ce_case(res, lead, V, shift, ignore_index=-100, n_ignored=3):
    labels = RNG.integers(0, V, size=lead)
    flat = labels.reshape(-1)
    idx = RNG.choice(flat.size, size=n_ignored, replace=False)
    flat[idx] = ignore_index
    flat[0 if not shift else 1] = RNG.integers(0, V)  # at least one scored row
    N = int(np.prod(lead))
    g = Graph()
    lg, lb = g.input("f32", list(lead) + [V]), g.input("i64", list(lead))
    attrs = {"shift": shift}
    if ignore_index != -100:
        attrs["ignore_index"] = ignore_index
    g.outputs = g.node("cross_entropy", [lg, lb], [("f32", []), ("f32", [N])], **attrs)

    def ref(logits, labels):
        if shift:
            lo, la = logits[:, :-1, :], labels[:, 1:]
        else:
            lo, la = logits, labels
        loss = F.cross_entropy(lo.reshape(-1, V), la.reshape(-1), ignore_index=ignore_index)
        return loss, torch.logsumexp(logits.reshape(-1, V), dim=-1)

    op_case(res, g, [randn(*lead, V, scale=2.0), labels], ref)


@case
def cross_entropy(res):
    ce_case(res, (3, 5), 13, 0)


@case
def cross_entropy_shift(res):
    ce_case(res, (2, 7), 17, 1)


@case
def cross_entropy_ignore_index(res):
    ce_case(res, (10,), 9, 0, ignore_index=-1, n_ignored=4)


def _with_ties(n, mantissa_drop):
    """float32 values, the first half exactly halfway between two representable values after
    dropping `mantissa_drop` mantissa bits (tests round-to-nearest-even), the rest random."""
    a = randn(n)
    bits = a.view(np.uint32).copy()
    half = n // 2
    low = np.uint32((1 << mantissa_drop) - 1)
    tie = np.uint32(1 << (mantissa_drop - 1))
    bits[:half] = (bits[:half] & ~low) | tie
    return bits.view(np.float32)


@case
def cast_f32_bf16_f32(res):
    n = 64
    g = Graph()
    x = g.input("f32", [n])
    b = g.node("cast", [x], [("bf16", [n])], dtype="bf16")
    y = g.node("cast", [b], [("f32", [n])], dtype="f32")
    g.outputs = [y, b]
    op_case(res, g, [_with_ties(n, 16)],
            lambda x: (x.to(torch.bfloat16).double(), x.to(torch.bfloat16).double()),
            fwd_tol=0.0, grad_tol=0.0)


@case
def cast_f32_f16(res):
    n = 64
    g = unary_graph("cast", "f32", [n], [("f16", [n])], dtype="f16")
    op_case(res, g, [_with_ties(n, 13)], lambda x: (x.to(torch.float16),),
            fwd_tol=0.0, grad_tol=0.0)


@case
def cast_bf16_f32(res):
    n = 40
    g = unary_graph("cast", "bf16", [n], [("f32", [n])], dtype="f32")
    op_case(res, g, [randn(n)], lambda x: (x.to(torch.bfloat16).float(),), fwd_tol=0.0,
            grad_tol=0.0)


@case
def cast_f32_i64(res):
    n = 30
    g = unary_graph("cast", "f32", [n], [("i64", [n])], dtype="i64")
    op_case(res, g, [randn(n, scale=10.0)], lambda x: (x.float().to(torch.int64),),
            dout=False, fwd_tol=0.0)


@case
def reshape_transpose_sum_keepdim(res):
    g = Graph()
    x = g.input("f32", [2, 3, 4])
    r = g.node("reshape", [x], [("f32", [3, 8])], shape=[3, -1])
    t = g.node("transpose", [r], [("f32", [8, 3])], dim0=0, dim1=1)
    s = g.node("sum", [t], [("f32", [1, 3])], axes=[0], keepdim=1)
    g.outputs = [s, t]
    op_case(res, g, [randn(2, 3, 4)],
            lambda x: (x.reshape(3, -1).t().sum(0, keepdim=True), x.reshape(3, -1).t()))


@case
def transpose_view_output(res):
    g = unary_graph("transpose", "f32", [2, 3, 4], [("f32", [4, 3, 2])], dim0=0, dim1=2)
    op_case(res, g, [randn(2, 3, 4)], lambda x: (x.transpose(0, 2),))


@case
def transpose_mul(res):
    g = Graph()
    x, y = g.input("f32", [3, 5]), g.input("f32", [5, 3])
    t = g.node("transpose", [x], [("f32", [5, 3])], dim0=-1, dim1=-2)
    g.outputs = [g.node("mul", [t, y], [("f32", [5, 3])])]
    op_case(res, g, [randn(3, 5), randn(5, 3)], lambda x, y: (x.t() * y,))


@case
def expand_mean(res):
    g = Graph()
    x = g.input("f32", [3, 1])
    e = g.node("expand", [x], [("f32", [2, 3, 5])], shape=[2, 3, 5])
    m = g.node("mean", [e], [("f32", [3])], axes=[0, 2], keepdim=0)
    g.outputs = [m, e]
    op_case(res, g, [randn(3, 1)],
            lambda x: (x.expand(2, 3, 5).mean(dim=(0, 2)), x.expand(2, 3, 5)))


@case
def expand_view_output(res):
    g = unary_graph("expand", "f32", [4, 1, 3], [("f32", [2, 4, 5, 3])], shape=[2, 4, 5, 3])
    op_case(res, g, [randn(4, 1, 3)], lambda x: (x.expand(2, 4, 5, 3),))


@case
def expand_twice(res):
    # Chained gradient rules that each emit several nodes (regression: dangling value-table refs).
    g = Graph()
    x = g.input("f32", [3, 1])
    e1 = g.node("expand", [x], [("f32", [3, 4])], shape=[3, 4])
    g.outputs = [g.node("expand", [e1], [("f32", [2, 3, 4])], shape=[2, 3, 4])]
    op_case(res, g, [randn(3, 1)], lambda x: (x.expand(2, 3, 4),))


@case
def sum_twice(res):
    g = Graph()
    x = g.input("f32", [2, 3, 4])
    s1 = g.node("sum", [x], [("f32", [3, 4])], axes=[0], keepdim=0)
    g.outputs = [g.node("sum", [s1], [("f32", [4])], axes=[0], keepdim=0)]
    op_case(res, g, [randn(2, 3, 4)], lambda x: (x.sum(0).sum(0),))


@case
def add_mul_broadcast_chain(res):
    g = Graph()
    a, b, c = g.input("f32", [2, 3, 4]), g.input("f32", [4]), g.input("f32", [3, 4])
    s = g.node("add", [a, b], [("f32", [2, 3, 4])])
    g.outputs = [g.node("mul", [s, c], [("f32", [2, 3, 4])])]
    op_case(res, g, [randn(2, 3, 4), randn(4), randn(3, 4)], lambda a, b, c: ((a + b) * c,))


@case
def sum_all(res):
    g = unary_graph("sum", "f32", [2, 3, 4], [("f32", [])], axes=[])
    op_case(res, g, [randn(2, 3, 4)], lambda x: (x.sum(),))


@case
def sum_axes_0_2(res):
    g = unary_graph("sum", "f32", [3, 4, 5], [("f32", [4])], axes=[0, 2], keepdim=0)
    op_case(res, g, [randn(3, 4, 5)], lambda x: (x.sum(dim=(0, 2)),))


@case
def mean_last_keepdim(res):
    g = unary_graph("mean", "f32", [2, 3, 7], [("f32", [2, 3, 1])], axes=[-1], keepdim=1)
    op_case(res, g, [randn(2, 3, 7)], lambda x: (x.mean(-1, keepdim=True),))


@case
def mean_all_keepdim(res):
    g = unary_graph("mean", "f32", [4, 6], [("f32", [1, 1])], axes=[], keepdim=1)
    op_case(res, g, [randn(4, 6)], lambda x: (x.mean().reshape(1, 1),))


def adamw_case(res, shape, step):
    beta1, beta2, eps, wd = 0.9, 0.95, 1e-8, 0.1
    lr = float(np.float32(RNG.uniform(0.01, 0.1)))
    p, gr, m = randn(*shape), randn(*shape), randn(*shape, scale=0.3)
    v = (randn(*shape, scale=0.5) ** 2 + 1e-3).astype(np.float32)
    hp = np.array([lr, step], np.float32)
    g = Graph()
    ins = [g.input("f32", shape) for _ in range(4)] + [g.input("f32", [2])]
    g.outputs = g.node("adamw", ins, [("f32", shape)] * 3, beta1=beta1, beta2=beta2, eps=eps,
                       weight_decay=wd)

    def ref(p, gr, m, v, hp):
        # torch.optim.AdamW (float64) resumed at step-1 with the given moments.
        param = torch.nn.Parameter(p.detach().clone())
        opt = torch.optim.AdamW([param], lr=lr, betas=(beta1, beta2), eps=eps, weight_decay=wd,
                                foreach=False)
        opt.state[param] = {"step": torch.tensor(float(step - 1)),
                            "exp_avg": m.detach().clone(), "exp_avg_sq": v.detach().clone()}
        param.grad = gr.detach().clone()
        opt.step()
        st = opt.state[param]
        return param.detach(), st["exp_avg"], st["exp_avg_sq"]

    op_case(res, g, [p, gr, m, v, hp], ref, dout=False)


@case
def adamw_step7(res):
    adamw_case(res, [5, 6], 7)


@case
def adamw_step2(res):
    adamw_case(res, [33], 2)


@case
def decoder_block(res):
    B, T, C, H, Hkv, I = 2, int(RNG.integers(16, 25)), 64, 4, 2, 172
    D = C // H
    cfg = {"hidden_size": C, "intermediate_size": I, "num_attention_heads": H,
           "num_key_value_heads": Hkv, "rms_norm_eps": 1e-6, "rope_theta": 10000.0}
    p = "model.layers.0."
    shapes = {
        p + "input_layernorm.weight": [C],
        p + "self_attn.q_proj.weight": [C, C],
        p + "self_attn.k_proj.weight": [Hkv * D, C],
        p + "self_attn.v_proj.weight": [Hkv * D, C],
        p + "self_attn.o_proj.weight": [C, C],
        p + "post_attention_layernorm.weight": [C],
        p + "mlp.gate_proj.weight": [I, C],
        p + "mlp.up_proj.weight": [I, C],
        p + "mlp.down_proj.weight": [C, I],
    }
    weights = {}
    for name, sh in shapes.items():
        if len(sh) == 1:
            weights[name] = 1.0 + randn(*sh, scale=0.1)
        else:
            weights[name] = randn(*sh, scale=1.0 / math.sqrt(sh[1]))
    x = randn(B, T, C)
    mask = np.ones((B, T), np.int64)
    mask[1, T - 5:] = 0  # batch row 1: 5 right pads
    dout = randn(B, T, C)
    with tempfile.TemporaryDirectory(prefix="moreh_ref_block_") as d:
        with open(os.path.join(d, "config.json"), "w") as f:
            json.dump(cfg, f)
        np.save(os.path.join(d, "x.npy"), x)
        np.save(os.path.join(d, "mask.npy"), mask)
        np.save(os.path.join(d, "dout.npy"), dout)
        for name, w in weights.items():
            np.save(os.path.join(d, name + ".npy"), w)

        xt = torch.from_numpy(x).double().requires_grad_()
        W = {n: torch.from_numpy(w).double().requires_grad_() for n, w in weights.items()}
        with torch.enable_grad():
            out = ref_decoder_layer(xt, torch.from_numpy(mask), W, cfg)
            names = list(W)
            grads = torch.autograd.grad((out * torch.from_numpy(dout).double()).sum(),
                                        [xt] + [W[n] for n in names])
        run_runner("block", d)
        res.check("out", np.load(os.path.join(d, "out.npy")), out.detach().numpy(), F32_FWD_TOL)
        res.check("grad_x", np.load(os.path.join(d, "grad_x.npy")), grads[0].numpy(),
                  F32_GRAD_TOL)
        for n, gr in zip(names, grads[1:]):
            short = n[len(p):].replace("self_attn.", "").replace("mlp.", "").replace(".weight", "")
            res.check("grad_" + short, np.load(os.path.join(d, "grad_" + n + ".npy")), gr.numpy(),
                      F32_GRAD_TOL)
        res.items.insert(0, f"T={T}")


# --------------------------------------------------------------------------------------------
def main():
    global RUNNER, RNG
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runner", required=True, help="path to moreh_op_runner")
    ap.add_argument("--seed", type=int, default=None, help="reproduce a run")
    ap.add_argument("-k", default=None, help="only run cases whose name contains this")
    args = ap.parse_args()
    RUNNER = os.path.abspath(args.runner)
    if not os.path.isfile(RUNNER):
        print(f"runner not found: {RUNNER}")
        print("0 passed, 1 failed")
        return 1
    seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(4), "little")
    print(f"seed = {seed} (reproduce with --seed {seed})")
    RNG = np.random.default_rng(seed)
    torch.manual_seed(seed)

    passed = failed = 0
    t0 = time.time()
    for fn in CASES:
        name = fn.__name__
        if args.k and args.k not in name:
            continue
        res = Result(name)
        try:
            fn(res)
        except Exception as e:  # runner failure or a bug in this script: the case fails
            res.fail(f"{type(e).__name__}: {e}")
            if not isinstance(e, RuntimeError):
                traceback.print_exc(limit=3)
        status = "PASS" if res.ok else "FAIL"
        line = f"{status}  {name:34s} " + " ".join(res.items)
        if res.notes:
            line += "  [" + "; ".join(res.notes) + "]"
        print(line, flush=True)
        passed += res.ok
        failed += not res.ok
    print(f"({time.time() - t0:.1f} s)")
    print(f"{passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
