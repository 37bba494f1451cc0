#!/usr/bin/env bash
# Pull-through cache side by side: Berth with a rule, and CNCF Distribution 2.8.2 (Debian's
# docker-registry) as a pull-through proxy (`proxy.remoteurl`), both in front of the same
# upstream (another Distribution holding 200 MiB layers of random bytes), with the machine's
# loopback TCP limit (iperf3) in the same run:
#  - a cold layer, one client: time to the first byte and to the last;
#  - a cold layer, four clients at once: time until all four have it, and how many times the
#    upstream was asked for it (its access log);
#  - the same layer again, now cached (one client).
#   bench/pullthrough.sh        (OUT=dir for the logs; MIB=layer size)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-/tmp/berth-pullthrough-bench}; rm -rf "$OUT"; mkdir -p "$OUT"
MIB=${MIB:-200}
cargo build --release -q -p berth --manifest-path "$ROOT/Cargo.toml"
BIN=$ROOT/target/release
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PU=$(free_port); PD=$(free_port); PB=$(free_port)
dist() { # NAME PORT [PROXY_URL]
  {
    printf 'version: 0.1\nlog: {level: info, accesslog: {disabled: false}}\n'
    printf 'storage:\n  filesystem: {rootdirectory: %s}\nhttp: {addr: 127.0.0.1:%s}\n' "$OUT/$1-data" "$2"
    [ -n "${3:-}" ] && printf 'proxy: {remoteurl: %s}\n' "$3"
  } >"$OUT/$1.yml"
  env -u AWS_CA_BUNDLE -u REGISTRY_AUTH_FILE docker-registry serve "$OUT/$1.yml" >"$OUT/$1.log" 2>&1 &
  echo $!
}
pids=()
pids+=("$(dist upstream "$PU")")
pids+=("$(dist proxy "$PD" "http://127.0.0.1:$PU")")
"$BIN/berth" serve --listen "127.0.0.1:$PB" --data-dir "$OUT/berth" --log warn >"$OUT/berth.log" 2>&1 &
pids+=("$!")
trap 'kill ${pids[*]} 2>/dev/null; wait 2>/dev/null' EXIT
for p in "$PU" "$PD" "$PB"; do
  for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$p/v2/" && break; sleep 0.1; done
done
for _ in $(seq 100); do [ -f "$OUT/berth/root-credentials" ] && break; sleep 0.1; done
# The aws CLI (v1) fetches parameters that look like http:// URLs unless told not to.
printf '[default]\ncli_follow_urlparam = false\n' >"$OUT/aws-config"
AWS_SHARED_CREDENTIALS_FILE=$OUT/berth/root-credentials AWS_CONFIG_FILE=$OUT/aws-config aws --region us-east-1 \
  --endpoint-url "http://127.0.0.1:$PB" ecr create-pull-through-cache-rule --ecr-repository-prefix hub \
  --upstream-registry-url "http://127.0.0.1:$PU" >/dev/null
PW=$("$BIN/berth" get-login-password --data-dir "$OUT/berth")

loopback=unmeasured
if command -v iperf3 >/dev/null; then
  iperf3 -s -1 -p 5398 >/dev/null 2>&1 & sleep 0.5
  loopback=$(iperf3 -c 127.0.0.1 -p 5398 -t 3 -J | python3 -c 'import json,sys; v=json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]; print("%.0f MB/s" % (v/8e6))')
fi

python3 - "$PU" "$PD" "$PB" "$PW" "$MIB" "$OUT" "$loopback" <<'PY' | tee "$OUT/result.txt"
import base64, hashlib, http.client, os, sys, threading, time
pu, pd, pb, pw, mib, out, loopback = sys.argv[1:8]
mib = int(mib)
basic = {"Authorization": "Basic " + base64.b64encode(f"AWS:{pw}".encode()).decode()}

def upload(data):
    """A blob into the upstream (POST, then PUT with the digest: what Distribution takes)."""
    d = "sha256:" + hashlib.sha256(data).hexdigest()
    c = http.client.HTTPConnection(f"127.0.0.1:{pu}", timeout=300)
    c.request("POST", "/v2/library/big/blobs/uploads/", body=b"")
    r = c.getresponse(); r.read(); loc = r.getheader("Location")
    loc = loc.split(f"127.0.0.1:{pu}", 1)[-1]
    c.request("PUT", f"{loc}{'&' if '?' in loc else '?'}digest={d}", body=data,
              headers={"Content-Type": "application/octet-stream"})
    r = c.getresponse(); r.read(); assert r.status == 201, r.status
    return d

def pull(port, path, headers, marks):
    """GETs a blob; appends (first byte, last byte) times."""
    t0 = time.perf_counter()
    c = http.client.HTTPConnection(f"127.0.0.1:{port}", timeout=600)
    c.request("GET", path, headers=headers)
    r = c.getresponse(); assert r.status == 200, (port, r.status, r.read()[:200])
    first = None; n = 0; h = hashlib.sha256()
    while True:
        b = r.read(1 << 20)
        if not b: break
        if first is None: first = time.perf_counter() - t0
        n += len(b); h.update(b)
    marks.append((first, time.perf_counter() - t0, n, "sha256:" + h.hexdigest()))

def asked(digest):
    return sum(1 for l in open(f"{out}/upstream.log", errors="replace") if f"GET /v2/library/big/blobs/{digest}" in l)

targets = {"Berth": (pb, "/v2/hub/library/big/blobs/", basic), "Distribution": (pd, "/v2/library/big/blobs/", {})}
res = {k: {} for k in targets}
for name, (port, prefix, hdr) in targets.items():
    d1 = upload(os.urandom(mib << 20)); d4 = upload(os.urandom(mib << 20))
    m = []; pull(port, prefix + d1, hdr, m)
    assert m[0][3] == d1 and m[0][2] == mib << 20
    res[name]["cold1"] = m[0]
    m = []; t0 = time.perf_counter()
    ts = [threading.Thread(target=pull, args=(port, prefix + d4, hdr, m)) for _ in range(4)]
    [t.start() for t in ts]; [t.join() for t in ts]
    assert len(m) == 4 and all(x[3] == d4 for x in m), m
    res[name]["cold4"] = (time.perf_counter() - t0, asked(d4))
    time.sleep(2)  # both finish storing in the background
    m = []; pull(port, prefix + d1, hdr, m)
    res[name]["warm"] = m[0]

size = mib << 20
print(f"pull-through cache, {mib} MiB layers of random bytes, upstream Distribution 2.8.2; loopback TCP (iperf3) {loopback}")
print(f"{'':42} {'Berth':>14} {'Distribution':>14} {'ratio':>7}")
def row(label, b, d, unit, better_low=True):
    ratio = d / b if better_low else b / d
    print(f"{label:42} {b:>12.2f}{unit:>2} {d:>12.2f}{unit:>2} {ratio:>6.2f}x")
B, D = res["Berth"], res["Distribution"]
row("cold, 1 client: first byte (s)", B["cold1"][0], D["cold1"][0], "s")
row("cold, 1 client: whole layer (s)", B["cold1"][1], D["cold1"][1], "s")
row("cold, 1 client (MB/s)", size / B["cold1"][1] / 1e6, size / D["cold1"][1] / 1e6, "", better_low=False)
row("cold, 4 clients at once: all done (s)", B["cold4"][0], D["cold4"][0], "s")
print(f"{'cold, 4 clients: upstream asked (times)':42} {B['cold4'][1]:>14} {D['cold4'][1]:>14}")
row("cached, 1 client (MB/s)", size / B["warm"][1] / 1e6, size / D["warm"][1] / 1e6, "", better_low=False)
PY
