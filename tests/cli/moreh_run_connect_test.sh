#!/usr/bin/env bash
# moreh-run connect with no scheduler configured: the embedded local cluster starts, the reference's
# connection lines appear in order, the lease is granted and released, and no daemon outlives the
# client, not even when the client is killed with SIGKILL. usage: moreh_run_connect_test.sh <moreh-run>
set -uo pipefail
RUN=$1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
unset MOREH_SCHEDULER
export MOREH_HOME="$tmp"  # no recorded local cluster of the user interferes
fail=0
check() { if eval "$2"; then echo "ok: $1"; else echo "FAIL: $1"; fail=1; fi; }
daemons_of() {  # daemons started for the cluster whose scheduler listens on port $1
  pgrep -f "moreh-worker --scheduler 127.0.0.1:$1" ; pgrep -f "moreh-scheduler --key-file /tmp/moreh-cluster-$2-"
}

"$RUN" connect --device-size Large --device-memory 256M >"$tmp/out" 2>&1
check "connect exits 0" "[[ $? -eq 0 ]]"
grep -o 'info\] .*' "$tmp/out" | sed 's/([0-9.:]*)/(ADDR)/' >"$tmp/lines"
cat >"$tmp/want" <<'LINES'
info] Requesting resources for MoAI Accelerator from the server...
info] Initializing the worker daemon for MoAI Accelerator
info] [1/4] Connecting to resources on the server (ADDR)...
info] [2/4] Connecting to resources on the server (ADDR)...
info] [3/4] Connecting to resources on the server (ADDR)...
info] [4/4] Connecting to resources on the server (ADDR)...
info] Establishing links to the resources...
info] MoAI Accelerator is ready to use.
LINES
check "the reference's connection lines, in order" "diff -u '$tmp/want' '$tmp/lines'"
check "4 devices granted on 4 nodes" "[[ \$(grep -c ' device 0 at 127.0.0.1:' '$tmp/out') -eq 4 ]]"
port=$(sed -n 's/^lease [0-9]* from 127.0.0.1:\([0-9]*\):$/\1/p' "$tmp/out")
sleep 0.3
# An empty $port loosens the pattern to every worker: it would pass whenever none runs here.
check "no daemon outlives the client" "[[ -n \"$port\" && -z \"\$(pgrep -f 'moreh-worker --scheduler 127.0.0.1:$port')\" ]]"

"$RUN" connect --device-size Medium --device-memory 64M --hold-seconds 30 >"$tmp/out2" 2>&1 &
pid=$!
for _ in $(seq 100); do grep -q "^lease" "$tmp/out2" && break; sleep 0.1; done
port=$(sed -n 's/^lease [0-9]* from 127.0.0.1:\([0-9]*\):$/\1/p' "$tmp/out2")
check "held cluster is running" "[[ -n \"$port\" && -n \"\$(pgrep -f 'moreh-worker --scheduler 127.0.0.1:$port')\" ]]"
kill -9 $pid
wait $pid 2>/dev/null
sleep 0.5
check "kill -9 of the client leaves no orphan daemons" "[[ -n \"$port\" && -z \"\$(pgrep -f 'moreh-worker --scheduler 127.0.0.1:$port')\" ]]"
"$RUN" connect --device-size Gigantic >"$tmp/bad" 2>&1
check "unknown size named" "[[ $? -ne 0 ]] && grep -q \"unknown device size 'Gigantic'\" '$tmp/bad'"

# More devices asked for than are alive: it says what it waits for, and --wait-timeout bounds it.
"$RUN" cluster up --workers 3 --device-memory 64M >"$tmp/up" 2>&1
check "a 3-worker cluster is up" "[[ $? -eq 0 && -f '$tmp/local-cluster.json' ]]"
for _ in $(seq 100); do "$RUN" connect --device-size Medium --wait-timeout 1 >/dev/null 2>&1 && break; sleep 0.2; done
start=$(date +%s%N)
"$RUN" --wait-timeout 2 connect --device-size Large >"$tmp/wait" 2>&1
rc=$?
took_ms=$(( ($(date +%s%N) - start) / 1000000 ))
check "waiting: it says how many devices of the size are available" "grep -q '3 of 4 devices of size Large are available (3 alive in the cluster); waiting (at most 2 s' '$tmp/wait'"
check "waiting: --wait-timeout ends it with a clear error (${took_ms} ms)" "[[ $rc -ne 0 && $took_ms -lt 10000 ]] && grep -q 'could not grant Large within 2 s: 3 of 4 devices are available' '$tmp/wait'"
MOREH_WAIT_TIMEOUT=soon "$RUN" connect --device-size Large >"$tmp/badwait" 2>&1
check "a malformed MOREH_WAIT_TIMEOUT is named" "[[ \$? -ne 0 ]] && grep -q \"MOREH_WAIT_TIMEOUT='soon' must be a number of seconds\" '$tmp/badwait'"
"$RUN" connect --wait-timeout -3 >"$tmp/badflag" 2>&1
check "a bad --wait-timeout is named" "[[ \$? -eq 2 ]] && grep -q 'wait-timeout needs a number of seconds' '$tmp/badflag'"
# A fourth worker joins while a client waits: the client goes on.
MOREH_WAIT_TIMEOUT=60 "$RUN" connect --device-size Large >"$tmp/joined" 2>&1 &
waiter=$!
for _ in $(seq 100); do grep -q 'are available' "$tmp/joined" && break; sleep 0.1; done
dir=$(python3 -c "import json; print(json.load(open('$tmp/local-cluster.json'))['dir'])")
sched=$(python3 -c "import json; print(json.load(open('$tmp/local-cluster.json'))['scheduler'])")
"$(dirname "$RUN")/moreh-worker" --scheduler "$sched" --key-file "$dir/key" --node late --devices cpu:1:64M --no-profile >"$tmp/late.log" 2>&1 &
late=$!
wait $waiter
check "waiting: a worker that joins lets the waiting client go on" "[[ \$? -eq 0 ]] && grep -q 'MoAI Accelerator is ready to use' '$tmp/joined'"
kill $late 2>/dev/null; wait $late 2>/dev/null
"$RUN" cluster down >/dev/null 2>&1
exit $fail
