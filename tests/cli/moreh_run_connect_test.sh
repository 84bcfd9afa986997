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
exit $fail
