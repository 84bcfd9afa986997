#!/usr/bin/env python3
"""Writes a tiny model of each family under examples/families/: config.json with
examples/llama-mini's sizes (hidden 256, 6 layers, 8/4 heads, vocabulary 4096) and each family's
features, and the tokenizer the family ships, trained on examples/data/man_summaries.jsonl:

  llama3   tokenizer.json: byte-level BPE, Llama 3's split regex, ignore_merges, <|begin_of_text|>
  mistral  tokenizer.model: SentencePiece BPE with byte fallback (examples/llama-mini's)
  qwen2    tokenizer.json: byte-level BPE, NFC, Qwen's split regex, no BOS
  qwen3    the same tokenizer as qwen2
  gemma2   tokenizer.json: SentencePiece-style BPE with byte fallback, <bos>

No weights: moreh-run train initialises them from the seed. Run with the project's venv (it has
the tokenizers library): .venv/bin/python examples/families/make_families.py
"""
import json
import os
import shutil
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..", "..")
# The tokenizer builders the tokenizer.json test uses (the same structures as the real files).
sys.path.insert(0, os.path.join(ROOT, "tests", "runtime", "data"))
import check_tokenizer_json as tj  # noqa: E402

FAMILIES = {
    "llama3": {"head_dim": 48, "attention_bias": False, "tie_word_embeddings": True,
               "rope_theta": 500000.0, "bos_token_id": None, "eos_token_id": None,
               "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                "high_freq_factor": 4.0, "original_max_position_embeddings": 64}},
    "mistral": {"model_type": "mistral", "architectures": ["MistralForCausalLM"],
                "sliding_window": 128},
    "qwen2": {"model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"],
              "tie_word_embeddings": True, "rope_theta": 1000000.0, "bos_token_id": None,
              "eos_token_id": None},
    "qwen3": {"model_type": "qwen3", "architectures": ["Qwen3ForCausalLM"], "head_dim": 48,
              "rope_theta": 1000000.0, "bos_token_id": None, "eos_token_id": None},
    "gemma2": {"model_type": "gemma2", "architectures": ["Gemma2ForCausalLM"],
               "hidden_activation": "gelu_pytorch_tanh", "hidden_act": "gelu_pytorch_tanh",
               "head_dim": 32, "query_pre_attn_scalar": 32, "sliding_window": 128,
               "attn_logit_softcapping": 50.0, "final_logit_softcapping": 30.0,
               "tie_word_embeddings": True, "bos_token_id": None, "eos_token_id": None},
}


def prompts():
    with open(os.path.join(ROOT, "examples", "data", "man_summaries.jsonl")) as f:
        for line in f:
            r = json.loads(line)
            yield f"[SUMMARIZE] {r['article']} [/SUMMARIZE]\n{r['highlights']}\n"


def main():
    lines = list(prompts())
    with open(os.path.join(ROOT, "examples", "llama-mini", "config.json")) as f:
        base = json.load(f)
    llama3 = tj.make_llama3(lines)
    qwen = tj.make_qwen2(lines)
    vocab, merges = tj.sentencepiece_vocab(lines, "<bos>", "<eos>", 3000)
    gemma = tj.make_gemma(vocab, merges)
    # (tokenizer, bos, eos, pad, transformers' tokenizer class) per family; the token ids go into
    # config.json too.
    toks = {"llama3": (llama3, "<|begin_of_text|>", "<|end_of_text|>", None,
                       "PreTrainedTokenizerFast"),
            "qwen2": (qwen, None, "<|endoftext|>", "<|endoftext|>", "Qwen2TokenizerFast"),
            "qwen3": (qwen, None, "<|endoftext|>", "<|endoftext|>", "Qwen2TokenizerFast"),
            "gemma2": (gemma, "<bos>", "<eos>", "<pad>", "GemmaTokenizerFast")}
    for name, changes in FAMILIES.items():
        d = os.path.join(HERE, name)
        os.makedirs(d, exist_ok=True)
        cfg = dict(base, **changes)
        if name in toks:
            tok, bos, eos, pad, cls = toks[name]
            assert tok.get_vocab_size(with_added_tokens=True) <= cfg["vocab_size"]
            tok.save(os.path.join(d, "tokenizer.json"))
            tc = {"tokenizer_class": cls, "bos_token": bos, "eos_token": eos, "pad_token": pad,
                  "clean_up_tokenization_spaces": False}
            with open(os.path.join(d, "tokenizer_config.json"), "w") as f:
                json.dump({k: v for k, v in tc.items() if v is not None}, f, indent=2)
            cfg["bos_token_id"] = tok.token_to_id(bos) if bos else None
            cfg["eos_token_id"] = tok.token_to_id(eos)
            if pad:
                cfg["pad_token_id"] = tok.token_to_id(pad)
        else:
            shutil.copy(os.path.join(ROOT, "examples", "llama-mini", "tokenizer.model"), d)
        with open(os.path.join(d, "config.json"), "w") as f:
            json.dump(cfg, f, indent=2)
        print(f"{d}: {cfg.get('model_type', 'llama')}")


if __name__ == "__main__":
    main()
