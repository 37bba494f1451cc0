#!/usr/bin/env bash
# Streaming: a large layer (default 5 GiB) is pushed (streamed PATCH, as docker does) and pulled
# back with the server's peak RSS (VmHWM) staying under a limit (default 100 MiB).
source "$(dirname "$0")/lib.sh"
SIZE_MIB=${BIGBLOB_MIB:-5120}
LIMIT_MIB=${BIGBLOB_RSS_LIMIT_MIB:-100}
start_berth bigblob
python3 - "$REG" "$SIZE_MIB" <<'PY'
import hashlib, http.client, os, sys, time
reg, mib = sys.argv[1], int(sys.argv[2])
block = os.urandom(1 << 20)
def chunks():
    for i in range(mib):
        yield i.to_bytes(8, "little") + block[8:]
h = hashlib.sha256()
for c in chunks(): h.update(c)
digest = "sha256:" + h.hexdigest()
host, port = reg.split(":")
c = http.client.HTTPConnection(host, int(port), timeout=600)
auth = {"Authorization": os.environ["BERTH_BASIC"]}
c.request("POST", "/v2/big/blobs/uploads/", headers=auth); r = c.getresponse(); r.read()
loc = r.getheader("Location")
t = time.time()
c.request("PATCH", loc, body=chunks(), headers={"Content-Type": "application/octet-stream", **auth}, encode_chunked=True)
r = c.getresponse(); r.read(); assert r.status == 202, r.status
loc = r.getheader("Location")
c.request("PUT", f"{loc}?digest={digest}", headers=auth); r = c.getresponse(); r.read()
assert r.status == 201, (r.status, r.getheader("Content-Type"))
push = time.time() - t
t = time.time()
c.request("GET", f"/v2/big/blobs/{digest}", headers=auth); r = c.getresponse()
g = hashlib.sha256(); n = 0
while True:
    b = r.read(1 << 20)
    if not b: break
    g.update(b); n += len(b)
pull = time.time() - t
assert n == mib << 20 and "sha256:" + g.hexdigest() == digest, "pulled content differs"
print(f"pushed {mib} MiB in {push:.1f}s ({mib/push:.0f} MiB/s), pulled in {pull:.1f}s ({mib/pull:.0f} MiB/s), client-side hashing included")
PY
hwm=$(awk '/VmHWM/{print int($2/1024)}' /proc/$BERTH_PID/status)
echo "server peak RSS: ${hwm} MiB (limit ${LIMIT_MIB} MiB)"
[ "$hwm" -lt "$LIMIT_MIB" ] || fail "server peak RSS ${hwm} MiB exceeds ${LIMIT_MIB} MiB"
echo "PASS bigblob"
