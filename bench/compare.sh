#!/usr/bin/env bash
# Side-by-side benchmark: Berth and CNCF Distribution 2.8.2 (Debian's docker-registry) on two
# loopback ports with fresh data directories, the machine's limits measured in the same run, every
# berth-bench scenario run against both in alternation, and the ratios printed.
#   bench/compare.sh                 full run (about 20 minutes)
#   QUICK=1 bench/compare.sh         small sizes, for a quick look
# Extra berth-bench flags can be given in BENCH_ARGS. Results: $OUT (default /tmp/berth-compare).
# Encryption's cost: the blob scenario also runs against Berth as it was before encryption at rest
# (PLAIN_REV, default 6fe116e, built once into $PLAIN_DIR; PLAIN_REV=none skips it), and the report
# gives encrypted/plain ratios beside the machine's AES-256-GCM speed.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-/tmp/berth-compare}; rm -rf "$OUT"; mkdir -p "$OUT"
for c in docker-registry iperf3 openssl python3; do
  command -v $c >/dev/null || { echo "missing $c: apt-get install docker-registry iperf3 openssl python3"; exit 1; }
done
# The whole workspace, as ./test.sh builds it: the same features, so no dependency is rebuilt.
cargo build --release -q --workspace --manifest-path "$ROOT/Cargo.toml"
BIN=$ROOT/target/release
if [ -n "${QUICK:-}" ]; then
  ARGS=(--blob-mib 256 --images 50 --conns 1,64 --seconds 2 --tags 2000 --repos 200 --pages 50 --mixed-seconds 5)
else
  ARGS=(--blob-mib 1024 --images 200 --conns 1,16,64,256 --seconds 5 --tags 100000 --repos 1000 --pages 200 --mixed-seconds 10)
fi
# shellcheck disable=SC2206
ARGS+=(${BENCH_ARGS:-})

PLAIN_REV=${PLAIN_REV:-6fe116e}
PLAIN_DIR=${PLAIN_DIR:-/tmp/berth-plain-$PLAIN_REV}
if [ "$PLAIN_REV" != none ] && [ ! -x "$PLAIN_DIR/target/release/berth" ]; then
  rm -rf "$PLAIN_DIR"; git -C "$ROOT" worktree add -f "$PLAIN_DIR" "$PLAIN_REV" >/dev/null 2>&1
  CARGO_TARGET_DIR=$PLAIN_DIR/target cargo build --release -q -p berth --manifest-path "$PLAIN_DIR/Cargo.toml"
fi

source "$ROOT/bench/lib.sh"
start_pair 5201 5202
if [ "$PLAIN_REV" != none ]; then
  "$PLAIN_DIR/target/release/berth" serve --listen 127.0.0.1:5203 --data-dir "$OUT/plain-data" --log warn >"$OUT/plain.log" 2>&1 &
  PP=$!
  trap 'kill $BP $DP $PP 2>/dev/null; wait 2>/dev/null' EXIT
  for _ in $(seq 50); do [ "$(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:5203/v2/)" != 000 ] && break; sleep 0.2; done
  PLAIN_PW=$("$PLAIN_DIR/target/release/berth" get-login-password --data-dir "$OUT/plain-data")
fi
sleep 1
# Berth is measured as deployed: authentication on, every request carrying the docker login
# password (Basic, $BERTH_PW from start_pair). Distribution runs without authentication.

{
  echo "== machine: $(nproc) cores, $(awk '/MemTotal/{printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
  echo "   Berth $("$BIN/berth" --version | cut -d' ' -f2) ($(git -C "$ROOT" rev-parse --short HEAD)), Distribution $(docker-registry --version 2>/dev/null | awk '{print $NF}')"
  openssl speed -evp sha256 -bytes 1048576 -seconds 2 2>/dev/null | awk '/^sha256/{printf "   SHA-256, one core (openssl): %.0f MB/s\n", $NF/1000}'
  dd if=/dev/zero of="$OUT/dd" bs=1M count=1024 conv=fdatasync 2>&1 | awk '/copied/{print "   disk write 1 GiB + fdatasync (dd): " $(NF-1) " " $NF}'
  rm -f "$OUT/dd"
  iperf3 -s -1 -p 5299 >/dev/null 2>&1 & sleep 0.5
  iperf3 -c 127.0.0.1 -p 5299 -t 3 -l 1M -J | python3 -c 'import json,sys; print("   loopback TCP, one stream (iperf3): %.0f MB/s" % (json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]/8e6))'
  openssl speed -evp aes-256-gcm -bytes 65536 -seconds 2 2>/dev/null | awk '/^AES-256-GCM/{printf "   AES-256-GCM, one core, 64 KiB (openssl): %.0f MB/s\n", $NF/1000}'
} | tee "$OUT/machine.txt"

