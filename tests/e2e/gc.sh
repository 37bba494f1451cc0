#!/usr/bin/env bash
# Online garbage collection under load: four clients push images sharing a layer, pull and check
# random images, and delete older ones, while the server collects every second (grace 2 s) and
# `berth gc` runs beside it in a loop. Afterwards: every image left is complete, `berth fsck` finds
# no missing blob, and no unreferenced blob older than the grace period is left. Then `kill -9`
# of a `berth gc` in the middle of deleting 20,000 blobs leaves a consistent registry that the
# next run finishes.
source "$(dirname "$0")/lib.sh"
export BERTH_GC_INTERVAL=1s BERTH_GC_GRACE=2s
start_berth gc
unset BERTH_GC_INTERVAL BERTH_GC_GRACE
BERTH_LOG=$E2E_WORK/gc.log
P=$E2E_WORK/gc; rm -rf "$P"; mkdir -p "$P"
gc_cli() { "$BERTH" gc --data-dir "$BERTH_DATA" "${BERTH_DB_ARGS[@]}" "$@"; }

step "4 clients × 250 rounds of push/pull/delete while garbage collection runs"
python3 "$ROOT/tests/e2e/gc_load.py" "http://$REG" "$BERTH_BASIC" 4 250 "$P/load.json" >"$P/load.out" 2>&1 &
LOAD=$!
runs=0
while kill -0 $LOAD 2>/dev/null; do
  gc_cli --grace 2s >>"$P/gc-cli.out" 2>&1 || fail "berth gc during the load: $(tail -3 "$P/gc-cli.out")"
  runs=$((runs + 1))
  sleep 0.3
done
wait $LOAD || fail "load: $(cat "$P/load.out")"
grep -c "deleted" "$P/gc-cli.out" >/dev/null || fail "no gc output"
collected=$(grep -o 'deleted [0-9]* blob' "$P/gc-cli.out" | awk '{s+=$2} END {print s+0}')
server=$(grep 'garbage collected' "$BERTH_LOG" | grep -o ' deleted=[0-9]*' | awk -F= '{s+=$2} END {print s+0}')
python3 - "$P/load.json" "$runs" "$collected" "$server" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
print(f"pushes {s['pushes']} (retried after a clean refusal: {s['retried_pushes']} {s['clean_refusals']}), "
      f"pulls {s['pulls']}, deletes {s['deletes']}, images left {s['images_left']}; "
      f"berth gc runs {sys.argv[2]} deleting {sys.argv[3]} blobs, server passes deleting {sys.argv[4]}")
assert s["pushes"] == 4 * 250 and not s["unexpected"] and not s["pull_errors"], s
PY
[ "$((collected + server))" -gt 0 ] || fail "nothing was collected during the load"

step "after the grace period: nothing unreferenced left, fsck clean, every image complete"
sleep 4
gc_cli --grace 2s >/dev/null; sleep 0.1; gc_cli --grace 0s >"$P/final.out"
gc_cli --dry-run --grace 0s >"$P/dry.out"
grep -q "would delete 0 blob" "$P/dry.out" || fail "garbage left: $(cat "$P/dry.out")"
"$BERTH" fsck --data-dir "$BERTH_DATA" "${BERTH_DB_ARGS[@]}" >"$P/fsck.out" 2>&1 || fail "fsck: $(tail "$P/fsck.out")"
grep -q "not recorded" "$P/fsck.out" && fail "blob files left behind: $(grep "not recorded" "$P/fsck.out" | head -3)"
rcurl -fsS "http://$REG/v2/gc/base/tags/list" | grep -q keep || fail "the base image is gone"

step "kill -9 during a sweep of 20,000 blobs; the next run finishes"
stop_berth
BERTH_GC_INTERVAL=off BERTH_AUTH_CHALLENGE=bearer "$BERTH" serve --listen "$REG" --data-dir "$BERTH_DATA" "${BERTH_DB_ARGS[@]}" >>"$BERTH_LOG" 2>&1 &
BERTH_PID=$!
wait_http "http://$REG/v2/"
# (the server's own collection is off now, so the junk waits for `berth gc`)
python3 - "http://$REG" "$BERTH_BASIC" <<'PY'
import hashlib, http.client, sys, threading, urllib.parse
host = urllib.parse.urlparse(sys.argv[1]).netloc
def run(k):
    c = http.client.HTTPConnection(host, timeout=60)
    for i in range(k, 20000, 8):
        data = f"garbage blob {i}".encode()
        d = "sha256:" + hashlib.sha256(data).hexdigest()
        c.request("POST", f"/v2/gc/junk/blobs/uploads/?digest={d}", body=data, headers={"Authorization": sys.argv[2]})
        r = c.getresponse(); r.read()
        assert r.status == 201, r.status
ts = [threading.Thread(target=run, args=(k,)) for k in range(8)]
[t.start() for t in ts]; [t.join() for t in ts]
PY
gc_cli --grace 0s >"$P/condemn.out"   # condemns the 20,000
grep -o 'condemned [0-9]*' "$P/condemn.out" | awk '$2 < 20000 {exit 1}' || fail "condemn: $(cat "$P/condemn.out")"
sleep 0.05
# The berth process itself (not a subshell) is what gets killed.
"$BERTH" gc --grace 0s --data-dir "$BERTH_DATA" "${BERTH_DB_ARGS[@]}" >"$P/killed.out" 2>&1 &
GCP=$!
# Kill it right after its first batch: mid-sweep, with batches marked deleting and others not.
# However slow the machine, wait for that first batch (not a fixed time); a batch takes far
# longer than the poll, so the kill lands before the sweep can finish.
while kill -0 $GCP 2>/dev/null && ! grep -q "garbage collection progress" "$P/killed.out"; do sleep 0.01; done
kill -9 $GCP 2>/dev/null || true
wait $GCP 2>/dev/null || true
"$BERTH" fsck --data-dir "$BERTH_DATA" "${BERTH_DB_ARGS[@]}" >"$P/fsck2.out" 2>&1 || fail "fsck after kill -9: $(tail "$P/fsck2.out")"
gc_cli --grace 0s >"$P/after.out" || fail "gc after kill -9: $(cat "$P/after.out")"
echo "  killed run printed: $(grep -c examined "$P/killed.out") summary line(s); next run: $(cat "$P/after.out")"
# The kill interrupted the sweep: it had deleted some, the next run deleted the rest.
grep -q "garbage collection progress" "$P/killed.out" || fail "the killed run never started deleting"
! grep -q examined "$P/killed.out" || fail "the killed run finished before the kill"
grep -o 'deleted [0-9]* blob' "$P/after.out" | awk '$2 == 0 || $2 >= 20000 {exit 1}' || fail "the next run: $(cat "$P/after.out")"
gc_cli --dry-run --grace 0s | grep -q "would delete 0 blob" || fail "garbage left after the finishing run"
"$BERTH" fsck --data-dir "$BERTH_DATA" "${BERTH_DB_ARGS[@]}" >"$P/fsck3.out" 2>&1 || fail "fsck: $(tail "$P/fsck3.out")"
grep -q "not recorded" "$P/fsck3.out" && fail "files left: $(grep "not recorded" "$P/fsck3.out" | head -3)"
rcurl -fsS "http://$REG/v2/gc/base/tags/list" | grep -q keep || fail "the base image is gone"
echo "PASS gc"
