#!/usr/bin/env python3
"""Our tokenizer.json support (runtime/data/hf_tokenizer.cc) against Hugging Face tokenizers.

There is no network, so the tokenizer files are made here with the `tokenizers` library (0.20.3):
byte-level BPEs trained on generated multilingual text, with the structure of Llama 3 (Split with
its regex + ByteLevel, ignore_merges, <|begin_of_text|> template) and of Qwen2 (NFC, its regex, no
BOS), a GPT-2 style one (ByteLevel's own regex, added tokens with lstrip/rstrip/single_word and a
normalized one), and SentencePiece-style BPEs with byte fallback shaped like Gemma (Replace
normalizer), Llama 2 (Prepend + Replace, Strip decoder) and Mistral v0.3 / non-legacy Llama
(Metaspace), in both merges styles ("a b" strings and ["a", "b"] pairs). bin/moreh_tokenize_tool
encodes and decodes a few thousand random and adversarial strings with each, and every id list and
decoded text must equal tokenizers'; for the directories saved through transformers, also
AutoTokenizer's ids, decode() and BOS/EOS/pad ids. Exits 1 at the first mismatch, showing the
string and both id lists.

    .venv/bin/python tests/runtime/data/check_tokenizer_json.py --tool build/bin/moreh_tokenize_tool
"""
import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from tokenizers import (Regex, Tokenizer, AddedToken, decoders, models, normalizers,  # noqa: E402
                        pre_tokenizers, processors, trainers)

LLAMA3 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
          r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
         r"\s*[\r\n]+|\s+(?!\S)|\s+")

# ------------------------------------------------------------------------------------------------
# Text

WORDS = ("the of and to in is was for that with as on by it he at from his an were are which this "
         "be or has had not but first one their its new after who they have her she two been other "
         "when there all during into school time may years more most only over city some world "
         "would where later up such used many can state about national out known university "
         "united then made don't it's we're they've I'm you'll she'd LLama GPU tokenizer parallel "
         "training pipeline gradient".split())
CODE = ["def f(x):\n    return x + 1\n", "for (int i = 0; i < n; ++i) {\n\tsum += a[i];\n}\n",
        "if __name__ == '__main__':\n    main()\n", "#include <vector>\n", "x = {'a': [1, 2, 3]}",
        "SELECT * FROM t WHERE id=42;", "  \"key\": \"value\",\n", "=> (a, b) -> a*b", "0x1F&&~y"]
SCRIPTS = {
    "cjk": (0x4E00, 0x9FFF), "hira": (0x3041, 0x3096), "kata": (0x30A1, 0x30FA),
    "hangul": (0xAC00, 0xD7A3), "cyr": (0x0410, 0x044F), "greek": (0x0391, 0x03C9),
    "arabic": (0x0621, 0x064A), "deva": (0x0905, 0x0939), "thai": (0x0E01, 0x0E2E),
    "latin1": (0x00C0, 0x00FF), "latinx": (0x0100, 0x017F), "emoji": (0x1F600, 0x1F64F),
    "emoji2": (0x1F300, 0x1F5FF), "math": (0x2200, 0x22FF), "box": (0x2500, 0x257F),
}
SPACES = [" ", "  ", "   ", "\t", "\n", "\n\n", "\r\n", " \n ", "\u3000", "\u00a0", "\u2003",
          "\u180e", "\u200b", "\u2028", "\x0b", "\x0c", "\x85", " \t\n", "     "]
PUNCT = list(".,;:!?'\"()[]{}<>-_/\\|@#$%^&*+=~`") + ["...", "--", "!!", "?!", "''", "’", "“",
                                                        "”", "—", "…", "«", "»", "¿", "¡"]