# The large-blob scenario is short and the most sensitive to a shared machine's noise: it runs
# three times (alternating) and the report takes the median.
for s in blob:1 blob:2 blob:3 small:1 manifest:1 tags:1 mixed:1; do
  IFS=: read -r scen round <<<"$s"
  for reg in berth:5201:$BP dist:5202:$DP; do
    IFS=: read -r name port pid <<<"$reg"
    echo "== $scen ($round): $name"
    CREDS=(); [ "$name" = berth ] && CREDS=(--user AWS --password "$BERTH_PW")
    "$BIN/berth-bench" --url "http://127.0.0.1:$port" --pid "$pid" --scenarios "$scen" --prefix "bench$round" --json \
      "${CREDS[@]}" "${ARGS[@]}" >"$OUT/$name-$scen-$round.json" 2>"$OUT/$name-$scen-$round.err" \
      || { tail -5 "$OUT/$name-$scen-$round.err"; echo "(scenario failed)"; }
  done
done
# Encryption's cost: the same blob scenario against the build before encryption, alternating.
if [ "$PLAIN_REV" != none ]; then
  for round in 1 2 3; do
    for reg in sealed:5201:$BP:$BERTH_PW plain:5203:$PP:$PLAIN_PW; do
      IFS=: read -r name port pid pw <<<"$reg"
      echo "== blob (encryption $round): $name"
      "$BIN/berth-bench" --url "http://127.0.0.1:$port" --pid "$pid" --scenarios blob --prefix "enc$round" --json \
        --user AWS --password "$pw" "${ARGS[@]}" >"$OUT/enc-$name-$round.json" 2>"$OUT/enc-$name-$round.err" \
        || { tail -5 "$OUT/enc-$name-$round.err"; echo "(scenario failed)"; }
    done
  done
fi
for reg in berth:$BP dist:$DP; do
  echo "${reg%%:*} idle RSS after the run: $(awk '/VmRSS/{printf "%.1f MiB", $2/1024}' /proc/${reg##*:}/status)" >>"$OUT/machine.txt"
done

python3 - "$OUT" <<'PY' | tee "$OUT/report.txt"
import glob, json, os, sys
out = sys.argv[1]
def load(name):
    """Scenario name -> result; repeated scenarios get the median of each metric."""
    runs = {}
    for f in sorted(glob.glob(f"{out}/{name}-*.json")):
        try:
            for s in json.load(open(f)):
                runs.setdefault(s["scenario"], []).append(s)
        except Exception:
            pass
    res = {}
    for k, rs in runs.items():
        first = rs[0]
        if k == "idle":  # the first run's: measured before any scenario
            res[k] = first
            continue
        for i, m in enumerate(first["metrics"]):
            vals = sorted(r["metrics"][i]["value"] for r in rs if len(r["metrics"]) > i)
            m["value"] = vals[len(vals) // 2]
        srv = [r["server"] for r in rs if r.get("server")]
        if srv:
            first["server"] = {"peak_rss_mib": max(x["peak_rss_mib"] for x in srv),
                               "cpu_seconds": sorted(x["cpu_seconds"] for x in srv)[len(srv) // 2]}
        res[k] = first
    return res
b, d = load("berth"), load("dist")
print(open(f"{out}/machine.txt").read().rstrip())
print()
print(f"{'scenario':34} {'metric':12} {'Berth':>12} {'Distribution':>13} {'ratio':>8}")
higher_better = {"throughput", "rate", "ops", "pulls", "pushes"}
for name, s in b.items():
    o = d.get(name, {"metrics": []})
    om = {m["name"]: m for m in o["metrics"]}
    for m in s["metrics"]:
        if m["name"] not in higher_better | {"p50", "p99", "RSS"}:
            continue
        ov = om.get(m["name"], {}).get("value")
        if ov:
            r = m["value"] / ov if m["name"] in higher_better else ov / m["value"] if m["value"] else float("inf")
            ratio = f"{r:7.2f}x"
        else:
            ratio = "      -"
        unit = m["unit"]
        ovs = f"{ov:.1f}" if ov is not None else "-"
        print(f"{name:34} {m['name'] + ' ' + unit:12} {m['value']:12.1f} {ovs:>13} {ratio}")
    for label, src in (("Berth", s), ("Distribution", o)):
        srv = src.get("server")
        if srv:
            print(f"{'':34} {label + ' server':12} peak RSS {srv['peak_rss_mib']:.0f} MiB, CPU {srv['cpu_seconds']:.1f} s")
enc = {}
for name in ("sealed", "plain"):
    for f in sorted(glob.glob(f"{out}/enc-{name}-*.json")):
        try:
            for sc in json.load(open(f)):
                if sc["scenario"].startswith("blob"):
                    enc.setdefault((sc["scenario"], name), []).append(sc["metrics"][0]["value"])
        except Exception:
            pass
if enc:
    print(f"\nencryption at rest (same machine, same run; plain = Berth before encryption, {os.environ.get('PLAIN_REV', '6fe116e')}):")
    for scen in sorted({k[0] for k in enc}):
        se, pl = sorted(enc.get((scen, "sealed"), [0])), sorted(enc.get((scen, "plain"), [0]))
        m = lambda v: v[len(v) // 2]
        if m(pl):
            print(f"  {scen:28} encrypted {m(se):8.1f} MB/s   plain {m(pl):8.1f} MB/s   ratio {m(se) / m(pl):5.2f}")
print("\nthe blob scenario ran 3 times per registry, alternating; its figures are medians")
print("ratio: Berth's advantage (higher is better for Berth; for latencies Distribution/Berth)")
PY
