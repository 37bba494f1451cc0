#!/usr/bin/env bash
# Replication lag and bytes between two Berth instances on loopback (region A replicating every
# repository to region B), with the machine's loopback TCP limit (iperf3) measured in the same run:
#  - a 100 MB image (one 100 MB layer of random bytes): from the manifest PUT at A to the tag
#    answering at B;
#  - 100 small images pushed one after another: from the last PUT to all 100 tags at B;
#  - a re-push sharing the 100 MB layer plus a new 1 MB one: bytes A sent (its
#    berth_replication_bytes_sent_total) against the image's size.
# Distribution 2.8.2 has no replication to compare with (it mirrors only as a pull-through proxy).
#   bench/replication.sh
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-/tmp/berth-replication-bench}; rm -rf "$OUT"; mkdir -p "$OUT"
cargo build --release -q -p berth --manifest-path "$ROOT/Cargo.toml"
BIN=$ROOT/target/release
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PA=$(free_port); PB=$(free_port)
BERTH_REGION=eu-west-1 "$BIN/berth" serve --listen "127.0.0.1:$PB" --data-dir "$OUT/b" --log warn >"$OUT/b.log" 2>&1 &
BPID=$!
trap 'kill $BPID ${APID:-} 2>/dev/null; wait 2>/dev/null' EXIT
for _ in $(seq 100); do [ -f "$OUT/b/root-credentials" ] && curl -s -o /dev/null "http://127.0.0.1:$PB/v2/" && break; sleep 0.1; done
cat >"$OUT/a.toml" <<TOML
[[peers]]
region = "eu-west-1"
url = "http://127.0.0.1:$PB"
credentials_file = "$OUT/b/root-credentials"
TOML
"$BIN/berth" serve --config "$OUT/a.toml" --listen "127.0.0.1:$PA" --data-dir "$OUT/a" --log warn >"$OUT/a.log" 2>&1 &
APID=$!
for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$PA/v2/" && break; sleep 0.1; done
AWS_SHARED_CREDENTIALS_FILE=$OUT/a/root-credentials aws --region us-east-1 --endpoint-url "http://127.0.0.1:$PA" \
  ecr put-replication-configuration --replication-configuration \
  '{"rules":[{"destinations":[{"region":"eu-west-1","registryId":"000000000000"}]}]}' >/dev/null
PW_A=$("$BIN/berth" get-login-password --data-dir "$OUT/a")
PW_B=$(BERTH_REGION=eu-west-1 "$BIN/berth" get-login-password --data-dir "$OUT/b")

loopback=unmeasured
if command -v iperf3 >/dev/null; then
  iperf3 -s -1 -p 5399 >/dev/null 2>&1 & sleep 0.5
  loopback=$(iperf3 -c 127.0.0.1 -p 5399 -t 3 -J | python3 -c 'import json,sys; v=json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]; print("%.0f MB/s" % (v/8e6))')
fi

python3 - "127.0.0.1:$PA" "$PW_A" "127.0.0.1:$PB" "$PW_B" "$loopback" <<'PY' | tee "$OUT/result.txt"
import base64, hashlib, http.client, json, os, sys, time
a, pwa, b, pwb, loopback = sys.argv[1:6]
def auth(pw): return {"Authorization": "Basic " + base64.b64encode(f"AWS:{pw}".encode()).decode()}
def call(host, pw, method, path, body=None, headers=None):
    c = http.client.HTTPConnection(host, timeout=300)
    h = dict(auth(pw)); h.update(headers or {})
    c.request(method, path, body=body, headers=h)
    r = c.getresponse(); data = r.read(); c.close()
    return r.status, data, dict((k.lower(), v) for k, v in r.getheaders())
def blob(repo, data):
    d = "sha256:" + hashlib.sha256(data).hexdigest()
    st, _, _ = call(a, pwa, "POST", f"/v2/{repo}/blobs/uploads/?digest={d}", data)
    assert st == 201, st
    return d, len(data)
def manifest(config, layers):
    return json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config[0], "size": config[1]},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": n} for d, n in layers]}).encode()
def put(repo, tag, m):
    st, _, _ = call(a, pwa, "PUT", f"/v2/{repo}/manifests/{tag}", m, {"Content-Type": "application/vnd.oci.image.manifest.v1+json"})
    assert st == 201, st
def at_b(repo, tag, digest, timeout=300):
    until = time.time() + timeout
    while time.time() < until:
        st, _, h = call(b, pwb, "HEAD", f"/v2/{repo}/manifests/{tag}", headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
        if st == 200 and h.get("docker-content-digest") == digest: return time.time()
        time.sleep(0.01)
    raise SystemExit(f"{repo}:{tag} never reached B")
def metric(host, name):
    _, body, _ = call(host, "x", "GET", "/metrics")
    for l in body.decode().splitlines():
        if l.startswith(name + " "): return int(float(l.split()[1]))
    return 0

big = os.urandom(100 * 1000 * 1000)
bl = blob("big", big)
cfg = blob("big", b'{"architecture":"amd64","os":"linux","n":1}')
m = manifest(cfg, [bl])
t0 = time.time(); put("big", "1", m)
t1 = at_b("big", "1", "sha256:" + hashlib.sha256(m).hexdigest())
lag_big = t1 - t0
print(f"100 MB image: manifest PUT at A to the tag at B: {lag_big:.2f} s ({100 / lag_big:.0f} MB/s; loopback TCP: {loopback})")

sent0 = metric(a, "berth_replication_bytes_sent_total")
small_new = os.urandom(1000 * 1000)
sl = blob("big", small_new)
cfg2 = blob("big", b'{"architecture":"amd64","os":"linux","n":2}')
m2 = manifest(cfg2, [bl, sl])
put("big", "2", m2)
at_b("big", "2", "sha256:" + hashlib.sha256(m2).hexdigest())
sent = metric(a, "berth_replication_bytes_sent_total") - sent0
size = bl[1] + sl[1] + cfg2[1]
print(f"re-push sharing the 100 MB layer (+1 MB new): {sent} bytes sent for an image of {size} bytes ({100 * sent / size:.2f}%)")

digests = []
t0 = time.time()
for i in range(100):
    l = blob("small", f"small layer {i}\n".encode() * 100)
    c = blob("small", json.dumps({"architecture": "amd64", "os": "linux", "i": i}).encode())
    mm = manifest(c, [l]); put("small", str(i), mm)
    digests.append(("sha256:" + hashlib.sha256(mm).hexdigest(), str(i)))
t_last = time.time()
done = max(at_b("small", t, d) for d, t in digests)
print(f"100 small images: pushed in {t_last - t0:.2f} s; all at B {done - t_last:.2f} s after the last PUT ({done - t0:.2f} s from the first)")
PY
