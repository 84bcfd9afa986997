#!/usr/bin/env bash
# moreh-run train end to end on the shipped model and data: the reference's log lines, a saved
# Hugging Face checkpoint, and clear errors (non-zero exit) for bad flags and files.
# usage: moreh_run_train_test.sh <moreh-run> <source dir>
set -uo pipefail
RUN=$1
SRC=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail=0
expect() {  # expect <description> <pattern> <file>
  if grep -qF -- "$2" "$3"; then echo "ok: $1"; else echo "FAIL: $1 (no '$2')"; cat "$3"; fail=1; fi
}

"$RUN" train --model-name-or-path "$SRC/examples/llama-mini" --dataset "$SRC/examples/data/man_summaries.jsonl" \
  --block-size 64 --batch-size 4 --lr 1e-3 --log-interval 2 --max-steps 4 \
  --save-model-dir "$tmp/out" >"$tmp/log" 2>&1
rc=$?
[[ $rc -eq 0 ]] && echo "ok: exit 0" || { echo "FAIL: exit $rc"; cat "$tmp/log"; fail=1; }
expect "AP switch logged" "Advanced Parallelization is enabled" "$tmp/log"
expect "progress bar" "Map: 100%|" "$tmp/log"
expect "step log" "[info] [Step 2/4] Loss: " "$tmp/log"
expect "step log" "[Step 4/4] Loss: " "$tmp/log"
expect "done" "Training Done" "$tmp/log"
expect "saving" "Saving Model..." "$tmp/log"
expect "saved" "Model saved in '$tmp/out'" "$tmp/log"
[[ -f "$tmp/out/config.json" && -f "$tmp/out/model.safetensors" ]] && echo "ok: checkpoint files" \
  || { echo "FAIL: checkpoint files missing"; fail=1; }

bad() {  # bad <description> <pattern> <args...>
  local what=$1 pat=$2
  shift 2
  "$RUN" "$@" >"$tmp/bad" 2>&1
  local rc=$?
  if [[ $rc -ne 0 ]] && grep -qF -- "$pat" "$tmp/bad"; then echo "ok: $what (exit $rc)"
  else echo "FAIL: $what (exit $rc, wanted '$pat')"; cat "$tmp/bad"; fail=1; fi
}
M=(--model-name-or-path "$SRC/examples/llama-mini")
bad "unknown command" "unknown command 'fly'" fly
bad "missing model" "--model-name-or-path is required" train
bad "block size 0" "--block-size" train "${M[@]}" --block-size 0
bad "negative lr" "--lr" train "${M[@]}" --lr -1
bad "missing dataset" "nope.jsonl: cannot open the dataset" train "${M[@]}" --dataset "$tmp/nope.jsonl"
printf '{"article": "a"}\n' >"$tmp/d.jsonl"
bad "dataset field" "d.jsonl:1: missing field 'highlights'" train "${M[@]}" --dataset "$tmp/d.jsonl"
mkdir -p "$tmp/m" && echo '{"vocab_size": 10' >"$tmp/m/config.json" && cp "$SRC/examples/llama-mini/tokenizer.model" "$tmp/m/"
bad "corrupt config" "config.json: not valid JSON" train --model-name-or-path "$tmp/m"
bad "no tokenizer" "tokenizer.model: no such file" train --model-name-or-path "$tmp"
exit $fail
