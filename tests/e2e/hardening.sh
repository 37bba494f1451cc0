#!/usr/bin/env bash
# Denial of service, as the attack on main found it: 40 clients sending 30 MiB bodies to POST /
# (unsigned, and signed with a wrong secret for a real key id) must not grow the server's memory;
# with `ulimit -n 256`, 300 connections that send half a header must not make it unreachable.
source "$(dirname "$0")/lib.sh"
need python3 "apt-get install python3"

rss_mb() { echo $(( $(awk '/^VmRSS/ {print $2}' "/proc/$1/status") / 1024 )); }

step "40 connections x 30 MiB to POST /: bodies are not read before a plausible signature"
start_berth hardening
base=$(rss_mb "$BERTH_PID")
akid=$(sed -n 's/^aws_access_key_id = //p' "$BERTH_DATA/root-credentials")
python3 - "$REG" "$BERTH_PID" "$akid" <<'PY' >"$E2E_WORK/hardening.rss" || fail "$(cat "$E2E_WORK/hardening.rss")"
import socket, sys, threading, time
reg, pid, akid = sys.argv[1], int(sys.argv[2]), sys.argv[3]
host, port = reg.split(":")
SIZE = 30 << 20
chunk = b"x" * (1 << 20)
peak = [0]
def rss():
    for l in open(f"/proc/{pid}/status"):
        if l.startswith("VmRSS"):
            return int(l.split()[1]) // 1024
stop = False
def watch():
    while not stop:
        peak[0] = max(peak[0], rss()); time.sleep(0.05)
def send(signed):
    s = socket.create_connection((host, int(port)))
    date = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    auth = (f"Authorization: AWS4-HMAC-SHA256 Credential={akid}/{date[:8]}/us-east-1/ecr/aws4_request, "
            f"SignedHeaders=content-type;host;x-amz-date;x-amz-target, Signature={'0'*64}\r\nX-Amz-Date: {date}\r\n") if signed else ""
    head = (f"POST / HTTP/1.1\r\nHost: {reg}\r\nContent-Type: application/x-amz-json-1.1\r\n"
            f"X-Amz-Target: AmazonEC2ContainerRegistry_V20150921.UploadLayerPart\r\n{auth}Content-Length: {SIZE}\r\n\r\n")
    try:
        s.sendall(head.encode())
        for _ in range(SIZE // len(chunk)):
            s.sendall(chunk)
        s.recv(4096)
    except OSError:
        pass  # the server may answer and close before the body is sent: what we want
    s.close()
w = threading.Thread(target=watch); w.start()
for signed in (False, True):
    ts = [threading.Thread(target=send, args=(signed,)) for _ in range(40)]
    [t.start() for t in ts]; [t.join() for t in ts]
stop = True; w.join()
print(f"peak RSS {peak[0]} MB")
assert peak[0] < 420, f"peak RSS {peak[0]} MB with 80 x 30 MiB bodies"
PY
cat "$E2E_WORK/hardening.rss"
code=$(rcurl -s -o /dev/null -w '%{http_code}' "http://$REG/v2/")
[ "$code" = 200 ] || fail "the server stopped answering ($code)"
echo "baseline RSS ${base} MB"
stop_berth

step "ulimit -n 256 and 300 half-sent headers: the server stays reachable"
port=$(free_port)
REG=127.0.0.1:$port
BERTH_DATA=$E2E_WORK/hardening-fd-data; rm -rf "$BERTH_DATA"
( ulimit -n 256; exec "$BERTH" serve --listen "$REG" --data-dir "$BERTH_DATA" --allow-anonymous ) \
  >"$E2E_WORK/hardening-fd.log" 2>&1 &
BERTH_PID=$!
wait_http "http://$REG/v2/"
python3 - "$REG" <<'PY' || exit 1
import socket, sys, time, urllib.request
reg = sys.argv[1]
host, port = reg.split(":")
held = []
for i in range(300):
    try:
        s = socket.create_connection((host, int(port)), timeout=5)
        s.sendall(f"GET /v2/ HTTP/1.1\r\nHost: {reg}\r\nX-Half: ".encode())
        held.append(s)
    except OSError:
        break
start = time.time()
while True:
    try:
        r = urllib.request.urlopen(f"http://{reg}/v2/", timeout=3)
        assert r.status == 200
        break
    except Exception as e:
        if time.time() - start > 25:
            sys.exit(f"unreachable for {time.time() - start:.0f} s with {len(held)} half-sent headers: {e}")
        time.sleep(0.5)
print(f"{len(held)} half-sent headers held; a real request was answered after {time.time() - start:.1f} s")
PY
grep -q "connection limit reached" "$E2E_WORK/hardening-fd.log" || fail "reaching the connection limit was not logged"
echo "PASS hardening"
