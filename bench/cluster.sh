#!/usr/bin/env bash
# One node against three behind a balancer, and the S3 backend against the filesystem, in one
# run on one machine: berth-bench's small-image push/pull and manifest GET scenarios against
#   fs1   one node, filesystem blobs, PostgreSQL
#   s3-1  one node, S3 blobs (moto, scripts/s3-test-server.sh), PostgreSQL
#   s3-3  three nodes, S3 blobs, PostgreSQL, behind HAProxy (round robin)
# plus the machine's limits. On a 2-core machine three nodes share the same two cores (and the
# S3 server and PostgreSQL share them too): this measures the cluster's overhead, not its
# scaling. Needs BERTH_TEST_POSTGRES_URL (scripts/postgres-test-server.sh) and haproxy.
#   bench/cluster.sh            QUICK=1 bench/cluster.sh
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-/tmp/berth-cluster-bench}; rm -rf "$OUT"; mkdir -p "$OUT"
command -v haproxy >/dev/null || { echo "missing haproxy: apt-get install haproxy"; exit 1; }
PG=${BERTH_TEST_POSTGRES_URL:-$("$ROOT/scripts/postgres-test-server.sh")}
S3=${S3_ENDPOINT:-$("$ROOT/scripts/s3-test-server.sh")}
cargo build --release -q --workspace --manifest-path "$ROOT/Cargo.toml"
BIN=$ROOT/target/release
if [ -n "${QUICK:-}" ]; then ARGS=(--images 40 --conns 1,64 --seconds 2); else ARGS=(--images 200 --conns 1,16,64 --seconds 5); fi
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
export BERTH_SECRETS_KEY=$(openssl rand -hex 32) BERTH_MASTER_KEY=$(openssl rand -hex 32)
export BERTH_ROOT_ACCESS_KEY_ID=AKIABENCHCLUSTER0001 BERTH_ROOT_SECRET_ACCESS_KEY=$(openssl rand -hex 20)
export BERTH_GC_INTERVAL=off BERTH_LIFECYCLE_INTERVAL=off BERTH_LOG=warn BERTH_SCAN_WORKERS=0
PIDS=()
trap 'kill "${PIDS[@]}" 2>/dev/null; [ -f "$OUT/haproxy.pid" ] && kill "$(cat "$OUT/haproxy.pid")"; wait 2>/dev/null' EXIT
wait_up() { for _ in $(seq 100); do curl -fs -o /dev/null "$1/readyz" && return 0; sleep 0.2; done; echo "no answer at $1"; exit 1; }

setup() { # NAME STORAGE NODES: starts the nodes (and a balancer for more than one); sets URL, PIDLIST
  local name=$1 storage=$2 nodes=$3 db="bench_${1//-/_}_$$" i port servers=""
  psql "$PG" -qc "CREATE DATABASE $db" >/dev/null
  local env=(BERTH_DATABASE_URL="${PG%/*}/$db")
  if [ "$storage" = s3 ]; then
    curl -fsS -X PUT "$S3/bench-$name-$$" >/dev/null
    env+=(BERTH_STORAGE=s3 BERTH_S3_BUCKET="bench-$name-$$" BERTH_S3_ENDPOINT="$S3" BERTH_S3_PATH_STYLE=true
      BERTH_S3_ACCESS_KEY_ID=bench BERTH_S3_SECRET_ACCESS_KEY=bench-secret)
  fi
  PIDLIST=()
  for i in $(seq 1 "$nodes"); do
    port=$(free_port)
    env "${env[@]}" "$BIN/berth" serve --listen "127.0.0.1:$port" --data-dir "$OUT/$name-data-$i" \
      >"$OUT/$name-$i.log" 2>&1 &
    PIDS+=($!); PIDLIST+=($!)
    wait_up "http://127.0.0.1:$port"
    servers+="  server n$i 127.0.0.1:$port check inter 1s"$'\n'
    URL=http://127.0.0.1:$port
  done
  if [ "$nodes" -gt 1 ]; then
    local lb; lb=$(free_port)
    cat >"$OUT/haproxy.cfg" <<EOF
global
  pidfile $OUT/haproxy.pid
  maxconn 4000
defaults
  mode http
  timeout connect 2s
  timeout client 300s
  timeout server 300s
  option http-keep-alive
frontend f
  bind 127.0.0.1:$lb
  default_backend nodes
backend nodes
  balance roundrobin
  option httpchk GET /readyz
$servers
EOF
    haproxy -D -f "$OUT/haproxy.cfg"
    URL=http://127.0.0.1:$lb
    wait_up "$URL"; sleep 2
  fi
}

