#!/usr/bin/env bash
# Builds the safetensors header fuzzer with clang (libFuzzer + ASan + UBSan) into OUT_DIR and runs
# it for SECONDS on a copy of the seed corpus. Exits non-zero on any finding.
# usage: run_fuzzer.sh SOURCE_DIR OUT_DIR SECONDS
set -euo pipefail
SRC=$(cd "$1" && pwd)
mkdir -p "$2"
OUT=$(cd "$2" && pwd)
SECS=$3
mkdir -p "$OUT"
bin="$OUT/safetensors_header_fuzzer"
sources=(tests/fuzz/safetensors_header_fuzzer.cc runtime/io/safetensors.cc runtime/core/dtype.cc
         runtime/core/shape.cc runtime/core/tensor.cc runtime/core/allocator.cc
         runtime/core/parallel.cc runtime/core/status.cc)
newest=0
for s in "${sources[@]}" runtime/io/safetensors.h; do
  t=$(stat -c %Y "$SRC/$s")
  (( t > newest )) && newest=$t
done
if [[ ! -x "$bin" || $(stat -c %Y "$bin") -lt $newest ]]; then
  (cd "$SRC" && clang++ -std=c++20 -O1 -g -fsanitize=fuzzer,address,undefined \
     -fno-sanitize-recover=undefined -fopenmp -I. "${sources[@]}" -lfmt -o "$bin")
fi
corpus="$OUT/corpus"
rm -rf "$corpus"
cp -r "$SRC/tests/fuzz/corpus" "$corpus"
cd "$OUT"
"$bin" -max_total_time="$SECS" -rss_limit_mb=2048 -max_len=4096 -print_final_stats=1 "$corpus" \
  2>&1 | tail -n 25
