#!/usr/bin/env bash
# The emulated binaries must take every CUDA runtime, cuBLAS and NCCL entry point from the
# emulator (simt.cc, simt_device.cc, simt_nccl.cc): a function it lacks would resolve to the real
# library at link time and fail at run time ("no CUDA driver") only on the path that calls it. Fails naming each binary's imports from them.
# usage: check_no_cuda_imports.sh BINARY...
status=0
for b in "$@"; do
  imports=$(nm -D --undefined-only "$b" | awk '{print $2}' | grep -E '^(cuda|cublas|cu[A-Z]|nccl)')
  if [[ -n $imports ]]; then
    echo "FAIL $b imports from the CUDA libraries (add them to tests/cuda/simt/simt.cc):"
    echo "$imports" | sed 's/^/  /'
    status=1
  else
    echo "ok   $b"
  fi
done
exit $status
