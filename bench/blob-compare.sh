#!/usr/bin/env bash
# First side-by-side figure: one large blob pushed (streamed PATCH, as docker does, then PUT) and
# pulled with curl, against Berth and CNCF Distribution 2.8.2 (Debian's docker-registry), in
# alternation, on loopback. Also measures the machine's limits in the same run.
#   bench/blob-compare.sh [SIZE_MIB=1024] [ROUNDS=3]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SIZE_MIB=${1:-1024}; ROUNDS=${2:-3}
W=${BENCH_WORK:-/tmp/berth-bench}; rm -rf "$W"; mkdir -p "$W"
command -v docker-registry >/dev/null || { echo "apt-get install docker-registry"; exit 1; }
cargo build --release -q --manifest-path "$ROOT/Cargo.toml"

"$ROOT/target/release/berth" serve --listen 127.0.0.1:5101 --data-dir "$W/berth" >"$W/berth.log" 2>&1 &
BP=$!
cat >"$W/dist.yml" <<YML
version: 0.1
log: {level: error}
storage:
  filesystem: {rootdirectory: $W/dist}
  delete: {enabled: true}
http: {addr: 127.0.0.1:5102}
YML
docker-registry serve "$W/dist.yml" >"$W/dist.log" 2>&1 &
DP=$!
trap 'kill $BP $DP 2>/dev/null; wait 2>/dev/null; rm -rf "$W"' EXIT
for p in 5101 5102; do for _ in $(seq 50); do curl -fs "http://127.0.0.1:$p/v2/" >/dev/null && break; sleep 0.2; done; done

echo "== machine limits"
openssl speed -evp sha256 -bytes 1048576 -seconds 2 2>/dev/null | awk '/^sha256/{printf "sha256 (openssl, 1 core): %.0f MB/s\n", $NF/1000}'
dd if=/dev/zero of="$W/ddtest" bs=1M count=1024 conv=fdatasync 2>&1 | awk '/copied/{print "disk write + fdatasync (dd 1 GiB): " $(NF-1) " " $NF}'
rm -f "$W/ddtest"
if command -v iperf3 >/dev/null; then
  iperf3 -s -1 -p 5199 >/dev/null 2>&1 & sleep 0.5
  iperf3 -c 127.0.0.1 -p 5199 -t 3 -l 1M -J 2>/dev/null | python3 -c 'import json,sys; print("loopback TCP (iperf3, 1 stream): %.0f MB/s" % (json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]/8e6))'
fi

head -c $((SIZE_MIB << 20)) /dev/urandom >"$W/blob"
D=sha256:$(sha256sum "$W/blob" | cut -d' ' -f1)
push() { # PORT REPO -> seconds
  local port=$1 repo=$2 loc t0 t1
  loc=$(curl -fsS -X POST -D - -o /dev/null "http://127.0.0.1:$port/v2/$repo/blobs/uploads/" | tr -d '\r' | awk -F': ' 'tolower($1)=="location"{print $2}')
  [[ $loc == http* ]] || loc="http://127.0.0.1:$port$loc"
  t0=$(date +%s.%N)
  loc=$(curl -fsS -X PATCH -H 'Content-Type: application/octet-stream' -T "$W/blob" -D - -o /dev/null "$loc" | tr -d '\r' | awk -F': ' 'tolower($1)=="location"{print $2}')
  [[ $loc == http* ]] || loc="http://127.0.0.1:$port$loc"
  [[ $loc == *\?* ]] && sep='&' || sep='?'
  curl -fsS -X PUT -o /dev/null "$loc${sep}digest=$D"
  t1=$(date +%s.%N)
  echo "$t1 - $t0" | bc -l
}
pull() { # PORT REPO -> seconds
  curl -fsS -o /dev/null -w '%{time_total}' "http://127.0.0.1:$1/v2/$2/blobs/$D"
}
declare -A PUSH PULL
for r in $(seq 1 "$ROUNDS"); do
  for reg in berth:5101 dist:5102; do
    name=${reg%%:*}; port=${reg##*:}
    PUSH[$name]+="$(push "$port" "bench/r$r") "
    sync
    PULL[$name]+="$(pull "$port" "bench/r$r") "
  done
done
med() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}'; }
echo "== ${SIZE_MIB} MiB blob, median of $ROUNDS rounds (MB/s = 10^6 bytes/s)"
declare -A R
for name in berth dist; do
  p=$(echo "${PUSH[$name]}" | med); g=$(echo "${PULL[$name]}" | med)
  R[$name.push]=$(echo "($SIZE_MIB*1048576/1000000)/$p" | bc -l); R[$name.pull]=$(echo "($SIZE_MIB*1048576/1000000)/$g" | bc -l)
  printf '%-13s push %7.0f MB/s   pull %7.0f MB/s\n' "$name" "${R[$name.push]}" "${R[$name.pull]}"
done
printf 'ratio Berth/Distribution: push %.2fx, pull %.2fx\n' "$(echo "${R[berth.push]}/${R[dist.push]}" | bc -l)" "$(echo "${R[berth.pull]}/${R[dist.pull]}" | bc -l)"
printf 'Berth peak RSS: %s MiB; Distribution peak RSS: %s MiB\n' "$(awk '/VmHWM/{print int($2/1024)}' /proc/$BP/status)" "$(awk '/VmHWM/{print int($2/1024)}' /proc/$DP/status)"
