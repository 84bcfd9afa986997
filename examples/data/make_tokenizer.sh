#!/usr/bin/env bash
# Trains examples/llama-mini/tokenizer.model (SentencePiece BPE, 4096 pieces, byte fallback, the
# prompt's tags as single pieces) on examples/data/man_summaries.jsonl with Debian's spm_train.
set -euo pipefail
cd "$(dirname "$0")/../.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 - "$tmp/input.txt" <<'PY'
import json, sys
with open(sys.argv[1], "w") as out:
    for line in open("examples/data/man_summaries.jsonl"):
        r = json.loads(line)
        out.write(f"[SUMMARIZE] {r['article']} [/SUMMARIZE]\n{r['highlights']}\n")
PY
spm_train --input="$tmp/input.txt" --model_prefix="$tmp/tok" --vocab_size=4096 --model_type=bpe \
  --byte_fallback=true --character_coverage=0.9999 --split_digits=true \
  --user_defined_symbols='[SUMMARIZE],[/SUMMARIZE]' --num_threads=2 --minloglevel=2
cp "$tmp/tok.model" examples/llama-mini/tokenizer.model