ODD = ["x'ſt X'LLama", "a\u3000\u3000!", "a\u180e\u180e!", "١٢٣٤ ² ½ Ⅻ ①", "e\u0301 cafe\u0301",
       "tab\t\tx  \n \n  y", "Hello world! It's 12345 tokens.\n\n  héllo 😀", "👨‍👩‍👧‍👦 🇫🇷 🏳️‍🌈",
       "ﬁ ﬂ ＡＢＣ １２３", "Å Å Å", "한국어 \u1100\u1161\u11a8", "\u0915\u094d\u0937", "\ufeffBOM",
       "I'M WE'RE THEY'LL", "'s's's", "12345678901234567890", "3.14159 1,000,000 1e-9",
       "\x00\x01\x1f\x7f", "a" * 300, " " * 300 + "x", "\n" * 50, "ab" * 200, "日本" * 100]


def rand_piece(rng):
    r = rng.random()
    if r < 0.40:
        w = rng.choice(WORDS)
        return w.capitalize() if rng.random() < 0.15 else (w.upper() if rng.random() < 0.03 else w)
    if r < 0.50:
        return str(rng.randint(0, 10 ** rng.randint(1, 12)))
    if r < 0.58:
        return rng.choice(CODE)
    if r < 0.74:
        lo, hi = SCRIPTS[rng.choice(sorted(SCRIPTS))]
        return "".join(chr(rng.randint(lo, hi)) for _ in range(rng.randint(1, 6)))
    if r < 0.80:
        base = rng.choice("aeiouncAEOU")
        return base + "".join(chr(rng.randint(0x300, 0x36F)) for _ in range(rng.randint(1, 3)))
    if r < 0.90:
        return rng.choice(PUNCT)
    if r < 0.93:
        cp = rng.randint(0x20, 0x2FFFF)
        return "" if 0xD800 <= cp <= 0xDFFF else chr(cp)
    return rng.choice(SPACES)


def rand_text(rng, n=None):
    n = n if n is not None else rng.choice([1, 2, 3, 5, 8, 13, 20, 40, 80])
    out = []
    for _ in range(n):
        out.append(rand_piece(rng))
        out.append(" " if rng.random() < 0.6 else "")
    return "".join(out)


def corpus(rng, n_lines):
    return [rand_text(rng, rng.randint(5, 60)) + "\n" for _ in range(n_lines)]


# ------------------------------------------------------------------------------------------------
# Tokenizers

def byte_level_bpe(lines, regex, ignore_merges, nfc, vocab_size):
    tok = Tokenizer(models.BPE(ignore_merges=ignore_merges))
    if nfc:
        tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(regex), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(lines, trainers.BpeTrainer(
        vocab_size=vocab_size, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return tok


def add_unmerged_words(tok, lines, n):
    """Adds n frequent words to the vocab that no merge makes (as tiktoken-converted vocabularies
    have): only ignore_merges reaches them."""
    d = json.loads(tok.to_str())
    vocab = d["model"]["vocab"]
    counts = {}
    for line in lines:
        for w, _ in tok.pre_tokenizer.pre_tokenize_str(line):
            if len(w) > 3 and w not in vocab:
                counts[w] = counts.get(w, 0) + 1
    for w, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:n]:
        vocab[w] = len(vocab)
    return Tokenizer.from_str(json.dumps(d))


def make_llama3(lines):
    tok = add_unmerged_words(byte_level_bpe(lines, LLAMA3, True, False, 3000), lines, 300)
    specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>",
                "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
    tok.add_special_tokens(specials)
    bos = tok.token_to_id("<|begin_of_text|>")
    tok.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(
            single="<|begin_of_text|> $A", pair="<|begin_of_text|> $A <|begin_of_text|> $B:1",
            special_tokens=[("<|begin_of_text|>", bos)])])
    return tok


