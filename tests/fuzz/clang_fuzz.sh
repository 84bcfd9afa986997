#!/usr/bin/env bash
# CMake's compiler and link launcher for the handler fuzz targets (tests/CMakeLists.txt): runs
# clang++ in place of the configured compiler (the argument after the mode), adding libFuzzer's
# coverage and the address and undefined-behaviour sanitizers. The targets link the g++-built
# libraries (same libstdc++), so OpenMP is GCC's libgomp, as theirs.
# usage: clang_fuzz.sh compile|link COMPILER ARGS...
set -euo pipefail
mode=$1
shift 2
args=()
for a in "$@"; do
  [[ $a == -fopenmp ]] && a=-fopenmp=libgomp
  args+=("$a")
done
if [[ $mode == compile ]]; then
  flags=(-fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined -g -O1)
  if command -v ccache >/dev/null; then exec ccache clang++ "${args[@]}" "${flags[@]}"; fi
else
  flags=(-fsanitize=fuzzer,address,undefined)
fi
exec clang++ "${args[@]}" "${flags[@]}"
