#!/usr/bin/env bash
# Runs a built libFuzzer target for SECONDS on a copy of its seed corpus (in WORK_DIR). Exits
# non-zero on any finding; the input that caused it is left in WORK_DIR (crash-*).
# usage: run_fuzz_target.sh BINARY SEED_DIR WORK_DIR SECONDS
set -euo pipefail
bin=$(readlink -f "$1") seeds=$(readlink -f "$2") secs=$4
mkdir -p "$3"
work=$(readlink -f "$3")
name=$(basename "$bin")
mkdir -p "$work"
corpus="$work/corpus_$name"
rm -rf "$corpus"
cp -r "$seeds" "$corpus"
cd "$work"
"$bin" -max_total_time="$secs" -rss_limit_mb=2048 -max_len=4096 -timeout=30 -print_final_stats=1 \
  "$corpus" 2>&1 | tail -n 25
exit "${PIPESTATUS[0]}"