def make_qwen2(lines):
    tok = byte_level_bpe(lines, QWEN2, False, True, 2500)
    tok.add_special_tokens(["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
    tok.add_tokens([AddedToken("<think>", special=False, normalized=False),
                    AddedToken("</think>", special=False, normalized=False)])
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    return tok


def make_gpt2_style(llama3):
    """Llama 3's model under ByteLevel's own GPT-2 regex, with the added-token options."""
    tok = Tokenizer.from_str(llama3.to_str())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True, use_regex=True)
    tok.post_processor = processors.ByteLevel(trim_offsets=True)
    tok.add_tokens([AddedToken("<mask>", lstrip=True, single_word=True, normalized=False),
                    AddedToken("[tail]", rstrip=True, normalized=False),
                    AddedToken(" world", normalized=False),  # can overlap [tail]'s spaces
                    AddedToken("school time", normalized=True),
                    AddedToken("ab", single_word=True, normalized=False)])
    return tok


def sentencepiece_vocab(lines, bos, eos, vocab_size):
    """A SentencePiece-converted style vocab: specials, <0x00>..<0xFF>, then trained ▁-pieces;
    a small alphabet, so that rare chars take the byte fallback."""
    t = Tokenizer(models.BPE())
    t.normalizer = normalizers.Replace(" ", "▁")
    t.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    t.train_from_iterator(lines, trainers.BpeTrainer(vocab_size=vocab_size, show_progress=False,
                                                     limit_alphabet=150))
    d = json.loads(t.to_str())
    trained = d["model"]["vocab"]
    vocab = {}
    for s in ["<pad>", eos, bos, "<unk>"]:
        vocab[s] = len(vocab)
    for b in range(256):
        vocab["<0x%02X>" % b] = len(vocab)
    for s, _ in sorted(trained.items(), key=lambda kv: kv[1]):
        if s not in vocab:
            vocab[s] = len(vocab)
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" "))
              for m in d["model"]["merges"]]
    return vocab, merges


def sp_bpe(vocab, merges, bos, eos):
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", fuse_unk=True,
                               byte_fallback=True))
    tok.add_special_tokens(["<pad>", eos, bos, "<unk>"])
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, vocab[bos])])
    return tok


def make_gemma(vocab, merges):
    tok = sp_bpe(vocab, merges, "<bos>", "<eos>")
    tok.normalizer = normalizers.Replace(" ", "▁")
    tok.pre_tokenizer = pre_tokenizers.Split(" ", behavior="merged_with_previous", invert=False)
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(),
                                     decoders.Fuse()])
    tok.add_special_tokens(["<start_of_turn>", "<end_of_turn>"])
    return tok


def make_llama2(vocab, merges):
    tok = sp_bpe(vocab, merges, "<s>", "</s>")
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(),
                                     decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    return tok


def make_mistral(vocab, merges):
    tok = sp_bpe(vocab, merges, "<s>", "</s>")
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first",
                                                 split=False)
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(),
                                     decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    tok.add_tokens([AddedToken("[INST]", special=True, normalized=False),
                    AddedToken("[/INST]", special=True, normalized=False)])
    return tok


def make_sp_unk(vocab, merges, fuse_unk, drop_bytes):
    """Gemma's structure where unk is reached: without byte fallback (fuse_unk or not), or with
    it but some <0xXX> missing (a char all of whose bytes are not there is unk)."""
    if drop_bytes:
        gone = {"<0x%02X>" % b for b in range(0xE4, 0xF5)}
        kept = [k for k, _ in sorted(vocab.items(), key=lambda kv: kv[1]) if k not in gone]
        vocab = {k: i for i, k in enumerate(kept)}
        merges = [m for m in merges if m[0] in vocab and m[1] in vocab and m[0] + m[1] in vocab]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", fuse_unk=fuse_unk,
                               byte_fallback=drop_bytes))
    tok.normalizer = normalizers.Replace(" ", "▁")
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(),
                                     decoders.Fuse()])
    return tok


def make_metaspace_split(vocab, merges):
    """Metaspace with split and prepend "always", and its decoder (the T5 / old Llama shape)."""
    tok = sp_bpe(vocab, merges, "<s>", "</s>")
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always",
                                                 split=True)
    tok.decoder = decoders.Sequence([decoders.ByteFallback(), decoders.Metaspace(
        replacement="▁", prepend_scheme="always")])
    return tok


