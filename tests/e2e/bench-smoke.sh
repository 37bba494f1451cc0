#!/usr/bin/env bash
# berth-bench works end to end against a running Berth: every scenario runs with tiny sizes,
# reports its metrics and the server's resources, and sees no error. Correctness, not speed.
source "$(dirname "$0")/lib.sh"
BENCH=${BENCH_BIN:-$ROOT/target/release/berth-bench}
[ -x "$BENCH" ] || fail "berth-bench not built ($BENCH)"
start_berth bench-smoke
"$BENCH" --url "http://$REG" --user AWS --password "$BERTH_PASSWORD" --pid "$BERTH_PID" --json --blob-mib 8 --images 10 --clients 4 --conns 1,4 \
  --seconds 0.5 --tags 300 --repos 20 --pages 5 --mixed-seconds 1 >"$E2E_WORK/bench.json" 2>"$E2E_WORK/bench.err" \
  || { cat "$E2E_WORK/bench.err"; fail "berth-bench failed"; }
python3 - "$E2E_WORK/bench.json" <<'PY'
import json, sys
res = json.load(open(sys.argv[1]))
names = [r["scenario"] for r in res]
want = ["idle", "blob push 8 MiB", "blob pull 8 MiB", "small image push x4", "small image pull x4",
        "manifest GET by tag c=4", "blob HEAD c=1", "tags list n=100 of 300", "mixed 90/10 x4 1s"]
for w in want:
    assert w in names, f"missing scenario {w!r} in {names}"
for r in res:
    assert r["errors"] == 0, f"{r['scenario']}: {r['errors']} errors"
    for m in r["metrics"]:
        assert m["value"] >= 0, r
    if r["scenario"] != "idle" and not r["scenario"].startswith("tag PUT"):
        assert r["server"]["peak_rss_mib"] > 1, f"no server resources for {r['scenario']}"
rate = {r["scenario"]: r["metrics"][0]["value"] for r in res}
assert rate["blob push 8 MiB"] > 0 and rate["manifest GET by tag c=4"] > 0
tags = next(r for r in res if r["scenario"] == "tags list n=100 of 300")
per_page = next(m["value"] for m in tags["metrics"] if m["name"] == "entries/page")
assert 50 <= per_page <= 100, f"tags pages hold {per_page} entries: Link pagination not followed?"
print(f"{len(res)} scenario results, no errors")
PY
echo "PASS bench-smoke"