{
  echo "== machine: $(nproc) cores, $(awk '/MemTotal/{printf "%.0f GiB", $2/1048576}' /proc/meminfo)"
  openssl speed -evp sha256 -bytes 1048576 -seconds 2 2>/dev/null | awk '/^sha256/{printf "   SHA-256, one core (openssl): %.0f MB/s\n", $NF/1000}'
  openssl speed -evp aes-256-gcm -bytes 65536 -seconds 2 2>/dev/null | awk '/^AES-256-GCM/{printf "   AES-256-GCM, one core, 64 KiB (openssl): %.0f MB/s\n", $NF/1000}'
  dd if=/dev/zero of="$OUT/dd" bs=1M count=512 conv=fdatasync 2>&1 | awk '/copied/{print "   disk write 512 MiB + fdatasync (dd): " $(NF-1) " " $NF}'; rm -f "$OUT/dd"
  if command -v iperf3 >/dev/null; then
    iperf3 -s -1 -p 5298 >/dev/null 2>&1 & sleep 0.5
    iperf3 -c 127.0.0.1 -p 5298 -t 2 -l 1M -J | python3 -c 'import json,sys; print("   loopback TCP, one stream (iperf3): %.0f MB/s" % (json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]/8e6))'
  fi
  # The S3 server alone: 1 MiB PUTs and GETs, one client (its own ceiling for every S3 figure).
  python3 - "$S3" <<'PY'
import http.client, os, sys, time, urllib.parse
u = urllib.parse.urlparse(sys.argv[1]); data = os.urandom(1 << 20)
c = http.client.HTTPConnection(u.netloc); c.request("PUT", "/berth-test/bench-probe-dir"); c.getresponse().read()
for verb in ("PUT", "GET"):
    t = time.time(); n = 0
    while time.time() - t < 2:
        c.request(verb, f"/berth-test/bench-probe/{n % 50}", body=data if verb == "PUT" else None); r = c.getresponse(); r.read(); n += 1
    print(f"   S3 server (moto) {verb} 1 MiB, one client: {n / (time.time() - t):.0f} req/s, {n / (time.time() - t):.0f} MiB/s")
PY
} | tee "$OUT/machine.txt"

for setup in fs1:fs:1 s3-1:s3:1 s3-3:s3:3; do
  IFS=: read -r name storage nodes <<<"$setup"
  setup "$name" "$storage" "$nodes"
  echo "== $name ($nodes node(s), $storage) at $URL"
  "$BIN/berth-bench" --url "$URL" --scenarios small,manifest --prefix "$name" --json --user AWS \
    --password "$("$BIN/berth" get-login-password --data-dir "$OUT/$name-data-1" --database-url "${PG%/*}/bench_${name//-/_}_$$")" \
    "${ARGS[@]}" >"$OUT/$name.json" 2>"$OUT/$name.err" || { tail -5 "$OUT/$name.err"; echo "(failed)"; }
  kill "${PIDLIST[@]}" 2>/dev/null || true; wait "${PIDLIST[@]}" 2>/dev/null || true
  [ -f "$OUT/haproxy.pid" ] && { kill "$(cat "$OUT/haproxy.pid")" 2>/dev/null || true; rm -f "$OUT/haproxy.pid"; }
done

python3 - "$OUT" <<'PY' | tee "$OUT/report.txt"
import json, sys
out = sys.argv[1]
runs = {n: {s["scenario"]: s for s in json.load(open(f"{out}/{n}.json"))} for n in ("fs1", "s3-1", "s3-3")}
print(open(f"{out}/machine.txt").read().rstrip() + "\n")
print(f"{'scenario':30} {'metric':14} {'fs, 1 node':>11} {'S3, 1 node':>11} {'S3, 3 nodes':>12} {'S3/fs':>6} {'3/1':>6}")
for scen, s in runs["fs1"].items():
    for i, m in enumerate(s["metrics"]):
        if m["name"] not in ("throughput", "rate", "ops", "pulls", "pushes", "p50", "p99"):
            continue
        v = [runs[n].get(scen, {"metrics": []})["metrics"][i]["value"] if scen in runs[n] else 0 for n in ("fs1", "s3-1", "s3-3")]
        lower = m["name"] in ("p50", "p99")
        r = lambda a, b: (a / b if not lower else b / a) if a and b else 0
        print(f"{scen:30} {m['name'] + ' ' + m['unit']:14} {v[0]:11.1f} {v[1]:11.1f} {v[2]:12.1f} {r(v[1], v[0]):6.2f} {r(v[2], v[1]):6.2f}")
print("\nratios: higher is better for the first-named (S3/fs: S3 against the filesystem; 3/1: three nodes against one; latencies inverted)")
PY