def make_split_behaviors(llama3):
    """Llama 3's model under every Split behavior, invert, a regex Replace normalizer and a regex
    Replace decoder."""
    tok = Tokenizer.from_str(llama3.to_str())
    tok.normalizer = normalizers.Sequence([normalizers.Replace(Regex(r"[ \t]{3,}"), "   "),
                                           normalizers.Replace("ſ", "s")])
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(r"\s*\n"), behavior="removed"),
        pre_tokenizers.Split(Regex(r"\p{N}"), behavior="contiguous"),
        pre_tokenizers.Split(Regex(r"[,.;:]"), behavior="merged_with_next"),
        pre_tokenizers.Split(" ", behavior="merged_with_previous"),
        pre_tokenizers.Split(Regex(r"\p{Lu}\p{Ll}*"), behavior="isolated", invert=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.Sequence([decoders.ByteLevel(),
                                     decoders.Replace(Regex(r"(?i:x)+"), "<x>")])
    return tok


def legacy_merges(tok_json):
    """The same file with merges as "a b" strings (tokenizers < 0.20)."""
    d = json.loads(tok_json)
    d["model"]["merges"] = [" ".join(m) if isinstance(m, list) else m for m in d["model"]["merges"]]
    return json.dumps(d, ensure_ascii=False)


def build_all(work, seed=0, with_transformers=True):
    """Writes the tokenizers under `work`; returns [(name, dir or file, Tokenizer, hf_dir?)]."""
    rng = random.Random(seed)
    lines = corpus(rng, 6000)
    llama3 = make_llama3(lines)
    qwen2 = make_qwen2(lines)
    vocab, merges = sentencepiece_vocab(lines, "<bos>", "<eos>", 3000)
    gemma = make_gemma(vocab, merges)
    renamed = {("<s>" if k == "<bos>" else "</s>" if k == "<eos>" else k): v
               for k, v in vocab.items()}
    llama2 = make_llama2(renamed, merges)
    mistral = make_mistral(renamed, merges)
    metaspace = make_metaspace_split(renamed, merges)
    gpt2 = make_gpt2_style(llama3)

    out = []

    def save(name, tok, legacy=False, hf=None):
        d = os.path.join(work, name)
        os.makedirs(d, exist_ok=True)
        path = os.path.join(d, "tokenizer.json")
        s = tok.to_str()
        if legacy:
            s = legacy_merges(s)
        with open(path, "w", encoding="utf-8") as f:
            f.write(s)
        reread = Tokenizer.from_file(path)
        out.append((name, path, reread, None))
        if hf is not None and with_transformers:
            hd = os.path.join(work, name + "_hf")
            hf(path).save_pretrained(hd)
            out.append((name + "_hf", hd, Tokenizer.from_file(os.path.join(hd, "tokenizer.json")),
                        hd))

    from transformers import (PreTrainedTokenizerFast, GemmaTokenizerFast, LlamaTokenizerFast,
                              Qwen2TokenizerFast)
    save("llama3", llama3, hf=lambda p: PreTrainedTokenizerFast(
        tokenizer_file=p, bos_token="<|begin_of_text|>", eos_token="<|end_of_text|>",
        clean_up_tokenization_spaces=True))
    save("llama3_legacy_merges", llama3, legacy=True)
    save("qwen2", qwen2, hf=lambda p: Qwen2TokenizerFast(
        tokenizer_file=p, bos_token=None, eos_token="<|endoftext|>", pad_token="<|endoftext|>",
        unk_token=None))
    save("gemma", gemma, hf=lambda p: GemmaTokenizerFast(
        tokenizer_file=p, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>",
        unk_token="<unk>"))
    save("llama2", llama2, legacy=True, hf=lambda p: LlamaTokenizerFast(
        tokenizer_file=p, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
        add_eos_token=True, legacy=True))
    save("mistral", mistral, hf=lambda p: LlamaTokenizerFast(
        tokenizer_file=p, bos_token="<s>", eos_token="</s>", unk_token="<unk>", legacy=False))
    save("metaspace_split", metaspace)
    save("sp_unk_fused", make_sp_unk(vocab, merges, True, False))
    save("sp_unk_not_fused", make_sp_unk(vocab, merges, False, False))
    save("sp_some_bytes_missing", make_sp_unk(vocab, merges, True, True))
    save("gpt2_style", gpt2)
    save("split_behaviors", make_split_behaviors(llama3))
    if with_transformers:
        # tokenizer_config.json over tokenizer.json: LlamaTokenizerFast rebuilds the template
        # from add_bos_token / add_eos_token (here: EOS only) whatever the file's template says.
        src = os.path.join(work, "llama2_hf")
        hd = os.path.join(work, "llama2_hf_eos_only")
        shutil.copytree(src, hd)
        cfg_path = os.path.join(hd, "tokenizer_config.json")
        with open(cfg_path) as f:
            cfg = json.load(f)
        cfg.update(add_bos_token=False, add_eos_token=True, clean_up_tokenization_spaces=True)
        with open(cfg_path, "w") as f:
            json.dump(cfg, f)
        out.append(("llama2_hf_eos_only", hd,
                    Tokenizer.from_file(os.path.join(hd, "tokenizer.json")), hd))
    return out


# ------------------------------------------------------------------------------------------------
# Comparison

def test_strings(rng, n, specials):
    fixed = list(ODD) + ["", " ", "a", "\n", "hello", " hello", "hello ", "▁hello", "<0x41>"]
    for s in specials:
        fixed += [s, "Hello world" + s, s + "hello", "x " + s + " y", s + s, "a" + s + "b",
                  s[:-1], " " + s + "  \n" + s + "\t", s.upper()]
    for a in specials:  # pairs: rstrip's spaces, then a token that starts with a space
        fixed += [a + "  " + b + "x" for b in specials]
    out = list(fixed)
    while len(out) < n:
        t = rand_text(rng)
        if specials and rng.random() < 0.15:
            cut = rng.randint(0, len(t))
            t = t[:cut] + rng.choice(specials) + t[cut:]
        if rng.random() < 0.01:
            t = rand_text(rng, 2000)  # long: the merge loop on long words, the prefix bound
        out.append(t)
    return out


class Tool:
    def __init__(self, tool, path):
        self.tool, self.path = tool, path

    def run(self, requests):
        inp = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in requests)
        p = subprocess.run([self.tool, self.path], input=inp.encode("utf-8"), capture_output=True)
        if p.returncode != 0:
            raise SystemExit(f"{self.tool} {self.path} failed ({p.returncode}): "
                             f"{p.stderr.decode(errors='replace')}")
        lines = p.stdout.decode("utf-8").split("\n")[:-1]
        return json.loads(lines[0]), [json.loads(x) for x in lines[1:]]


