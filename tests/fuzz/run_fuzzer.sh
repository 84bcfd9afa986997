#!/usr/bin/env bash
# Builds a fuzz target with clang (libFuzzer + ASan + UBSan) into OUT_DIR and runs it for SECONDS
# on a copy of its seed corpus. Exits non-zero on any finding.
# usage: run_fuzzer.sh SOURCE_DIR OUT_DIR SECONDS [safetensors_header|frame_decoder]
set -euo pipefail
SRC=$(cd "$1" && pwd)
mkdir -p "$2"
OUT=$(cd "$2" && pwd)
SECS=$3
TARGET=${4:-safetensors_header}
mkdir -p "$OUT"
bin="$OUT/${TARGET}_fuzzer"
case $TARGET in
  safetensors_header)
    sources=(tests/fuzz/safetensors_header_fuzzer.cc runtime/io/safetensors.cc runtime/core/dtype.cc
             runtime/core/shape.cc runtime/core/tensor.cc runtime/core/allocator.cc
             runtime/core/parallel.cc runtime/core/status.cc)
    seeds=tests/fuzz/corpus ;;
  frame_decoder)
    sources=(tests/fuzz/frame_decoder_fuzzer.cc runtime/net/framing.cc runtime/core/status.cc)
    seeds=tests/fuzz/corpus_frames ;;
  *) echo "unknown fuzz target '$TARGET'" >&2; exit 2 ;;
esac
newest=0
for s in "${sources[@]}"; do
  t=$(stat -c %Y "$SRC/$s")
  (( t > newest )) && newest=$t
done
if [[ ! -x "$bin" || $(stat -c %Y "$bin") -lt $newest ]]; then
  (cd "$SRC" && clang++ -std=c++20 -O1 -g -fsanitize=fuzzer,address,undefined \
     -fno-sanitize-recover=undefined -fopenmp -I. "${sources[@]}" -lfmt -o "$bin")
fi
corpus="$OUT/corpus_$TARGET"
rm -rf "$corpus"
cp -r "$SRC/$seeds" "$corpus"
cd "$OUT"
"$bin" -max_total_time="$SECS" -rss_limit_mb=2048 -max_len=4096 -print_final_stats=1 "$corpus" \
  2>&1 | tail -n 25
