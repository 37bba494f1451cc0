#!/usr/bin/env bash
# Garbage collection side by side: Berth and CNCF Distribution 2.8.2 (Debian's docker-registry)
# each hold LIVE blobs referenced by manifests (1,000 layers per image) and GARBAGE blobs that no
# manifest references; then each collects. Berth collects online (`berth gc`, grace 0; a mark
# pass, then the sweep), Distribution offline (`docker-registry garbage-collect`, which must not
# run beside a serving registry).
#   bench/gc.sh                  100,000 live + 20,000 garbage blobs
#   LIVE=10000 GARBAGE=2000 bench/gc.sh
#   STORAGE=s3 LIVE=10000 GARBAGE=5000 bench/gc.sh   both on an S3 server (moto by default)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-/tmp/berth-gc-bench}; rm -rf "$OUT"; mkdir -p "$OUT"
LIVE=${LIVE:-100000}
GARBAGE=${GARBAGE:-20000}
command -v docker-registry >/dev/null || { echo "missing docker-registry: apt-get install docker-registry"; exit 1; }
cargo build --release -q --workspace --manifest-path "$ROOT/Cargo.toml"
BIN=$ROOT/target/release

source "$ROOT/bench/lib.sh"
export BERTH_GC_INTERVAL=off   # only the timed run collects
start_pair 5211 5212
BASIC="Basic $(printf 'AWS:%s' "$BERTH_PW" | base64 -w0)"

fill() { # URL AUTH
  python3 - "$1" "$2" "$LIVE" "$GARBAGE" <<'PY'
import hashlib, http.client, json, sys, threading, time, urllib.parse
url, auth, live, garbage = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
host = urllib.parse.urlparse(url).netloc
H = {"Authorization": auth} if auth else {}
def sha(b): return "sha256:" + hashlib.sha256(b).hexdigest()
def put_blobs(name, items):
    c = http.client.HTTPConnection(host, timeout=120)
    for data in items:
        # POST then PUT with the bytes: Distribution 2.8 has no single-request upload.
        c.request("POST", f"/v2/{name}/blobs/uploads/", headers=H)
        r = c.getresponse(); r.read()
        assert r.status == 202, (r.status, name)
        loc = r.getheader("Location")
        loc = urllib.parse.urlparse(loc)
        path = loc.path + "?" + (loc.query + "&" if loc.query else "") + "digest=" + sha(data)
        c.request("PUT", path, body=data, headers={**H, "Content-Type": "application/octet-stream"})
        r = c.getresponse(); r.read()
        assert r.status == 201, (r.status, name)
def parallel(name, blobs, n=8):
    ts = [threading.Thread(target=put_blobs, args=(name, blobs[k::n])) for k in range(n)]
    [t.start() for t in ts]; [t.join() for t in ts]
t0 = time.time()
per = 1000
cfg = b'{"architecture":"amd64","os":"linux"}'
for img in range(live // per):
    layers = [f"live {img} {i}".encode() for i in range(per)]
    parallel("bench/live", layers + ([cfg] if img == 0 else []))
    m = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha(cfg), "size": len(cfg)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": sha(l), "size": len(l)} for l in layers]}).encode()
    c = http.client.HTTPConnection(host, timeout=120)
    c.request("PUT", f"/v2/bench/live/manifests/img{img}", body=m, headers={**H, "Content-Type": "application/vnd.oci.image.manifest.v1+json"})
    r = c.getresponse(); r.read(); assert r.status == 201, r.status
parallel("bench/junk", [f"garbage {i}".encode() for i in range(garbage)])
print(f"   filled in {time.time() - t0:.0f} s")
PY
}

echo "== $LIVE live blobs (in $((LIVE / 1000)) images) + $GARBAGE garbage blobs each; $(nproc) cores"
echo "-- filling Berth";        fill http://127.0.0.1:5211 "$BASIC"
echo "-- filling Distribution"; fill http://127.0.0.1:5212 ""
gc_berth() { "$BIN/berth" gc --grace 0s --data-dir "$OUT/berth-data" 2>/dev/null; }
# Berth: everything pushed is a candidate once; the first pass examines it all and condemns the
# garbage, the second deletes it. A later pass over a registry that only gained new garbage
# examines only that (see the third run).
t0=$(date +%s.%N); gc_berth >"$OUT/berth-gc1.txt"; t1=$(date +%s.%N); gc_berth >"$OUT/berth-gc2.txt"; t2=$(date +%s.%N)
kill $DP; wait $DP 2>/dev/null || true   # Distribution's collector needs the registry stopped
t3=$(date +%s.%N)
env -u AWS_CA_BUNDLE docker-registry garbage-collect "$OUT/dist.yml" >"$OUT/dist-gc.txt" 2>&1
t4=$(date +%s.%N)
bt=$(python3 -c "print($t2 - $t0)"); dt=$(python3 -c "print($t4 - $t3)")
python3 - "$bt" "$dt" "$GARBAGE" "$OUT" <<'PY'
import sys, re
bt, dt, garbage, out = float(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
b1, b2 = open(f"{out}/berth-gc1.txt").read().strip(), open(f"{out}/berth-gc2.txt").read().strip()
deleted = sum(int(x) for x in re.findall(r"deleted (\d+) blob", b1 + b2))
d = open(f"{out}/dist-gc.txt").read()
dist_deleted = len(re.findall(r"blob eligible for deletion|Deleting blob", d)) or d.count("eligible")
print(f"   Berth (online):        {bt:7.2f} s  deleted {deleted} blobs  ({deleted / bt:,.0f} blobs/s)")
print(f"     pass 1: {b1}\n     pass 2: {b2}")
print(f"   Distribution (offline): {dt:7.2f} s  ({dist_deleted} blobs reported eligible)")
print(f"   ratio Distribution/Berth time: {dt / bt:.2f}x")
PY