def fail(name, what, text, ours, theirs):
    print(f"MISMATCH [{name}] {what}\n  text:   {text!r}\n  ours:   {ours!r}\n  theirs: {theirs!r}")
    sys.exit(1)


def compare(name, path, tok, hf_dir, tool, n, rng):
    specials = [t.content for t in tok.get_added_tokens_decoder().values()]
    texts = test_strings(rng, n, specials)
    reqs, expect = [], []
    for i, t in enumerate(texts):
        add = i % 3 != 1
        reqs.append({"text": t, "add_special": add})
        enc = tok.encode(t, add_special_tokens=add).ids
        expect.append(("encode", t, enc, tok.decode(enc, skip_special_tokens=False), add))
    size = tok.get_vocab_size(with_added_tokens=True)
    for _ in range(n // 4):  # random ids: lossy UTF-8, byte-fallback runs, specials mid-text
        ids = [rng.randrange(size) for _ in range(rng.randint(1, 12))]
        reqs.append({"decode": ids})
        expect.append(("decode", ids, None, tok.decode(ids, skip_special_tokens=False), None))
    long_text = rand_text(rng, 3000)
    full = tok.encode(long_text).ids
    for m in (1, 7, 64, 300):
        reqs.append({"text": long_text, "max_length": m})
        expect.append(("max_length", m, full[:m] + [0] * (m - len(full[:m])), None, None))
    header, got = Tool(tool, path if hf_dir is None else hf_dir).run(reqs)
    for (kind, t, ids, dec, _), g in zip(expect, got):
        if "error" in g:
            fail(name, "tool error " + g["error"], t, None, ids)
        if kind == "encode" and hf_dir is None:
            if g["ids"] != ids:
                fail(name, "ids", t, g["ids"], ids)
            if g["decoded"] != dec and hf_dir is None:
                fail(name, "decode", t, g["decoded"], dec)
        elif kind == "decode" and hf_dir is None:
            if g["decoded"] != dec:
                fail(name, "decode of random ids", t, g["decoded"], dec)
        elif kind == "max_length" and hf_dir is None:
            if g["ids"] != ids:
                fail(name, f"EncodeToLength({t})", long_text[:80], g["ids"], ids)
    compared = len(texts)
    if header["vocab_size"] != size:
        fail(name, "vocab_size", "", header["vocab_size"], size)
    if hf_dir is not None:
        from transformers import AutoTokenizer
        at = AutoTokenizer.from_pretrained(hf_dir)
        for key in ("bos_token_id", "eos_token_id"):
            want = getattr(at, key)
            want = -1 if want is None else want
            if header[key.replace("_token", "")] != want:
                fail(name, key, "", header[key.replace("_token", "")], want)
        if at.pad_token_id is not None and header["pad_id"] != at.pad_token_id:
            fail(name, "pad_id", "", header["pad_id"], at.pad_token_id)
        for (kind, t, _, _, add), g in zip(expect, got):
            if kind == "encode":
                want = at(t, add_special_tokens=add)["input_ids"]
                if g["ids"] != want:
                    fail(name, "AutoTokenizer ids", t, g["ids"], want)
                if g["decoded"] != at.decode(want):
                    fail(name, "AutoTokenizer decode", t, g["decoded"], at.decode(want))
            elif kind == "decode":
                if g["decoded"] != at.decode(t):
                    fail(name, "AutoTokenizer decode of random ids", t, g["decoded"], at.decode(t))
    return compared


def code_points(exhaustive):
    """Every code point (exhaustive), or all below U+40000, the tags and variation selectors, and
    a sample of the unassigned and private planes."""
    if exhaustive:
        cps = range(0x110000)
    else:
        cps = list(range(0x40000)) + list(range(0xE0000, 0xE01F0)) + list(range(0x40000,
                                                                                0x110000, 97))
    return [chr(cp) for cp in cps if not 0xD800 <= cp <= 0xDFFF]


def probe_code_points(tool, work, exhaustive):
    """Unicode tables: the normalizers' (tokenizers uses Unicode 9.0's) and the regexes' \p{L},
    \p{N}, \s and case folding (Oniguruma vs PCRE2), char by char in a few contexts. A byte-level
    vocabulary without merges makes the ids the bytes of the normalized text, and
    ByteLevel(add_prefix_space) after the Split puts a space in front of every piece, so a
    different split shows."""
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {ch: i for i, ch in enumerate(alphabet)}
    cases = []
    forms = ["NFC", "NFD", "NFKC", "NFKD"] if exhaustive else ["NFC"]
    for form in forms:
        contexts = ["a{}\u0316", "a\u0301{}", "{}", "{}\u0301", "\u1100{}", "{}\u0300\u0328"]
        cases.append((form, getattr(normalizers, form)(), None, contexts))
    regexes = [("llama3", LLAMA3), ("qwen2", QWEN2), ("gpt2", None)] if exhaustive else [
        ("llama3", LLAMA3)]
    for name, regex in regexes:
        contexts = ["{}", "a{}b", "1{}2", " {} x", "'{}", "{}{}{}\n", "\t{}  y", "{}'s"]
        if not exhaustive:
            contexts = ["a{}b", " {} x", "'{}", "{}{}{}\n"]
        if regex is None:
            pt = pre_tokenizers.ByteLevel(add_prefix_space=True, use_regex=True)
        else:
            pt = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(regex), "isolated"),
                                          pre_tokenizers.ByteLevel(add_prefix_space=True,
                                                                   use_regex=False)])
        cases.append(("regex " + name, None, pt, contexts))
    chars = code_points(exhaustive)
    total = 0
    for name, norm, pt, contexts in cases:
        tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
        tok.normalizer = norm
        tok.pre_tokenizer = pt or pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
        tok.decoder = decoders.ByteLevel()
        path = os.path.join(work, "probe.json")
        tok.save(path)
        ctx = contexts
        probes = [x.replace("{}", ch) for ch in chars for x in ctx]
        lines = ["#".join(probes[i:i + 400]) for i in range(0, len(probes), 400)]
        _, got = Tool(tool, path).run([{"text": t, "add_special": False} for t in lines])
        for t, g in zip(lines, got):
            want = tok.encode(t, add_special_tokens=False).ids
            if g["ids"] != want:  # show the one probe that differs
                for p in t.split("#"):
                    w = tok.encode(p, add_special_tokens=False).ids
                    o = Tool(tool, path).run([{"text": p, "add_special": False}])[1][0]["ids"]
                    if o != w:
                        fail(name, "code point probe", p, o, w)
                fail(name, "code point probe", t, g["ids"], want)
        total += len(probes)
        print(f"  {name:22s} {len(chars)} code points x {len(ctx)} contexts: identical")
    return total


