#!/usr/bin/env bash
# A full disk: the data directory on a 64 MiB tmpfs is filled by pushes. The push that does not
# fit gets 507 (not 500) and leaves no partial file; then, on the full disk, an upload cancel,
# DeleteRepository --force and garbage collection all work (the space reserve is released for
# them), the audit log keeps every event, and once space is back pushes work again.
source "$(dirname "$0")/lib.sh"
need python3 "apt-get install python3"
need aws "pip install awscli"

MNT=$E2E_WORK/diskfull-mnt
mkdir -p "$MNT"
mountpoint -q "$MNT" && umount "$MNT"
mount -t tmpfs -o size=64m tmpfs "$MNT" || fail "cannot mount a 64 MiB tmpfs at $MNT (the test needs root)"
cleanup() { stop_berth; umount "$MNT" 2>/dev/null || true; }
trap cleanup EXIT

port=$(free_port)
BERTH_DATA=$MNT/data
REG=127.0.0.1:$port
BERTH_GC_INTERVAL=off BERTH_ALLOW_ANONYMOUS=true "$BERTH" serve --listen "$REG" --data-dir "$BERTH_DATA" >"$E2E_WORK/diskfull.log" 2>&1 &
BERTH_PID=$!
wait_http "http://$REG/v2/"
export AWS_SHARED_CREDENTIALS_FILE=$BERTH_DATA/root-credentials AWS_DEFAULT_REGION=us-east-1
[ -f "$BERTH_DATA/space-reserve" ] || fail "no space reserve was taken"

step "filling the disk with 8 MiB layers"
python3 - "http://$REG" >"$E2E_WORK/diskfull.fill" <<'PY'
import hashlib, json, os, sys, requests
base, s, out = sys.argv[1], requests.Session(), []
for i in range(20):
    data = os.urandom(8 << 20)
    d = "sha256:" + hashlib.sha256(data).hexdigest()
    r = s.post(f"{base}/v2/fill/blobs/uploads/")
    if r.status_code != 202:
        out.append({"step": "post", "status": r.status_code, "body": r.text}); break
    loc = r.headers["Location"]
    r = s.patch(base + loc, data=data, headers={"Content-Type": "application/octet-stream"})
    if r.status_code != 202:
        out.append({"step": "patch", "status": r.status_code, "body": r.text, "upload": loc}); break
    r = s.put(base + r.headers["Location"] + f"?digest={d}")
    out.append({"step": "put", "status": r.status_code})
    if r.status_code != 201:
        break
print(json.dumps(out))
PY
python3 - "$E2E_WORK/diskfull.fill" <<'PY' || exit 1
import json, sys
out = json.load(open(sys.argv[1]))
ok = [o for o in out if o.get("status") == 201]
last = out[-1]
assert len(ok) >= 3, f"only {len(ok)} layers fit before the first failure: {out}"
assert last["status"] == 507, f"the push that did not fit got {last['status']}, not 507: {last}"
body = json.loads(last["body"])
assert body["errors"][0]["code"] == "DENIED" and "storage is full" in body["errors"][0]["message"], body
print(f"{len(ok)} layers stored, then 507: {body['errors'][0]['message'][:80]}...")
PY
grep -q "released the space reserve" "$E2E_WORK/diskfull.log" || fail "the reserve was not released on the full disk"
partial=$(find "$BERTH_DATA/uploads" -type f -size +0 | wc -l)
[ "$partial" = 0 ] || { ls -la "$BERTH_DATA/uploads"; fail "the failed chunk left a partial upload file"; }

step "on the full disk: cancel the upload, delete the repository, collect garbage"
loc=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[-1]["upload"])' "$E2E_WORK/diskfull.fill")
code=$(curl -s -o /dev/null -w '%{http_code}' -X DELETE "http://$REG$loc")
[ "$code" = 204 ] || fail "cancelling an upload on the full disk answered $code"
aws ecr delete-repository --repository-name fill --force --endpoint-url "http://$REG" >/dev/null \
  || fail "DeleteRepository --force failed on the full disk"
"$BERTH" gc --grace 0s --data-dir "$BERTH_DATA" >/dev/null || fail "gc (mark) failed on the full disk"
"$BERTH" gc --grace 0s --data-dir "$BERTH_DATA" | tee "$E2E_WORK/diskfull.gc" || fail "gc (sweep) failed"
grep -Eq "deleted [1-9][0-9]* blob" "$E2E_WORK/diskfull.gc" || fail "gc deleted nothing"
free_kb=$(df -k --output=avail "$MNT" | tail -1)
[ "$free_kb" -gt 40000 ] || fail "only ${free_kb} KiB free after gc"

step "space is back: pushes work again, and the audit log has every event"
sleep 3
d=$(printf 'after' | sha256sum | cut -d' ' -f1)
code=$(curl -s -o /dev/null -w '%{http_code}' -X POST --data-binary after "http://$REG/v2/again/blobs/uploads/?digest=sha256:$d")
[ "$code" = 201 ] || fail "a push after freeing space answered $code"
grep -q "took the space reserve again" "$E2E_WORK/diskfull.log" || fail "the reserve was not taken back"
"$BERTH" audit --data-dir "$BERTH_DATA" --event DeleteRepository >"$E2E_WORK/diskfull.audit" 2>&1
grep -q "DeleteRepository.*allow" "$E2E_WORK/diskfull.audit" || { cat "$E2E_WORK/diskfull.audit"; fail "the delete on the full disk is not in the audit log"; }
grep -q " 500 \|ServerException\|internal server error" "$E2E_WORK/diskfull.log" && fail "a 500 was answered (see $E2E_WORK/diskfull.log)"
echo "PASS diskfull"
