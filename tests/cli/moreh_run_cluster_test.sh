#!/usr/bin/env bash
# moreh-run cluster up|status|down (a background local cluster the tools and clients then find) and
# moreh-run -- PROGRAM (the program runs with MOREH_SCHEDULER set; an embedded cluster for its
# lifetime when none is configured; its exit code comes back). usage: ... <bin dir>
set -uo pipefail
B=$1
export MOREH_HOME=$(mktemp -d)
trap '"$B/moreh-run" cluster down >/dev/null 2>&1; rm -rf "$MOREH_HOME"' EXIT
unset MOREH_SCHEDULER
fail=0
check() { if eval "$2"; then echo "ok: $1"; else echo "FAIL: $1"; fail=1; fi; }
"$B/moreh-run" cluster status >/dev/null 2>&1
check "status with no cluster exits 1" "[[ $? -eq 1 ]]"
out=$("$B/moreh-run" cluster up --workers 2 --device-memory 256M)
check "cluster up" "[[ \"$out\" == *'local cluster up: scheduler 127.0.0.1:'* ]]"
addr=$(sed -n 's/.*scheduler \(127.0.0.1:[0-9]*\),.*/\1/p' <<<"$out")
check "cluster status: all daemons running" "\"$B/moreh-run\" cluster status | grep -q '3 of 3 daemons running'"
for _ in $(seq 50); do "$B/moreh-smi" --cluster 2>/dev/null | grep -q 'free devices: 2' && break; sleep 0.1; done
check "moreh-smi finds the recorded cluster" "\"$B/moreh-smi\" --cluster | grep -q 'free devices: 2'"
check "clients find it too" "\"$B/moreh-run\" connect --device-size Medium | grep -q \"from $addr\""
check "moreh-run -- PROGRAM sees the scheduler" "[[ \$(\"$B/moreh-run\" -- sh -c 'echo \$MOREH_SCHEDULER') == \"$addr\" ]]"
"$B/moreh-run" cluster down >/dev/null
sleep 0.3
check "cluster down stops every daemon" "[[ -z \"\$(pgrep -f \"moreh-worker --scheduler $addr\")\" ]]"
"$B/moreh-run" -- sh -c 'test -n "$MOREH_SCHEDULER" && exit 3'
check "an embedded cluster for the program; its exit code comes back" "[[ $? -eq 3 ]]"
"$B/moreh-run" -- /nonexistent-program 2>/dev/null
check "a missing program is named (exit 127)" "[[ $? -eq 127 ]]"
exit $fail
