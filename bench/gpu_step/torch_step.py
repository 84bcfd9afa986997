"""The peer for gpu_step_bench: transformers.LlamaForCausalLM with the same shapes, f32 parameters
under torch.autocast(bf16) (mixed precision: bf16 compute, f32 master weights, as ours), fused
AdamW, random weights and tokens; eager, and with torch.compile (--compile). Median step time over
--steps timed steps after warm-ups (three for compile). Prints JSON."""
import argparse
import json
import time

import torch
import transformers

p = argparse.ArgumentParser()
for name, default in [("layers", 22), ("hidden", 2048), ("intermediate", 5632), ("heads", 32),
                      ("kv-heads", 4), ("vocab", 32000), ("seq", 2048), ("batch", 4),
                      ("steps", 8)]:
    p.add_argument("--" + name, type=int, default=default)
p.add_argument("--compile", action="store_true")
a = p.parse_args()
torch.manual_seed(11)
cfg = transformers.LlamaConfig(vocab_size=a.vocab, hidden_size=a.hidden,
                               intermediate_size=a.intermediate, num_hidden_layers=a.layers,
                               num_attention_heads=a.heads, num_key_value_heads=a.kv_heads,
                               max_position_embeddings=max(2048, a.seq), rms_norm_eps=1e-6)
model = transformers.LlamaForCausalLM(cfg).cuda()
model.train()
opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1,
                        fused=True)
ids = torch.randint(0, a.vocab, (a.batch, a.seq), device="cuda")
mask = torch.ones_like(ids)


def step():
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = model(input_ids=ids, attention_mask=mask, labels=ids).loss
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    return loss


run = torch.compile(step) if a.compile else step
warmup = 3 if a.compile else 2
times = []
for i in range(a.steps + warmup):
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    loss = run()
    torch.cuda.synchronize()
    if i >= warmup:
        times.append(time.perf_counter() - t0)
times.sort()
median = times[len(times) // 2]
print(json.dumps({"mode": "compile" if a.compile else "eager", "step_ms": round(median * 1e3, 1),
                  "tokens_per_s": round(a.batch * a.seq / median),
                  "peak_mem_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2),
                  "params": sum(p.numel() for p in model.parameters()),
                  "attn": getattr(model.config, "_attn_implementation", None),
                  "torch": torch.__version__, "transformers": transformers.__version__}))
