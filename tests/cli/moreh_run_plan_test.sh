#!/usr/bin/env bash
# moreh-run plan: the reference job's dry run (log lines, JSON, picture), AP off out of memory,
# and bad flags. usage: moreh_run_plan_test.sh <moreh-run> <source dir>
set -uo pipefail
RUN=$1
SRC=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail=0
check() { if eval "$2"; then echo "ok: $1"; else echo "FAIL: $1"; fail=1; fi; }
M=(--model-name-or-path "$SRC/examples/models/llama-2-13b" --batch-size 64 --block-size 1024)

"$RUN" plan "${M[@]}" --device-size 4xLarge --svg "$tmp/plan.svg" >"$tmp/out" 2>&1
check "plan exits 0" "[[ $? -eq 0 ]]"
for line in "Got DBs from backend for auto config." "The number of candidates is " \
    "Parallel Graph Compile start..." "Elapsed Time to compile all candidates = " \
    "Parallel Graph Compile finished." "The number of possible candidates is " \
    "SelectBestGraphFromCandidates start..." "SelectBestGraphFromCandidates finished." \
    "Configuration for parallelism is selected." "] [info] num_stages : " "chosen: num_stages"; do
  check "log: $line" "grep -qF -- '$line' '$tmp/out'"
done
check "picture written" "grep -q '<svg' '$tmp/plan.svg'"
# Llama 2 13B has 13,015,864,320 parameters (transformers' num_parameters()); bf16 mixed precision
# keeps 18 bytes of training state per parameter.
check "model size line" "grep -qF 'model : llama (LlamaForCausalLM), num params : 13015864320 (13.02 B), training state : 218.20 GiB (18 bytes' '$tmp/out'"
# Today's families (examples/models: their published config.json): each plans, and its parameter
# count is the published one (transformers' num_parameters() of the real checkpoint).
for mc in llama-3.1-8b:8030261248 llama-3.2-1b:1235814400 mistral-7b-v0.3:7248023552 \
    qwen2.5-7b:7615616512 qwen3-8b:8190735360 gemma-2-2b:2614341888; do
  "$RUN" plan --model-name-or-path "$SRC/examples/models/${mc%%:*}" --batch-size 64 \
    --block-size 1024 --device-size 4xLarge >"$tmp/family" 2>&1
  check "${mc%%:*}: plans with ${mc##*:} parameters" \
    "grep -q 'num params : ${mc##*:} ' '$tmp/family' && grep -q '^chosen: ' '$tmp/family'"
done
"$RUN" plan "${M[@]}" --device-size 4xLarge --json >"$tmp/plan.json" 2>"$tmp/err"
check "json plan" "python3 -c \"import json,sys; p=json.load(open('$tmp/plan.json')); assert p['chosen']['feasible']; assert p['num_candidates'] > 100; assert len(p['schedule']) == p['chosen']['num_stages']; assert p['model']['num_params'] == 13015864320\""
"$RUN" plan "${M[@]}" --device-size 4xLarge --ap off >"$tmp/off" 2>&1
rc=$?
check "AP off: exit 1" "[[ $rc -eq 1 ]]"
check "AP off: OUT_OF_MEMORY with bytes" "grep -q 'Error Code 4: OUT_OF_MEMORY' '$tmp/off' && grep -q 'Memory requested : ' '$tmp/off'"
"$RUN" plan "${M[@]}" --device-size Enormous >"$tmp/bad" 2>&1
check "unknown device size named" "[[ $? -ne 0 ]] && grep -q \"unknown device size 'Enormous'\" '$tmp/bad'"
"$RUN" plan "${M[@]}" --cluster "$tmp/nope.json" >"$tmp/bad" 2>&1
check "missing cluster file named" "[[ $? -ne 0 ]] && grep -q 'nope.json: cannot open' '$tmp/bad'"
"$RUN" plan --batch-size 8 --block-size 16 --device-size Small >"$tmp/bad" 2>&1
check "model required" "[[ $? -ne 0 ]]"
"$RUN" plan --model-name-or-path "$SRC/examples/llama-mini" --batch-size 8 --block-size 256 \
  --cluster "$SRC/examples/clusters/local-cpu.json" --dtype f32 >"$tmp/cpu" 2>&1
check "local CPU cluster plan" "[[ $? -eq 0 ]] && grep -q 'chosen:' '$tmp/cpu'"
exit $fail