def compare_shipped_data(name, path, tok, tool):
    """Every record of the shipped dataset (examples/data/man_summaries.jsonl, 1.4 MB of English
    news prose), as the trainer formats it, encoded by us and by tokenizers: ids identical."""
    src = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "examples",
                       "data", "man_summaries.jsonl")
    texts = []
    with open(src, encoding="utf-8") as f:
        for line in f:
            r = json.loads(line)
            texts.append(f"[SUMMARIZE] {r['article']} [/SUMMARIZE]\n{r['highlights']}")
    _, got = Tool(tool, path).run([{"text": t, "add_special": True} for t in texts])
    for t, g, want in zip(texts, got, tok.encode_batch(texts)):
        if g.get("ids") != want.ids:
            fail(name, "ids of the shipped data", t, g.get("ids"), want.ids)
    return len(texts), sum(len(t.encode("utf-8")) for t in texts)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tool", required=True)
    ap.add_argument("--strings", type=int, default=600, help="strings per tokenizer")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--exhaustive", action="store_true",
                    help="every code point, all 4 normal forms and the 3 regexes (minutes)")
    args = ap.parse_args()
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="moreh_tokjson_") as work:
        toks = build_all(work)
        print(f"built {len(toks)} tokenizers in {time.time() - t0:.1f} s")
        rng = random.Random(args.seed)
        total = 0
        for name, path, tok, hf_dir in toks:
            n = compare(name, path, tok, hf_dir, args.tool, args.strings, rng)
            print(f"  {name:22s} {n} strings: ids and decoded text identical"
                  + (" (and AutoTokenizer's, BOS/EOS)" if hf_dir else ""))
            total += n
        shipped = 0
        for name, path, tok, _ in toks:
            if name in ("llama3", "qwen2", "gemma", "mistral"):
                n, size = compare_shipped_data(name, path, tok, args.tool)
                print(f"  {name:22s} the shipped data, {n} records ({size / 1e6:.2f} MB): ids "
                      f"identical")
                shipped += size
        probes = probe_code_points(args.tool, work, args.exhaustive)
    print(f"OK: {total} strings, {shipped / 1e6:.1f} MB of the shipped data and {probes} "
          f"code-point probes compared against tokenizers "
          f"{__import__('tokenizers').__version__} in {time.time() - t0:.1f} s")


if __name__ == "__main__":
    main()
